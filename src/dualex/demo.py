"""``dualex demo``: explain a few caption–image pairs offline and report how exact they are."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

import dualex
from dualex.models import builtin


def _scene(size: int = 96) -> tuple[Image.Image, list[tuple[str, tuple[int, int, int, int]]]]:
    """A small non-square picture with two known objects and their boxes."""
    im = Image.new("RGB", (size + 32, size), (235, 235, 230))
    d = ImageDraw.Draw(im)
    d.ellipse((10, 20, 50, 60), fill=(210, 30, 30))
    d.rectangle((70, 40, 110, 80), fill=(30, 60, 200))
    return im, [("red circle", (10, 20, 51, 61)), ("blue square", (70, 40, 111, 81))]


def run_demo(out: Path, console: Console | None = None) -> list[dualex.Explanation]:
    """Run the demo; returns the explanations it wrote to ``out``."""
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    if builtin.available():
        model = dualex.load("builtin")
    else:
        from dualex.models.factory import random_clip

        console.print(
            "[yellow]The built-in model is not available in this installation: explaining with a "
            "randomly initialised small CLIP. The numbers below show exactness, not grounding.[/]"
        )
        m, tok, proc = random_clip(seed=0, image_size=64, patch_size=8)
        model = dualex.wrap(m, tokenizer=tok, image_processor=proc, name="random-init CLIP")
    image, objects = _scene()
    caption = "a " + " and a ".join(name for name, _ in objects)
    ex = dualex.explain(model, caption, image)
    path = ex.save(out / "demo.safetensors")
    table = Table(title=f"{model.name}: {caption!r}")
    for col in ("mention", "box", "peak in box", "completeness error"):
        table.add_column(col)
    for name, box in objects:
        heat = ex.image_map(name)
        idx = int(heat.flatten().argmax())
        boxes = ex.b.patch_boxes() if hasattr(ex.b, "patch_boxes") else []
        x0, y0, x1, y1 = boxes[idx]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        inside = box[0] <= cx < box[2] and box[1] <= cy < box[3]
        table.add_row(
            name, str(box), "yes" if inside else "no", f"{ex.completeness.relative_error:.2e}"
        )
    console.print(table)
    console.print(f"score {ex.score:.4f}; steps {ex.completeness.steps}; wrote {path}")
    _write_visuals(ex, caption, objects, out, console)
    return [ex]


def _write_visuals(
    ex: dualex.Explanation,
    caption: str,
    objects: list[tuple[str, tuple[int, int, int, int]]],
    out: Path,
    console: Console,
) -> None:
    """The interactive HTML report and a Figure-1 style PNG next to the explanation."""
    from dualex.errors import DualexError
    from dualex.viz import figure1, save_figure, write_report

    report = write_report([ex], out / "report.html", names=["demo scene"], title="dualex demo")
    console.print(f"wrote {report} (open it in a browser: click tokens, drag boxes)")
    try:
        fig = figure1(
            ex, spans=[name for name, _ in objects] + [caption], boxes=[b for _, b in objects]
        )
        console.print(f"wrote {save_figure(fig, out / 'figure1.png')}")
    except DualexError as err:  # matplotlib missing
        console.print(f"[yellow]no figure: {err}[/]")
