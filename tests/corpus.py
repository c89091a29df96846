"""A bad-input corpus, built on the fly: damaged and unusual image files, awkward captions.

Each entry says what dualex must do with it: ``"ok"`` (explain it) or an error whose message
contains the given words.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

OK = "ok"


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def scene(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A light background with a red disc: a plain, valid picture."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.full((h, w, 3), 232, np.uint8)
    disc = (xx - w * 0.4) ** 2 + (yy - h * 0.5) ** 2 < (min(w, h) * 0.3) ** 2
    arr[disc] = (210, 30, 30)
    return Image.fromarray(arr)


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width × height`` pixels but carries one tiny data chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    """A 40×20 JPEG, left half red and right half blue, tagged orientation 6 (rotate 90° CW):
    shown upright it is 20×40 with red on top."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (220, 20, 20)
    arr[:, 20:] = (20, 20, 220)
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def animated_gif() -> bytes:
    """Two frames: red, then blue."""
    frames = [Image.new("RGB", (32, 32), c) for c in ((220, 20, 20), (20, 20, 220))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return buf.getvalue()


def palette_alpha_png() -> bytes:
    """A palette image whose colour 0 is transparent: left half transparent, right half green."""
    im = Image.new("P", (32, 32), 0)
    im.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    im.paste(1, (16, 0, 32, 32))
    im.info["transparency"] = 0
    return _png_bytes(im)


def gray16_png() -> bytes:
    """A 16-bit greyscale PNG: left half 0, right half 65535 (white, not clipped)."""
    arr = np.zeros((24, 32), np.uint16)
    arr[:, 16:] = 65535
    return _png_bytes(Image.fromarray(arr))


def build_images(folder: Path) -> dict[str, tuple[Path, str | tuple[str, ...]]]:
    """Write the image corpus to ``folder``; name → (path, expected outcome)."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = io.BytesIO()
    scene().save(jpeg, format="JPEG", quality=90)
    cmyk = io.BytesIO()
    scene().convert("CMYK").save(cmyk, format="JPEG")
    files: dict[str, tuple[bytes, str | tuple[str, ...]]] = {
        "good.png": (_png_bytes(scene()), OK),
        "truncated.jpg": (
            jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
            ("truncated.jpg", "damaged or truncated"),
        ),
        "truncated.png": (_png_bytes(scene())[:120], ("truncated.png", "damaged or truncated")),
        "cmyk.jpg": (cmyk.getvalue(), OK),
        "gray16.png": (gray16_png(), OK),
        "palette_alpha.png": (palette_alpha_png(), OK),
        "one_pixel.png": (_png_bytes(Image.new("RGB", (1, 1), (200, 10, 10))), OK),
        "bomb.png": (
            bomb_png(50_000, 50_000),
            ("bomb.png", "2,500,000,000 pixels", "--max-pixels"),
        ),
        "exif_rotated.jpg": (exif_rotated_jpeg(), OK),
        "animated.gif": (animated_gif(), OK),
        "wide_4000x30.png": (_png_bytes(scene((4000, 30))), OK),
        "text.png": (b"this is not an image", ("text.png", "as an image")),
        "empty.png": (b"", ("empty.png", "as an image")),
    }
    out = {}
    for name, (data, expect) in files.items():
        (folder / name).write_bytes(data)
        out[name] = (folder / name, expect)
    return out


CAPTIONS: dict[str, tuple[str, str | tuple[str, ...]]] = {
    "plain": ("a red circle", OK),
    "empty": ("", ("caption is empty",)),
    "whitespace": ("  \t\n ", ("caption is empty",)),
    "emoji": ("🐶 🐱 🦊", ("knows none of the words", "'🐶', '🐱', '🦊'")),  # nothing to explain
    "mostly emoji": ("a red 🐶 🐱 🦊", OK),  # explained, with a warning and greyed words
    "long": ("a red circle " * 800, OK),  # 10,400 characters: truncated with a warning
    "control": ("a red\x1b[31m circle\x07 \x00here", OK),
    "markup": ("<b>a red</b> <script>alert(1)</script> circle &amp; [bold]x[/bold]", OK),
}
"""name → (caption, expected outcome) with a valid image."""
