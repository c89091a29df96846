"""One self-contained HTML report for many caption–image pairs (inline JS/CSS, no network).

For each pair the report embeds the original image (downscaled to ``max_side``), the caption's
tokens and offsets, the processor geometry, the completeness numbers and the interaction matrix
``[S_text, S_image]`` quantised to int16 with one scale per pair (relative precision 3e-5 of the
largest entry) and base64-encoded. The page's script recomputes, in the browser, exactly what
:meth:`Explanation.image_map` and :meth:`Explanation.text_scores` compute in Python.

All user-provided text (captions, names, model names) is escaped: it is embedded in a JSON data
block with ``<``, ``>`` and ``&`` written as ``\\u`` escapes, and the script only ever inserts it as
text (``textContent``). A Content-Security-Policy allows the page's own script (by hash) and
``data:`` images, nothing else — no network, no inline event handlers.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
import string
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dualex.errors import InvalidInputError
from dualex.io import atomic_write
from dualex.towers.positions import TextPositions
from dualex.viz.colors import STOPS, stops_rgb
from dualex.viz.heatmap import crop_note, image_positions
from dualex.viz.summary import (
    method_lines,
    modality_names,
    strongest_interactions,
    unknown_note,
)
from dualex.viz.tokens import pieces

MAX_SIDE = 512
"""Longest side, in pixels, of the images embedded in a report."""


def _asset(name: str) -> str:
    return resources.files("dualex.viz").joinpath("assets", name).read_text(encoding="utf-8")


def _quantise(m: np.ndarray) -> dict[str, Any]:
    """int16 quantisation with one scale: ``value ≈ q · scale``, base64 of little-endian q."""
    m = np.nan_to_num(np.asarray(m, dtype=np.float64))
    peak = float(np.abs(m).max()) if m.size else 0.0
    scale = peak / 32767.0 if peak > 0 else 1.0
    q = np.rint(m / scale).astype("<i2")
    return {
        "shape": list(m.shape),
        "scale": scale,
        "data": base64.b64encode(q.tobytes()).decode("ascii"),
    }


def _encode_image(image: Image.Image | None, max_side: int) -> str | None:
    """A ``data:`` URI of the image (PNG or JPEG, whichever is smaller), downscaled."""
    if image is None:
        return None
    im = image.convert("RGB")
    if max(im.size) > max_side:
        k = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * k)), max(1, round(im.height * k))), Image.LANCZOS)
    best: tuple[int, str, bytes] | None = None
    for fmt, opts in (("PNG", {"optimize": True}), ("JPEG", {"quality": 85})):
        buf = io.BytesIO()
        im.save(buf, format=fmt, **opts)
        data = buf.getvalue()
        if best is None or len(data) < best[0]:
            best = (len(data), fmt.lower(), data)
    assert best is not None
    return f"data:image/{best[1]};base64," + base64.b64encode(best[2]).decode("ascii")


RANDOM_WEIGHTS_NOTE = "random weights: not a trained model"
"""The banner (report) and title note (figures) of explanations made with random weights."""

BoxList = Sequence[tuple[str, tuple[float, float, float, float]]]
"""Ground-truth boxes of one pair: ``(label, (x0, y0, x1, y1))`` in original image pixels."""


def _reference_names(ex: Any) -> list[str]:
    """Names of the three reference terms, ``e_a·ē_b``, ``ē_a·e_b``, ``−ē_a·ē_b``."""
    na, nb = ({"token": "text", "patch": "image"}.get(n, n[-1]) for n in modality_names(ex))
    return [f"e_{na}·ē_{nb}", f"ē_{na}·e_{nb}", f"−ē_{na}·ē_{nb}"]


def _common(ex: Any, name: str | None, fallback: str) -> dict[str, Any]:
    return {
        "name": name or fallback,
        "completeness": ex.completeness.to_json(),
        "reference_names": _reference_names(ex),
        "layers": list(ex.layers),
        "model": ex.model,
        "weights": str(getattr(ex, "weights", "unknown")),
        "dropped": [int(getattr(pos, "dropped", 0)) for pos in (ex.a, ex.b)],
        "columns": list(modality_names(ex)),
        "top": [[a, b, v] for a, b, v in strongest_interactions(ex, 8)],
        "unknown_note": unknown_note(ex),
        "method": str(getattr(ex, "method", "dualex")),
        "method_rows": [[k, v] for k, v in method_lines(ex)],
    }


def _text_record(text: TextPositions) -> dict[str, Any]:
    return {
        "caption": text.text,
        "pieces": [[s, i] for s, i in pieces(text, include_special=True)],
        "special": list(text.special),
        "unknown": list(text.unknown),
    }


def pair_data(
    ex: Any, name: str | None = None, max_side: int = MAX_SIDE, boxes: BoxList | None = None
) -> dict[str, Any]:
    """The JSON-ready record of one explanation that the report's script reads.

    Caption–image pairs (``kind == "image"``) carry the image, the patch grid and its geometry;
    text–text pairs (``kind == "text"``) carry both texts' tokens, side a as rows.

    Args:
        ex: The explanation.
        name: Display name (default: the caption, or both texts).
        max_side: Longest side of the embedded image.
        boxes: Ground-truth boxes to draw on the image (caption–image pairs only).

    Raises:
        InvalidInputError: if the explanation has two image sides, or boxes come with a
            text–text pair.
    """
    if isinstance(ex.a, TextPositions) and isinstance(ex.b, TextPositions):
        if boxes:
            raise InvalidInputError("ground-truth boxes need an image side; this pair is text–text")
        rec = _common(ex, name, f"{ex.a.text} ↔ {ex.b.text}")
        rec.update(kind="text", **_text_record(ex.a))
        b = _text_record(ex.b)
        rec.update(
            caption_b=b["caption"],
            pieces_b=b["pieces"],
            special_b=b["special"],
            unknown_b=b["unknown"],
        )
        rec["matrix"] = _quantise(ex.matrix.detach().cpu().double().numpy())
        return rec
    pos = image_positions(ex)
    m, text, _ = ex.text_image()
    geo = pos.geometry
    rec = _common(ex, name, text.text)
    rec.update(kind="image", **_text_record(text))
    rec.update(
        grid=list(pos.grid),
        prefix=pos.prefix,
        geometry={
            "original_size": list(geo.original_size),
            "input_size": list(geo.input_size),
            "scale": list(geo.scale),
            "offset": list(geo.offset),
        },
        matrix=_quantise(m.detach().cpu().double().numpy()),
        image=_encode_image(ex.image, max_side),
        crop_note=crop_note(pos),
        boxes=[[str(label), [float(v) for v in box]] for label, box in (boxes or [])],
    )
    return rec


def _json_for_html(obj: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">`` (no ``</script>``)."""
    s = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def report_html(
    explanations: Sequence[Any],
    names: Sequence[str] | None = None,
    *,
    title: str = "dualex report",
    max_side: int = MAX_SIDE,
    progress: Any = None,
    boxes: Sequence[BoxList | None] | None = None,
    addons: Sequence[Any] = (),
) -> str:
    """The report as one HTML string.

    Args:
        explanations: :class:`~dualex.Explanation` objects of caption–image or text–text pairs.
        names: A display name per pair (e.g. the file it came from); default the caption.
        title: The page title.
        max_side: Longest side of the embedded images in pixels.
        progress: Optional callable called once per pair added (for progress bars).
        boxes: Per pair, ground-truth boxes ``[(label, (x0, y0, x1, y1)), ...]`` in original
            image pixels to outline on the image (or ``None``).
        addons: Extra panels, each with ``html`` (a fragment placed below the pair),
            ``script`` (its JavaScript, allowed by hash) and ``data`` (JSON, in a
            ``<script id="{addon.id}" type="application/json">`` block); e.g.
            :func:`dualex.viz.concepts.concept_panel`.

    Returns:
        A complete HTML document with no external references.

    Raises:
        InvalidInputError: on an empty list, mismatched names or boxes, or a pair of two images.
    """
    explanations = list(explanations)
    if not explanations:
        raise InvalidInputError("a report needs at least one explanation")
    if names is not None and len(names) != len(explanations):
        raise InvalidInputError(
            f"{len(names)} names for {len(explanations)} explanations; pass one name per pair"
        )
    if boxes is not None and len(boxes) != len(explanations):
        raise InvalidInputError(
            f"{len(boxes)} box lists for {len(explanations)} explanations; pass one per pair"
        )
    pairs = []
    for k, ex in enumerate(explanations):
        try:
            name = names[k] if names is not None else None
            pairs.append(pair_data(ex, name, max_side, boxes[k] if boxes is not None else None))
        except InvalidInputError as err:
            label = names[k] if names is not None else f"#{k + 1}"
            raise InvalidInputError(f"pair {label}: {err}") from err
        if progress is not None:
            progress()
    data = _json_for_html(
        {"title": title, "stops": stops_rgb(), "pairs": pairs, "random_note": RANDOM_WEIGHTS_NOTE}
    )
    script = _asset("report.js")
    scripts = [script, *(a.script for a in addons)]
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode("utf-8")).digest()).decode() + "'"
        for s in scripts
    )
    csp = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src {hashes}; base-uri 'none'; form-action 'none'"
    )
    css = (
        _asset("report.css")
        .replace("/*STOPS*/", ", ".join(STOPS))
        .replace("/*POSITIVE_STOPS*/", ", ".join(STOPS[len(STOPS) // 2 :]))
    )
    return _TEMPLATE.substitute(  # one pass: inserted text is never re-scanned
        csp=html.escape(csp, quote=True),
        title=html.escape(title),
        css=css,
        data=data,
        script=script,
        addons="".join(a.html for a in addons),
        addon_scripts="".join(
            f'<script id="{a.id}" type="application/json">{_json_for_html(a.data)}</script>\n'
            f"<script>{a.script}</script>\n"
            for a in addons
        ),
    )


def write_report(
    explanations: Sequence[Any],
    path: str | os.PathLike,
    names: Sequence[str] | None = None,
    *,
    title: str = "dualex report",
    max_side: int = MAX_SIDE,
    progress: Any = None,
    boxes: Sequence[BoxList | None] | None = None,
    addons: Sequence[Any] = (),
) -> Path:
    """Write :func:`report_html` to ``path`` atomically and return the path."""
    text = report_html(
        explanations,
        names,
        title=title,
        max_side=max_side,
        progress=progress,
        boxes=boxes,
        addons=addons,
    )
    return atomic_write(path, text)


_TEMPLATE = string.Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<style>
${css}
</style>
</head>
<body>
<header>
  <h1 id="title">${title}</h1>
  <div class="nav">
    <button type="button" id="prev" title="previous pair (←)">◀</button>
    <span id="counter"></span>
    <button type="button" id="next" title="next pair (→)">▶</button>
  </div>
</header>
<div id="weights-banner" class="banner" role="alert" hidden></div>
<div id="layout">
  <nav id="pairs" aria-label="pairs"><div id="pair-list"></div></nav>
  <main>
    <h2 id="pair-name"></h2>
    <p class="help" id="help-image">Click a token, shift-click or drag across tokens to select a
    span: the image shows which patches it matches. Drag a rectangle on the image: the tokens show
    what the covered patches match. Red is positive, blue negative.</p>
    <p class="help note" id="crop-note" hidden></p>
    <p class="help" id="help-text" hidden>Click, shift-click or drag across tokens of either
    text to select a span: the other text shows what it matches. Red is positive, blue
    negative.</p>
    <div class="controls">
      <label><input type="checkbox" id="positive-only"> positive only</label>
      <label><input type="checkbox" id="show-special"> show special tokens</label>
      <label class="image-only">opacity <input type="range" id="opacity" min="0" max="100"
        value="70" aria-label="heatmap opacity"> <span id="opacity-value">70 %</span></label>
      <label class="image-only"><input type="checkbox" id="greyscale"> greyscale image</label>
      <label class="image-only" id="boxes-control"><input type="checkbox" id="show-boxes"
        checked> ground-truth boxes</label>
      <label><input type="checkbox" id="matrix-view"> matrix view</label>
      <button type="button" id="whole-caption">whole caption</button>
      <button type="button" id="clear-box">whole image</button>
    </div>
    <p class="help note" id="unknown-note" hidden></p>
    <div class="panels">
      <section class="image-panel">
        <div id="stage"><canvas id="heatmap"></canvas><div id="box" hidden></div></div>
        <h3 class="side-label" id="label-b" hidden>text B</h3>
        <div id="tokens-b" class="tokens tokens-b" hidden></div>
        <div class="legend"><span id="span-label"></span>
          <div class="colorbar" id="image-colorbar"><i></i><span class="lo"></span>
          <span class="mid"></span><span class="hi"></span></div></div>
      </section>
      <section class="text-panel">
        <h3 class="side-label" id="label-a" hidden>text A</h3>
        <div id="tokens" class="tokens"></div>
        <div class="legend"><span id="box-label"></span>
          <div class="colorbar" id="token-colorbar"><i></i><span class="lo"></span>
          <span class="mid"></span><span class="hi"></span></div></div>
        <p id="message" class="message"></p>
        <table id="strongest" class="completeness"><caption>strongest interactions (by
          |value|)</caption><thead><tr></tr></thead><tbody></tbody></table>
        <table id="completeness" class="completeness"><caption>completeness</caption>
          <tbody></tbody></table>
      </section>
    </div>
    <section id="matrix-panel" hidden>
      <h3>interaction matrix</h3>
      <div class="matrix-wrap"><canvas id="matrix"></canvas></div>
      <p id="matrix-info" class="legend"></p>
    </section>
${addons}
  </main>
</div>
<script id="dualex-data" type="application/json">${data}</script>
<script>${script}</script>
${addon_scripts}</body>
</html>
""")
