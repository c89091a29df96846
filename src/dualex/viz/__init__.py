"""See an explanation: heatmaps on the original image, token highlights, figures, HTML reports.

Everything here uses one diverging colormap (:mod:`dualex.viz.colors`: blue negative, red
positive, centred at 0 with a symmetric range). matplotlib is imported only by the figure
functions; heatmaps, token highlights and reports need only numpy and Pillow.

    from dualex import viz
    image, vmax = viz.overlay(ex, "red circle")          # PIL image over the original photo
    html = viz.tokens_html(ex.a, ex.text_scores(box))     # caption coloured by a box
    viz.save_figure(viz.figure1(ex, spans=[...], boxes=[...]), "fig.png")
    viz.write_report([ex1, ex2], "report.html")
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "symmetric_range": "colors",
    "hex_colors": "colors",
    "upsample": "heatmap",
    "blend": "heatmap",
    "overlay": "heatmap",
    "tokens_html": "tokens",
    "tokens_rich": "tokens",
    "token_labels": "tokens",
    "figure1": "figure",
    "text_pair_figure": "figure",
    "plot_image_map": "figure",
    "save_figure": "figure",
    "default_spans": "figure",
    "report_html": "report",
    "write_report": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"dualex.viz.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'dualex.viz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
