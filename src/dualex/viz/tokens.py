"""Token highlighting with the shared colormap: HTML spans and a rich terminal rendering.

Tokens are shown as the caption's own characters (through the tokenizer's offsets), so BPE
markers such as ``</w>`` or ``Ġ`` never appear and the spacing of the caption is kept; special
tokens (BOS/EOS/CLS/PAD) are shown by name only when asked for.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from dualex.towers.positions import TextPositions
from dualex.viz.colors import hex_colors, symmetric_range, text_color

UNKNOWN_BG = "#d4d4d4"
"""Background of a token unknown to the model's vocabulary (no score colour: see
:attr:`TextPositions.unknown`)."""

UNKNOWN_FG = "#5f5f5f"
"""Text colour of an unknown token."""


def token_labels(text: TextPositions) -> list[str]:
    """Display string of every position: the caption's characters, or the special token."""
    out = []
    for tok, off in zip(text.tokens, text.offsets, strict=True):
        out.append(text.text[off[0] : off[1]] if off is not None and off[1] > off[0] else tok)
    return out


def pieces(text: TextPositions, include_special: bool = False) -> list[tuple[str, int | None]]:
    """The caption as ``(string, token index or None)`` pieces, gaps included.

    Gaps between tokens (spaces, characters the tokenizer dropped) are pieces with index
    ``None``, so joining every string gives back the caption (plus special tokens, if included).
    """
    labels = token_labels(text)
    out: list[tuple[str, int | None]] = []
    cursor = 0
    for i, off in enumerate(text.offsets):
        if off is None or off[1] <= off[0]:
            if include_special:
                out.append((labels[i], i))
            continue
        if off[0] > cursor:
            out.append((text.text[cursor : off[0]], None))
        if off[0] < cursor:  # overlapping offsets (rare): show the new part only
            if off[1] > cursor:
                out.append((text.text[cursor : off[1]], i))
                cursor = off[1]
            continue
        out.append((labels[i], i))
        cursor = off[1]
    if cursor < len(text.text):
        out.append((text.text[cursor:], None))
    return out


def _scores_list(scores: Any) -> list[float]:
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().double().tolist()
    return [float(v) for v in scores]


def _range(
    text: TextPositions,
    scores: list[float],
    vmax: float | None,
    include_special: bool,
    positive_only: bool,
) -> float:
    if vmax is not None:
        return float(vmax)
    unknown = set(text.unknown)
    shown = [
        s
        for i, (s, sp) in enumerate(zip(scores, text.special, strict=True))
        if (include_special or not sp) and i not in unknown
    ]
    if positive_only:
        shown = [max(s, 0.0) for s in shown]
    return symmetric_range(shown or [0.0])


def tokens_html(
    text: TextPositions,
    scores: Sequence[float] | Any,
    *,
    vmax: float | None = None,
    positive_only: bool = False,
    include_special: bool = False,
) -> str:
    """The caption as HTML ``<span>`` elements coloured by per-token scores.

    Args:
        text: The caption's positions.
        scores: ``[S_text]`` one value per position (e.g. ``Explanation.text_scores(box)``).
        vmax: Colour range ``[-vmax, vmax]``; ``None``: the shown tokens' ``max |score|``.
        positive_only: Clip negative scores to 0.
        include_special: Also show special tokens.

    Returns:
        An HTML fragment; every piece of text is escaped. Tokens unknown to the model's
        vocabulary are struck through on grey (class ``dualex-unknown``), not coloured.
    """
    values = _scores_list(scores)
    if len(values) != len(text):
        raise ValueError(f"{len(values)} scores for {len(text)} tokens")
    vmax = _range(text, values, vmax, include_special, positive_only)
    colors = hex_colors(values, vmax, positive_only)
    parts = ['<span class="dualex-tokens">']
    for s, i in pieces(text, include_special):
        if i is None:
            parts.append(html.escape(s))
            continue
        if i in text.unknown:
            parts.append(
                f'<span class="dualex-token dualex-unknown" data-index="{i}" '
                f'title="unknown to the model\'s vocabulary" style="background:{UNKNOWN_BG};'
                f'color:{UNKNOWN_FG};text-decoration:line-through">{html.escape(s)}</span>'
            )
            continue
        bg = colors[i]
        parts.append(
            f'<span class="dualex-token" data-index="{i}" data-score="{values[i]:.6g}" '
            f'title="{values[i]:+.4g}" style="background:{bg};color:{text_color(bg)}">'
            f"{html.escape(s)}</span>"
        )
    parts.append("</span>")
    return "".join(parts)


def tokens_rich(
    text: TextPositions,
    scores: Sequence[float] | Any,
    *,
    vmax: float | None = None,
    positive_only: bool = False,
    include_special: bool = False,
):
    """The caption as a ``rich.text.Text`` with each token's background set by its score.

    Arguments as in :func:`tokens_html`. Print it with ``rich.console.Console().print(...)``.
    Tokens unknown to the model's vocabulary are struck through on grey, not coloured.
    """
    from rich.text import Text

    values = _scores_list(scores)
    if len(values) != len(text):
        raise ValueError(f"{len(values)} scores for {len(text)} tokens")
    vmax = _range(text, values, vmax, include_special, positive_only)
    colors = hex_colors(values, vmax, positive_only)
    from dualex.viz.summary import display_text

    out = Text()
    for s, i in pieces(text, include_special):
        if i is None:
            out.append(display_text(s))  # control characters never reach the terminal
        elif i in text.unknown:  # no score colour: struck through on grey
            out.append(display_text(s), style=f"strike {UNKNOWN_FG} on {UNKNOWN_BG}")
        else:
            out.append(display_text(s), style=f"{text_color(colors[i])} on {colors[i]}")
    return out
