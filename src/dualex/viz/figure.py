"""A Figure-1 style grid: caption spans → image heatmaps, image boxes → token strips.

The top row shows the original image with the boxes drawn on it, then one heatmap per span, each
with its colour range on a bar under it. Below, one token strip per box colours the caption by its
interaction with the patches under that box. Colours come from :mod:`dualex.viz.colors`; each
panel has its own symmetric range, labelled (``shared_range=True``: one for all heatmaps and one
for all strips). matplotlib is imported only when a figure is made.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dualex.data.types import Box
from dualex.errors import InvalidInputError
from dualex.io import atomic_write
from dualex.viz.colors import hex_colors, matplotlib_cmap, symmetric_range, text_color
from dualex.viz.heatmap import blend, content_span, crop_note, image_positions, upsample
from dualex.viz.tokens import pieces

BOX_COLORS = ("#ffd400", "#00e0ff", "#ff4df0", "#66ff33", "#ff8c00", "#ffffff")
"""Outline colours of the boxes (chosen to stand out from the red/blue maps)."""

FORMATS = (".png", ".pdf", ".svg")

STOP_WORDS = frozenset(
    [
        "the",
        "and",
        "are",
        "was",
        "were",
        "for",
        "with",
        "from",
        "this",
        "that",
        "these",
        "those",
        "its",
        "his",
        "her",
        "their",
        "our",
        "your",
        "has",
        "have",
        "had",
        "but",
        "not",
        "all",
        "any",
        "into",
        "onto",
        "than",
        "then",
        "there",
        "here",
        "who",
        "whom",
        "which",
        "what",
        "when",
        "where",
        "while",
        "also",
        "very",
        "can",
        "will",
        "just",
    ]
)
"""Function words :func:`default_spans` skips (besides any token shorter than three letters)."""

RANDOM_NOTE = "random weights: not a trained model"
"""Added to the title of figures of explanations made with random weights."""


def weights_note(ex: Any) -> str:
    """``" · random weights: not a trained model"`` for random-weight explanations, else ``""``."""
    return f"  ·  {RANDOM_NOTE}" if getattr(ex, "weights", "") == "random" else ""


def _pyplot():
    try:
        import matplotlib

        if "matplotlib.pyplot" not in __import__("sys").modules:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise InvalidInputError(
            "figures need matplotlib: pip install 'dualex[viz]' (or write an .html report)"
        ) from err
    return plt


def default_spans(ex: Any, k: int = 3) -> list[Any]:
    """The whole caption, then the ``k`` word tokens that interact most with the image.

    Word tokens have at least three characters, one of them a letter, are not in
    :data:`STOP_WORDS` (function words and punctuation are skipped unless nothing else is left)
    and are known to the model's vocabulary (unknown tokens are never ranked).

    Returns:
        Spans for :func:`figure1`: a list of token indices for the caption, then single-token
        index lists, in caption order.
    """
    text = ex.text_positions
    whole = content_span(ex)
    scores = ex.text_scores(None)
    out: list[Any] = [whole]
    if len(whole) > 1:
        labels = [text.text[o[0] : o[1]] if o else "" for o in text.offsets]
        words = [
            i
            for i in whole
            if i not in text.unknown  # one generic token, whatever the word: never ranked
            and len(labels[i]) >= 3
            and any(c.isalpha() for c in labels[i])
            and labels[i].strip().lower() not in STOP_WORDS
        ]
        known = [i for i in whole if i not in text.unknown] or whole
        ranked = sorted(words or known, key=lambda i: -float(scores[i]))[:k]
        out += [[i] for i in sorted(ranked)]
    return out


def peak_box(ex: Any, span: Any, radius: int = 1) -> Box:
    """Box (original pixels) around a span's strongest patch, ``2·radius + 1`` patches wide."""
    pos = image_positions(ex)
    heat = ex.image_map(span)
    rows, cols = pos.grid
    idx = int(heat.flatten().argmax())
    r, c = divmod(idx, cols)
    r0, r1 = max(r - radius, 0), min(r + radius, rows - 1)
    c0, c1 = max(c - radius, 0), min(c + radius, cols - 1)
    boxes = pos.patch_boxes()
    a, b = boxes[r0 * cols + c0], boxes[r1 * cols + c1]
    W, H = pos.geometry.original_size
    return (max(a[0], 0.0), max(a[1], 0.0), min(b[2], float(W)), min(b[3], float(H)))


def span_label(ex: Any, span: Any) -> str:
    """The caption text a span covers (``"…"`` joins separated pieces)."""
    text = ex.text_positions
    idx = text.span_indices(span)
    if idx == content_span(ex) and len(idx) > 1:
        return "whole caption"
    parts, last = [], None
    for i in idx:
        off = text.offsets[i]
        piece = text.text[off[0] : off[1]] if off else text.tokens[i]
        if last is not None and off and text.offsets[last] and off[0] >= text.offsets[last][1]:
            gap = text.text[text.offsets[last][1] : off[0]]
            piece = (gap if not gap.strip() and i == last + 1 else " … ") + piece
        parts.append(piece)
        last = i
    return "".join(parts)


def figure1(
    ex: Any,
    spans: Sequence[Any] | None = None,
    boxes: Sequence[Box] | None = None,
    *,
    shared_range: bool = False,
    positive_only: bool = False,
    include_special: bool = False,
    alpha: float = 0.7,
    panel_size: float = 2.6,
    title: str | None = None,
):
    """Several spans → several heatmaps, several boxes → token strips, in one figure.

    Every colour range is labelled: by default each heatmap has its own range, printed on a
    colour bar under it, and each token strip its own, printed in its tag (a word's map is then
    readable next to the whole caption's, whose values are larger); ``shared_range=True`` gives
    all heatmaps one range (one bar, labelled so) and all strips another. Notes under the figure
    say what the numbered boxes, the dimmed bands (outside the processor's crop) and the greyed
    words (unknown to the vocabulary) are, when the figure has them.

    Args:
        ex: An :class:`~dualex.Explanation` of a caption–image pair.
        spans: Caption spans (see :meth:`Explanation.image_map`); ``None``: :func:`default_spans`.
        boxes: Boxes ``(x0, y0, x1, y1)`` in original pixels; ``None``: a box around the peak of
            the first span.
        shared_range: One colour range for all heatmaps (and one for all token strips);
            ``False`` (default): each panel its own.
        positive_only: Clip negative values to 0 (white → red).
        include_special: Show special tokens in the strips.
        alpha: Opacity of the strongest heatmap colour.
        panel_size: Height of an image panel in inches.
        title: Figure title; default the caption and the score.

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    plt = _pyplot()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    from dualex.viz.summary import unknown_note

    pos = image_positions(ex)
    text = ex.text_positions
    spans = list(spans) if spans is not None else default_spans(ex)
    if not spans:
        raise InvalidInputError("figure1 needs at least one caption span")
    boxes = list(boxes) if boxes is not None else [peak_box(ex, spans[0])]
    heats = [ex.image_map(s) for s in spans]
    heats = [h.clamp(min=0) if positive_only else h for h in heats]
    strips = [ex.text_scores(b) for b in boxes]
    unknown = set(text.unknown)
    shown = [
        i for i, sp in enumerate(text.special) if (include_special or not sp) and i not in unknown
    ]
    strips_shown = [s[shown].clamp(min=0) if positive_only else s[shown] for s in strips]
    W, H = pos.geometry.original_size
    aspect = W / H
    ncols = 1 + len(spans)
    raster = (min(W, 512), max(1, round(min(W, 512) / aspect)))
    shared_v = symmetric_range(*heats)
    shared_t = symmetric_range(*strips_shown) if strips_shown and shown else 1.0
    notes = [
        n
        for n in (
            f"Rows below: the caption coloured by its interaction with the patches inside each "
            f"numbered box on the image (box{'es' if len(boxes) > 1 else ''} "
            f"{', '.join(str(k + 1) for k in range(len(boxes)))})."
            if boxes
            else "",
            crop_note(pos),
            unknown_note(ex) + "." if text.unknown else "",
        )
        if n
    ]

    chars = len(text.text) + (
        sum(len(t) + 1 for t, sp in zip(text.tokens, text.special, strict=True) if sp)
        if include_special
        else 0
    )
    width_in = ncols * panel_size * aspect - 0.8
    lines = max(1, -(-int(chars * 0.085) // max(int(width_in), 1)))
    strip_h = 0.15 + 0.32 * lines
    bar_h = 0.42
    notes_h = 0.2 * len(notes) + (0.1 if notes else 0.0)
    fig_w = ncols * panel_size * aspect + 1.3
    fig_h = panel_size + 0.75 + bar_h + len(boxes) * strip_h + (0.2 if boxes else 0.0) + notes_h
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=150)
    heights = [panel_size + 0.45, bar_h] + [strip_h] * len(boxes)
    grid = fig.add_gridspec(
        2 + len(boxes),
        ncols + 1,
        height_ratios=heights,
        width_ratios=[1.0] * ncols + [0.06],
        hspace=0.1,
        wspace=0.06,
        left=0.02,
        right=0.93,
        top=1 - 0.45 / fig_h,
        bottom=(0.02 + notes_h) / fig_h,
    )
    image = ex.image
    ax0 = fig.add_subplot(grid[0, 0])
    ax0.imshow(image if image is not None else blend(None, upsample(heats[0], pos, raster), 1.0))
    ax0.set_title(
        "image" + (f" · boxes 1–{len(boxes)} → rows below" if len(boxes) > 1 else "")
        + (" · box 1 → row below" if len(boxes) == 1 else ""),
        fontsize=9,
    )  # fmt: skip
    for k, b in enumerate(boxes):
        color = BOX_COLORS[k % len(BOX_COLORS)]
        ax0.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, lw=2, ec=color))
        ax0.text(
            b[0] + 2,
            b[1] + 2,
            str(k + 1),
            color="black",
            fontsize=8,
            va="top",
            bbox=dict(fc=color, ec="none", pad=1.0),
        )
    _crop_outline(ax0, pos)
    ax0.set_axis_off()

    def bar(cax: Any, vmax: float, label: str) -> None:
        lo = 0.0 if positive_only else -vmax
        cb = fig.colorbar(
            ScalarMappable(Normalize(lo, vmax), matplotlib_cmap(positive_only)),
            cax=cax,
            orientation="horizontal",
            format="%.2g",
        )
        cb.set_ticks([lo, vmax] if positive_only else [lo, 0.0, vmax])
        cax.tick_params(labelsize=6, length=2, pad=1)
        cax.set_title(label, fontsize=7, pad=2)

    for j, (span, heat) in enumerate(zip(spans, heats, strict=True)):
        vmax = shared_v if shared_range else symmetric_range(heat)
        ax = fig.add_subplot(grid[0, 1 + j])
        im = blend(
            image, upsample(heat, pos, raster), vmax, positive_only=positive_only, alpha=alpha
        )
        ax.imshow(im, extent=(0, W, H, 0))
        ax.set_title(_ellipsis(f"“{span_label(ex, span)}”", 28), fontsize=9)
        ax.set_axis_off()
        if not shared_range:
            bar(_bar_axes(fig, grid[1, 1 + j]), vmax, "this panel's range")
    if shared_range:
        bar(_bar_axes(fig, grid[1, 1:ncols]), shared_v, "one range for every heatmap")

    for k, scores in enumerate(strips):
        ax = fig.add_subplot(grid[2 + k, :ncols])
        vals = scores.clamp(min=0) if positive_only else scores
        vmax = shared_t if shared_range else symmetric_range(vals[shown] if shown else [0.0])
        _token_strip(
            fig,
            ax,
            text,
            vals.double().tolist(),
            vmax,
            positive_only,
            include_special,
            BOX_COLORS[k % len(BOX_COLORS)],
            f"box {k + 1}" + ("" if shared_range else f" · ±{vmax:.2g}"),
        )
    if boxes and shared_range:
        cax = fig.add_subplot(grid[2:, ncols])
        lo = 0.0 if positive_only else -shared_t
        fig.colorbar(
            ScalarMappable(Normalize(lo, shared_t), matplotlib_cmap(positive_only)),
            cax=cax,
            format="%.2g",
        )
        cax.tick_params(labelsize=7)
        cax.set_title("rows", fontsize=7)
    for n, line in enumerate(notes):
        fig.text(0.02, (0.04 + 0.2 * (len(notes) - 1 - n)) / fig_h, line, fontsize=7,
                 color="#444444", ha="left", va="bottom")  # fmt: skip
    c = ex.completeness
    note = weights_note(ex)
    fig.suptitle(
        (title + note if title else None)
        or _ellipsis(
            f"“{text.text}”  ·  score {c.score:.4f}  ·  Σ interactions "
            f"{c.attribution_sum:.4f}  ·  "
            + (
                f"rel. error {c.relative_error:.1e}"
                if getattr(ex, "sampling_error", None) is None
                else f"{ex.method}, sampling error {ex.sampling_error:.1e}"
            ),
            140 - len(note),
        )
        + note,
        fontsize=10,
        color="#b3261e" if note else "black",
    )
    return fig


def _bar_axes(fig: Any, cell: Any) -> Any:
    """A thin horizontal colour-bar axes centred in a grid cell (under its heatmap)."""
    ax = fig.add_subplot(cell)
    box = ax.get_position()
    ax.set_position([box.x0 + box.width * 0.1, box.y0 + box.height * 0.62, box.width * 0.8,
                     box.height * 0.16])  # fmt: skip
    return ax


def text_pair_figure(
    ex: Any,
    *,
    include_special: bool = False,
    positive_only: bool = False,
    cell: float = 0.32,
    title: str | None = None,
):
    """Token × token heatmap of a text–text explanation, both texts' tokens along the axes.

    Args:
        ex: An :class:`~dualex.Explanation` of two texts (rows: text a, columns: text b).
        include_special: Also show special tokens (CLS, SEP, ...).
        positive_only: Clip negative values to 0.
        cell: Size of one cell in inches.
        title: Figure title; default both texts and the score.

    Returns:
        A ``matplotlib.figure.Figure``.

    Raises:
        InvalidInputError: if a side is not text.
    """
    from dualex.towers.positions import TextPositions
    from dualex.viz.summary import position_labels

    if not (isinstance(ex.a, TextPositions) and isinstance(ex.b, TextPositions)):
        raise InvalidInputError("text_pair_figure needs a text–text explanation; use figure1")
    plt = _pyplot()
    rows = [i for i, sp in enumerate(ex.a.special) if include_special or not sp] or list(
        range(len(ex.a))
    )
    cols = [j for j, sp in enumerate(ex.b.special) if include_special or not sp] or list(
        range(len(ex.b))
    )
    m = ex.matrix.detach().double()[rows][:, cols]
    if positive_only:
        m = m.clamp(min=0)
    vmax = symmetric_range(m)

    def struck(text: str) -> str:
        return "".join(ch + "\u0336" for ch in text)

    la = [struck(t) if i in ex.a.unknown else t for i, t in enumerate(position_labels(ex.a))]
    lb = [struck(t) if i in ex.b.unknown else t for i, t in enumerate(position_labels(ex.b))]
    fig_w = max(4.0, 1.8 + cell * len(cols) + 0.8)
    fig_h = max(3.0, 1.6 + cell * len(rows))
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=150)
    im = ax.imshow(
        m.numpy(),
        cmap=matplotlib_cmap(positive_only),
        vmin=0.0 if positive_only else -vmax,
        vmax=vmax,
        aspect="equal",
    )
    ax.set_yticks(range(len(rows)), [la[i] for i in rows], fontsize=8)
    ax.set_xticks(range(len(cols)), [lb[j] for j in cols], fontsize=8, rotation=60, ha="left")
    ax.xaxis.tick_top()
    from dualex.viz.tokens import UNKNOWN_FG

    for labels, idx, pos in (
        (ax.get_yticklabels(), rows, ex.a),
        (ax.get_xticklabels(), cols, ex.b),
    ):
        for label, i in zip(labels, idx, strict=True):
            if i in pos.unknown:  # unknown to the vocabulary: grey (struck through, see below)
                label.set_color(UNKNOWN_FG)
    ax.set_ylabel("text A", fontsize=8)
    ax.set_xlabel("text B", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, format="%.2g").ax.tick_params(labelsize=7)
    c = ex.completeness
    note = weights_note(ex)
    from dualex.viz.summary import unknown_note

    if ex.a.unknown or ex.b.unknown:
        fig.text(0.01, 0.005, unknown_note(ex) + ".", fontsize=6, color="#444444", wrap=True)
    fig.suptitle(
        (title or _ellipsis(f"“{ex.a.text}” × “{ex.b.text}”  ·  score {c.score:.4f}", 100)) + note,
        fontsize=9,
        color="#b3261e" if note else "black",
    )
    fig.tight_layout()
    if ex.a.unknown or ex.b.unknown:  # room for the note under the axes
        fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.1)
    return fig


def _ellipsis(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _crop_outline(ax: Any, pos: Any) -> None:
    """Dashed outline of the part of the image the model saw (when it is cropped)."""
    from matplotlib.patches import Rectangle

    W, H = pos.geometry.original_size
    x0, y0, x1, y1 = pos.geometry.to_original((0, 0, *pos.geometry.input_size))
    if x0 > 0.5 or y0 > 0.5 or x1 < W - 0.5 or y1 < H - 0.5:
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1, ls="--", ec="white"))


def _token_strip(fig, ax, text, values, vmax, positive_only, include_special, color, label):
    """Tokens as coloured boxes laid out left to right (wrapping), centred in one axes."""
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    from dualex.viz.tokens import UNKNOWN_BG, UNKNOWN_FG

    colors = hex_colors(values, vmax, positive_only)
    for i in text.unknown:  # unknown to the vocabulary: grey, not a score colour
        colors[i] = UNKNOWN_BG
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    fontsize = 10
    line_px = fontsize * fig.dpi / 72 * 1.9
    space_px = fontsize * fig.dpi / 72 * 0.3
    tag = ax.text(
        0.0,
        0.5,
        f" {label} ",
        fontsize=8,
        va="center",
        ha="left",
        color="black",
        bbox=dict(fc=color, ec="none", pad=2.0),
    )
    indent = tag.get_window_extent(renderer).width + 10
    placed, x, line = [], indent, 0
    for s, i in pieces(text, include_special):
        if i is None:
            x += space_px
            continue
        t = ax.text(
            0.0,
            0.5,
            s,
            fontsize=fontsize,
            va="center",
            ha="left",
            color=UNKNOWN_FG if i in text.unknown else text_color(colors[i]),
            bbox=dict(fc=colors[i], ec="none", pad=1.5),
        )
        w = t.get_window_extent(renderer).width
        if x + w > box.width and x > indent:
            line, x = line + 1, indent
        placed.append((t, x, line))
        x += w + 4
    lines = line + 1
    top = (box.height + lines * line_px) / 2

    def y(n: int) -> float:
        return (top - (n + 0.5) * line_px) / box.height

    tag.set_position((0.0, y(0)))
    for t, x, n in placed:
        t.set_position((x / box.width, y(n)))


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save a figure as PNG, PDF or SVG (by suffix), atomically, and close it.

    Raises:
        InvalidInputError: on another suffix.
    """
    path = Path(path)
    fmt = path.suffix.lower()
    if fmt not in FORMATS:
        raise InvalidInputError(
            f"cannot save a figure as {path.name!r}; use one of {', '.join(FORMATS)}"
        )
    try:
        return atomic_write(
            path, lambda tmp: fig.savefig(tmp, format=fmt[1:], dpi=dpi, bbox_inches="tight")
        )
    finally:
        _pyplot().close(fig)


def plot_image_map(
    ex: Any,
    span: Any = None,
    *,
    ax: Any = None,
    vmax: float | None = None,
    positive_only: bool = False,
    colorbar: bool = True,
    alpha: float = 0.7,
):
    """One span's heatmap over the original image on a matplotlib axes (with a colorbar).

    Returns:
        The axes.
    """
    plt = _pyplot()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from dualex.viz.heatmap import overlay

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    im, vmax = overlay(ex, span, vmax=vmax, positive_only=positive_only, alpha=alpha, max_side=512)
    W, H = image_positions(ex).geometry.original_size
    ax.imshow(im, extent=(0, W, H, 0))
    ax.set_axis_off()
    if span is not None:
        ax.set_title(f"“{span_label(ex, span)}”", fontsize=9)
    if colorbar:
        lo = 0.0 if positive_only else -vmax
        ax.figure.colorbar(
            ScalarMappable(Normalize(lo, vmax), matplotlib_cmap(positive_only)),
            ax=ax,
            fraction=0.046,
            format="%.2g",
            pad=0.04,
        )
    return ax
