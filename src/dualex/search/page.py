"""The search page: ranked hits side by side, click a query word to see where it matched in every
hit, "why A above B" as the difference of two hits' maps and their per-word score differences.

One page serves both uses: ``dualex search ... --out report.html`` embeds the hits' data (a
self-contained file, no network), and ``dualex serve`` serves the same page with a search box and
an image upload that ask the server (``POST /api/search``) for the same data.

Each hit's record holds what the page's script needs, computed here from the hit's explanation:
the query words' rows over the hit's patches (int16-quantised, one scale per hit, as the report),
each word's total (its row sum: its share of the score), the query image part's map over the
hit's patches for a fused or image query, and the reference terms; the script never invents a
number, it only sums rows of these.
"""

from __future__ import annotations

import base64
import hashlib
import html
import string
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from dualex.data.types import is_generated
from dualex.explanation import Explanation
from dualex.search.index import FusedExplanation, Hit
from dualex.towers.positions import ImagePositions, TextPositions
from dualex.viz.colors import stops_rgb
from dualex.viz.report import RANDOM_WEIGHTS_NOTE, _encode_image, _json_for_html, _quantise
from dualex.viz.tokens import token_labels

MAX_SIDE = 320
"""Longest side, in pixels, of the images embedded in a search page."""


def _asset(name: str) -> str:
    return resources.files("dualex.search").joinpath("assets", name).read_text(encoding="utf-8")


def _parts(hit: Hit) -> list[tuple[Explanation, float, str]]:
    """``(explanation, weight, query side)`` of each query part of a hit."""
    ex = hit.explanation
    if isinstance(ex, FusedExplanation):
        return list(zip(ex.parts, ex.weights, ex.query_sides, strict=True))
    return [(ex, 1.0, hit.query_side)]


def _window(pos: ImagePositions) -> list[float]:
    """The model-input window in original pixels (where the patch grid lies)."""
    w, h = pos.geometry.input_size
    return [float(v) for v in pos.geometry.to_original((0, 0, w, h))]


def _image_record(pos: ImagePositions, image: Any) -> dict[str, Any]:
    return {
        "image": _encode_image(image, MAX_SIDE) if image is not None else None,
        "size": list(pos.geometry.original_size),
        "window": _window(pos),
        "grid": list(pos.grid),
    }


def hit_record(hit: Hit, query_text: TextPositions | None) -> dict[str, Any]:
    """The JSON record of one hit (see the module docstring)."""
    ex = hit.explanation
    c = ex.completeness
    rec: dict[str, Any] = {
        "rank": hit.rank,
        "id": hit.id,
        "score": hit.score,
        "kind": hit.kind,
        "name": Path(hit.path).name if hit.path and not is_generated(hit.path) else "",
        "caption": hit.caption,
        "refs": float(sum(c.reference_terms)),
        "abs_error": c.absolute_error,
        "words": hit.words(),
        "rows": None,
        "row_totals": None,
        "image_part": None,
        "image_total": 0.0,
    }
    for part, w, side in _parts(hit):
        m = part.matrix.double() * w
        qpos = part.a if side == "a" else part.b
        gpos = part.b if side == "a" else part.a
        mq = m if side == "a" else m.T  # [S_query, S_hit]
        if hit.kind == "image" and isinstance(gpos, ImagePositions):
            if not rec.get("image"):
                rec.update(_image_record(gpos, part.raw_b if side == "a" else part.raw_a))
            cols = mq[:, gpos.patch_slice]
            if isinstance(qpos, TextPositions):
                rec["rows"] = _quantise(cols.numpy())
                rec["row_totals"] = mq.sum(1).tolist()
            else:
                rec["image_part"] = _quantise(cols.sum(0).numpy()[None, :])
                rec["image_total"] = float(mq.sum())
        elif hit.kind == "text" and isinstance(qpos, ImagePositions):
            # image query -> caption: the caption's tokens and their map over the query image
            cap = gpos
            assert isinstance(cap, TextPositions)
            mt = mq.T  # [S_caption, S_query_image]
            content = [i for i, s in enumerate(cap.special) if not s] or list(range(len(cap)))
            rec["caption_tokens"] = token_labels(cap)
            rec["caption_special"] = list(cap.special)
            rec["caption_values"] = mt.sum(1).tolist()
            rec["qmap"] = _quantise(mt[content][:, qpos.patch_slice].sum(0).numpy()[None, :])
            rec["image_total"] += float(mq.sum())
    return rec


def page_data(
    hits: Sequence[Hit],
    query: str | None,
    image: Any = None,
    *,
    model: str = "",
    weights: str = "unknown",
) -> dict[str, Any]:
    """The data the search page draws: the query (its words, its image) and every hit."""
    text_pos: TextPositions | None = None
    qimage: dict[str, Any] | None = None
    for part, _w, side in _parts(hits[0]) if hits else []:
        qpos = part.a if side == "a" else part.b
        if isinstance(qpos, TextPositions) and text_pos is None:
            text_pos = qpos
        if isinstance(qpos, ImagePositions) and qimage is None:
            qimage = _image_record(qpos, part.raw_a if side == "a" else part.raw_b)
    return {
        "query": {
            "text": query or "",
            "tokens": token_labels(text_pos) if text_pos else [],
            "special": list(text_pos.special) if text_pos else [],
            "image": qimage,
        },
        "hits": [hit_record(h, text_pos) for h in hits],
        "model": model,
        "weights": weights,
        "random_note": RANDOM_WEIGHTS_NOTE,
    }


_TEMPLATE = string.Template(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="$csp">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$css</style></head>
<body data-live="$live">
<header><h1>$title</h1>
<form id="search-form" hidden>
<input id="q" name="q" type="search" placeholder="a red circle" autocomplete="off" aria-label="query">
<label>image <input id="qimage" type="file" accept="image/*" aria-label="query image"></label>
<label>k <input id="k" type="number" min="1" max="100" value="$k" aria-label="number of hits"></label>
<button id="go" type="submit">Search</button>
</form>
<div id="error" role="alert" hidden></div>
</header>
<main>
<section id="query"></section>
<section id="hits"></section>
<section id="why" hidden><h2>Why <select id="why-a" aria-label="hit A"></select> above
<select id="why-b" aria-label="hit B"></select>?</h2>
<div id="why-body"></div></section>
</main>
<script type="application/json" id="data">$data</script>
<script>$script</script>
</body></html>
"""
)


def page_html(
    data: dict[str, Any] | None, *, live: bool = False, title: str = "dualex search", k: int = 10
) -> str:
    """The page as one HTML string: with ``data`` (a report) or, ``live``, empty with a search
    box that asks ``POST /api/search`` of the server that served it."""
    script = _asset("search.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    connect = "'self'" if live else "'none'"
    csp = (
        "default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; connect-src {connect}; base-uri 'none'; "
        "form-action 'none'"
    )
    payload = {"stops": stops_rgb(), "page": data}
    return _TEMPLATE.substitute(
        csp=html.escape(csp, quote=True),
        title=html.escape(title),
        css=_asset("search.css"),
        live="1" if live else "0",
        k=int(k),
        data=_json_for_html(payload),
        script=script,
    )


def write_page(
    hits: Sequence[Hit],
    path: str | Path,
    query: str | None,
    image: Any = None,
    *,
    model: str = "",
    weights: str = "unknown",
) -> Path:
    """Write the search report (one self-contained HTML file), atomically."""
    from dualex.io import atomic_write

    data = page_data(hits, query, image, model=model, weights=weights)
    label = query or "image query"
    text = page_html(data, title=f"dualex search: {label}", k=len(hits))
    return atomic_write(Path(path), text)
