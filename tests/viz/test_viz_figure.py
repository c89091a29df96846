"""The Figure-1 style grid and single heatmaps (matplotlib, imported lazily)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from dualex.errors import InvalidInputError
from dualex.viz.figure import default_spans, figure1, peak_box, save_figure, span_label


def _titled(fig, title: str) -> list:
    return [ax for ax in fig.axes if ax.get_title() == title]


def _notes(fig) -> list[str]:
    return [t.get_text() for t in fig.texts]


def test_figure1_png_and_pdf(tiny_ex, tmp_path):
    spans = ["red circle", "blue square", "a red circle and a blue square"]
    boxes = [(9, 6, 24, 21), (26, 12, 39, 27)]
    fig = figure1(tiny_ex, spans=spans, boxes=boxes)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title().startswith(("“", "image"))]
    assert titles == [
        "image · boxes 1–2 → rows below",
        "“red circle”",
        "“blue square”",
        "“whole caption”",
    ], titles
    # image + 3 heatmaps, each with its own colour bar + 2 token strips
    assert len(fig.axes) == 1 + 3 + 3 + 2, [ax.get_title() for ax in fig.axes]
    strip = next(ax for ax in fig.axes if any(t.get_text() == "circle" for t in ax.texts))
    assert strip.texts[0].get_text().strip().startswith("box 1 · ±")
    # what "box 1" is, is said on the figure
    assert any("numbered box on the image" in n for n in _notes(fig))
    png = save_figure(fig, tmp_path / "fig.png")
    with Image.open(png) as im:
        assert im.width > 2 * im.height > 300, f"a wide grid, got {im.size}"
    pdf = save_figure(figure1(tiny_ex, spans=spans[:1], boxes=boxes[:1]), tmp_path / "fig.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.pdf", "fig.png"], "no temp files"


def test_each_heatmap_has_its_own_labelled_range_by_default(tiny_ex):
    spans = ["red", "a red circle and a blue square"]
    fig = figure1(tiny_ex, spans=spans, boxes=[(0, 0, 48, 32)])
    bars = _titled(fig, "this panel's range")
    assert len(bars) == len(spans)
    for bar, span in zip(bars, spans, strict=True):
        vmax = float(tiny_ex.image_map(span).abs().max())
        assert bar.get_xlim() == pytest.approx((-vmax, vmax))
    assert bars[0].get_xlim() != pytest.approx(bars[1].get_xlim()), "not one shared range"
    strip = next(ax for ax in fig.axes if any(t.get_text() == "circle" for t in ax.texts))
    v = float(tiny_ex.text_scores((0, 0, 48, 32))[1:-1].abs().max())
    assert strip.texts[0].get_text().strip() == f"box 1 · ±{v:.2g}"


def test_shared_range_is_the_max_over_panels_and_says_so(tiny_ex):
    spans = ["red", "square"]
    fig = figure1(tiny_ex, spans=spans, boxes=[(0, 0, 48, 32)], shared_range=True)
    vmax = max(float(tiny_ex.image_map(s).abs().max()) for s in spans)
    (cbar,) = _titled(fig, "one range for every heatmap")
    assert cbar.get_xlim() == pytest.approx((-vmax, vmax)), "one symmetric range for all maps"
    assert _titled(fig, "this panel's range") == []
    fig_pos = figure1(tiny_ex, spans=spans, boxes=[], positive_only=True, shared_range=True)
    (bar,) = _titled(fig_pos, "one range for every heatmap")
    assert bar.get_xlim()[0] == 0.0, "positive-only colour range starts at 0"


def test_the_dimmed_crop_bands_are_explained_only_when_there_are_some(tiny_ex, make_ex):
    fig = figure1(tiny_ex, spans=["red"], boxes=[])
    (note,) = [n for n in _notes(fig) if n.startswith("Dimmed bands")]
    assert "centre crop" in note and "x 8–40" in note and "48×32" in note
    square = make_ex(image_size=(32, 32))
    assert not any(n.startswith("Dimmed") for n in _notes(figure1(square, spans=["red"])))


def test_defaults_and_labels(tiny_ex):
    spans = default_spans(tiny_ex, k=2)
    assert len(spans) == 3 and span_label(tiny_ex, spans[0]) == "whole caption"
    x0, y0, x1, y1 = peak_box(tiny_ex, spans[0])
    assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 32
    assert span_label(tiny_ex, "blue square") == "blue square"
    fig = figure1(tiny_ex, spans=spans)
    assert len(fig.axes) == 1 + 3 + 3 + 1, "image, whole caption + 2 words, 3 bars, 1 strip"
    words = [ax.get_title() for ax in fig.axes if ax.get_title().startswith("“")][1:]
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
