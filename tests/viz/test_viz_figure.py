"""The Figure-1 style grid and single heatmaps (matplotlib, imported lazily)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from dualex.errors import InvalidInputError
from dualex.viz.figure import default_spans, figure1, peak_box, save_figure, span_label


def test_figure1_png_and_pdf(tiny_ex, tmp_path):
    spans = ["red circle", "blue square", "a red circle and a blue square"]
    boxes = [(9, 6, 24, 21), (26, 12, 39, 27)]
    fig = figure1(tiny_ex, spans=spans, boxes=boxes)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:4] == ["image", "“red circle”", "“blue square”", "“whole caption”"], titles
    # image + 3 heatmaps + colorbar + 2 token strips + colorbar
    assert len(fig.axes) == 8, [ax.get_title() for ax in fig.axes]
    strip_texts = [t.get_text() for t in fig.axes[5].texts]
    assert strip_texts[0].strip() == "box 1" and "circle" in strip_texts
    png = save_figure(fig, tmp_path / "fig.png")
    with Image.open(png) as im:
        assert im.width > 2 * im.height > 300, f"a wide grid, got {im.size}"
    pdf = save_figure(figure1(tiny_ex, spans=spans[:1], boxes=boxes[:1]), tmp_path / "fig.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.pdf", "fig.png"], "no temp files"


def test_shared_range_is_the_max_over_panels(tiny_ex):
    spans = ["red", "square"]
    fig = figure1(tiny_ex, spans=spans, boxes=[(0, 0, 48, 32)])
    vmax = max(float(tiny_ex.image_map(s).abs().max()) for s in spans)
    cbar = fig.axes[3]
    assert cbar.get_ylim() == pytest.approx((-vmax, vmax)), "one symmetric range for all maps"
    fig_pos = figure1(tiny_ex, spans=spans, boxes=[], positive_only=True)
    assert fig_pos.axes[3].get_ylim()[0] == 0.0, "positive-only colour range starts at 0"


def test_defaults_and_labels(tiny_ex):
    spans = default_spans(tiny_ex, k=2)
    assert len(spans) == 3 and span_label(tiny_ex, spans[0]) == "whole caption"
    x0, y0, x1, y1 = peak_box(tiny_ex, spans[0])
    assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 32
    assert span_label(tiny_ex, "blue square") == "blue square"
    fig = figure1(tiny_ex, spans=spans)
    assert len(fig.axes) == 1 + 3 + 1 + 1 + 1, "image, whole caption + 2 words, 2 bars, 1 strip"
    words = [ax.get_title() for ax in fig.axes[2:4]]
    assert all(len(w.strip("“”")) >= 3 for w in words), f"default spans skip short words: {words}"


def test_bad_suffix_is_a_dualex_error(tiny_ex, tmp_path):
    with pytest.raises(InvalidInputError, match=r"\.png, \.pdf, \.svg"):
        save_figure(figure1(tiny_ex, spans=["red"], boxes=[]), tmp_path / "fig.bmp")
    assert list(tmp_path.iterdir()) == []


def test_matplotlib_is_imported_lazily():
    code = (
        "import sys, dualex.viz, dualex.viz.heatmap, dualex.viz.tokens, dualex.viz.report;"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
