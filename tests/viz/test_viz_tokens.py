"""Token highlighting: the caption's own characters, the shared colours, escaped HTML."""

from __future__ import annotations

import re

import pytest

from dualex.viz.colors import STOPS
from dualex.viz.tokens import pieces, token_labels, tokens_html, tokens_rich

EVIL = "<img src=x onerror=alert(1)> & 'quotes'"


def test_pieces_rebuild_the_caption_exactly(text_pos):
    text = text_pos("a  red circle, next to (the) square!")
    joined = "".join(s for s, _ in pieces(text))
    assert joined == text.text, "gaps and tokens together give back the caption"
    with_special = [s for s, i in pieces(text, include_special=True) if i is not None]
    assert with_special[0] == "<start>" and with_special[-1] == "<end>"
    assert token_labels(text)[1:3] == ["a", "red"]


def test_html_is_escaped_and_coloured(text_pos):
    text = text_pos(EVIL)
    scores = [0.0] * len(text)
    scores[1], scores[3] = 2.0, -2.0  # "<" strongly positive, "src" strongly negative
    out = tokens_html(text, scores)
    assert "<img" not in out and "onerror=alert(1)>" not in out, "user text is escaped"
    assert "&lt;" in out and "&amp;" in out
    assert re.search(rf'data-index="1"[^>]*background:{STOPS[-1]}', out), "max positive: red end"
    assert re.search(rf'data-index="3"[^>]*background:{STOPS[0]}', out), "max negative: blue end"
    assert 'data-index="0"' not in out, "special tokens hidden unless asked for"
    assert 'data-index="0"' in tokens_html(text, scores, include_special=True)


def test_shared_range_and_positive_only(text_pos):
    text = text_pos("red circle")
    out = tokens_html(text, [0.0, 1.0, -1.0, 0.0], vmax=4.0)
    assert STOPS[-1] not in out, "with a wider shared range the max is not saturated"
    pos = tokens_html(text, [0.0, 1.0, -1.0, 0.0], positive_only=True)
    assert re.search(rf'data-index="2"[^>]*background:{STOPS[len(STOPS) // 2]}', pos)


def test_rich_rendering_matches_the_caption_and_colours(text_pos):
    text = text_pos("a red circle")
    rich_text = tokens_rich(text, [9.0, 1.0, 0.0, -1.0, 9.0])
    assert rich_text.plain == "a red circle", "special tokens excluded, spacing kept"
    styles = [str(span.style) for span in rich_text.spans]
    assert any(STOPS[-1] in s for s in styles) and any(STOPS[0] in s for s in styles), styles


def test_wrong_number_of_scores_is_an_error(text_pos):
    with pytest.raises(ValueError, match="3 scores for 5 tokens"):
        tokens_html(text_pos("a red circle"), [0.0, 1.0, 2.0])
