"""Concepts in the HTML report (a panel per pair) and a browsable page of a concept dictionary.

The report panel (:func:`concept_panel`) ranks the pair's concepts by their share of the score;
clicking one colours its own token strip and heatmap with that concept's matrix; clicking a
token, or dragging a box on the panel's image, ranks the concepts that carry it. Its script is
``assets/concepts.js``; it reads the report's data block and its own, and inserts text only with
``textContent``.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dualex.towers.positions import ImagePositions, TextPositions
from dualex.viz.report import _asset, _quantise

__all__ = ["ConceptPanel", "concept_figure", "concept_panel", "concepts_page"]

PANEL_CONCEPTS = 16
"""Concepts shown per pair (largest |share| first)."""


@dataclass
class ConceptPanel:
    """A report addon (see :func:`dualex.viz.report.report_html`'s ``addons``)."""

    data: dict[str, Any]
    id: str = "dualex-concepts"
    script: str = field(default_factory=lambda: _asset("concepts.js"))
    html: str = field(default_factory=lambda: _asset("concepts.html"))


def _pair_record(ex: Any, split: Any, top: int) -> dict[str, Any]:
    mats = split.matrices[:top]
    text_first = isinstance(ex.a, TextPositions)
    if not text_first:  # the report shows text × image
        mats = mats.transpose(1, 2)
    rec: dict[str, Any] = {
        "concepts": [
            [int(c), name, float(s)]
            for c, name, s in zip(
                split.concepts[:top].tolist(),
                split.names[:top],
                split.shares[:top].tolist(),
                strict=True,
            )
        ],
        "others": float(split.shares[top:].sum()),
        "residual": float(split.residual.sum()),
        "residual_share": split.residual_share,
        "matrices": _quantise(mats.detach().cpu().double().numpy()),
    }
    image = ex.b if isinstance(ex.b, ImagePositions) else ex.a
    if isinstance(image, ImagePositions):
        rec["patch_boxes"] = [[float(v) for v in b] for b in image.patch_boxes()]
        rec["prefix"] = image.prefix
    return rec


def concept_panel(
    explanations: Sequence[Any], concepts: Any, top: int = PANEL_CONCEPTS
) -> ConceptPanel:
    """The concept panel of a report, one record per explanation.

    Args:
        explanations: The report's explanations (in its order); each must keep its projections.
        concepts: The :class:`dualex.Concepts` dictionary of their model.
        top: Concepts shown per pair.

    Raises:
        ModelMismatchError: if an explanation is of another model than the dictionary's.
    """
    pairs = [_pair_record(ex, ex.concept_split(concepts), top) for ex in explanations]
    return ConceptPanel({"pairs": pairs})


def _data_uri(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def concepts_page(concepts: Any, *, title: str = "dualex concepts") -> str:
    """A self-contained HTML page of a dictionary: every concept's label, usage, top captions and
    top patches, with a filter box.

    Returns:
        The HTML document (no script; static, filterable with the browser's find).
    """
    m = concepts.model
    usage = concepts.meta.get("usage", {})
    cards = []
    for ex in concepts.examples(5):
        use = " · ".join(
            f"{mod} {100 * usage[s][ex.concept]:.1f} %"
            for s, mod in zip(("a", "b"), m["modalities"], strict=True)
            if s in usage and (s == "a" or m["modalities"][0] != m["modalities"][1])
        )
        texts = "".join(
            f"<li><span class='act'>{v:.3g}</span> {html.escape(t)}</li>" for t, v in ex.texts
        )
        crops = "".join(
            f"<img src='{_data_uri(c)}' alt='top patch {i + 1}' title='{a:.3g}'>"
            for i, (c, a) in enumerate(zip(ex.crops, ex.crop_activations, strict=True))
        )
        unused = " unused" if ex.name == "(unused)" else ""
        cards.append(
            f"<section class='concept{unused}' id='c{ex.concept}'>"
            f"<h2><span class='idx'>#{ex.concept}</span> {html.escape(ex.name)}</h2>"
            f"<p class='use'>active on {html.escape(use)}</p>"
            f"<div class='crops'>{crops}</div><ol class='texts'>{texts}</ol></section>"
        )
    train = concepts.meta.get("train", {})
    head = (
        f"{concepts.size} concepts, top-{concepts.topk} codes, model "
        f"{html.escape(str(m['name']))} (weights {html.escape(str(m['fingerprint']))}), "
        f"trained on {html.escape(str(train.get('data', '?')))} "
        f"({train.get('pairs', '?')} pairs, {train.get('steps', '?')} steps)"
    )
    return _PAGE.format(title=html.escape(title), head=head, cards="\n".join(cards), css=_PAGE_CSS)


_PAGE_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.concept{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 10px}
.concept.unused{opacity:.45}
.concept h2{font-size:1.05em;margin:0 0 .3em}.idx{color:#888;font-weight:normal}
.use{color:#666;margin:0 0 .4em;font-size:.9em}
.crops img{width:56px;height:56px;image-rendering:pixelated;margin-right:4px;border:1px solid #ccc}
.texts{margin:.4em 0 0 1.2em;padding:0}.texts li{margin:.1em 0}
.act{display:inline-block;min-width:3.5em;color:#a33;font-variant-numeric:tabular-nums}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body><h1>{title}</h1><p>{head}</p>
<div class="grid">
{cards}
</div></body></html>
"""


def concept_figure(ex: Any, concepts: Any, n: int = 4, *, positive_only: bool = False) -> Any:
    """A figure row: the whole caption's heatmap, then the ``n`` concepts of largest ``|share|``,
    each the heatmap of its own matrix (the whole caption's rows), on one colour range.

    Args:
        ex: A caption–image explanation that keeps its projections.
        concepts: The :class:`dualex.Concepts` of its model, or an already computed split.
        n: Concepts shown.
        positive_only: Clip negative values.

    Returns:
        The matplotlib figure.
    """
    import dataclasses

    from dualex.viz.colors import symmetric_range
    from dualex.viz.figure import _pyplot, weights_note
    from dualex.viz.heatmap import content_span

    split = concepts if hasattr(concepts, "matrices") else ex.concept_split(concepts)
    plt = _pyplot()
    n = min(n, len(split.names))
    panels = [("all concepts + residual", ex.matrix.double(), float(ex.matrix.double().sum()))]
    for k in range(n):
        panels.append(
            (
                f"#{int(split.concepts[k])} {split.names[k]}",
                split.matrices[k],
                float(split.shares[k]),
            )
        )
    span = content_span(ex)
    views = [dataclasses.replace(ex, matrix=m) for _, m, _ in panels]
    vmax = symmetric_range(*[v.image_map(span) for v in views])
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0), squeeze=False)
    from dualex.viz.figure import plot_image_map

    for ax, view, (title, _, share) in zip(axes[0], views, panels, strict=True):
        plot_image_map(view, span, ax=ax, vmax=vmax, positive_only=positive_only, colorbar=False)
        ax.set_title(f"{title}\nshare {share:+.3g}", fontsize=8)
    fig.suptitle(
        f"concepts of “{ex.text_positions.text}” (residual {split.residual_share:.0%} of |M|)"
        + weights_note(ex),
        fontsize=9,
    )
    fig.tight_layout()
    return fig
