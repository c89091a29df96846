"""HNC loader: a hand-written fixture in the published JSON layout, and the exporter round trip."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from dualex.data.hnc import diff_spans, load_hnc
from dualex.errors import FileFormatError, InputWarning


def _entry(caption, label, typ, replaced, parent):
    return {
        "caption": caption,
        "label": label,
        "type": typ,
        "textual_label": "yes" if label else "no",
        "bboxes": {
            "11": {"bbox": {"x": 2, "y": 3, "w": 10, "h": 5}, "name": "dog"},
            "12": {"bbox": {"x": 20, "y": 20, "w": 4, "h": 4}, "name": "dog"},
            "13": {"bbox": {"x": 30, "y": 1, "w": 5, "h": 9}, "name": "fence"},
        },
        "replaced": replaced,
        "cpt_p_id": parent,
    }


def test_hnc_fixture(tmp_path):
    data = {
        "2354786": {
            "captions": {
                "p1": _entry("two dogs left of a white fence", 1, "positive", [], None),
                "n1": _entry("two dogs left of a black fence", 0, "attr", ["white", "black"], "p1"),
                "n2": _entry("two dogs right of a white fence", 0, "rel", ["left", "right"], "p1"),
            }
        }
    }
    (tmp_path / "hnc.json").write_text(json.dumps(data))
    Image.new("RGB", (40, 30)).save(tmp_path / "2354786.jpg")
    (s,) = list(load_hnc(tmp_path / "hnc.json", tmp_path))
    assert s.caption_id == "p1" and s.image_id == "2354786"
    assert [(s.caption[slice(*m.span)], m.label, len(m.boxes)) for m in s.mentions] == [
        ("dogs", "dog", 2),
        ("fence", "fence", 1),
    ]
    assert s.mentions[0].boxes[0] == (2.0, 3.0, 12.0, 8.0)
    n1, n2 = s.negatives
    assert (n1.kind, n1.caption[slice(*n1.span)], s.caption[slice(*n1.original_span)]) == (
        "attr",
        "black",
        "white",
    )
    assert (n2.caption[slice(*n2.span)], s.caption[slice(*n2.original_span)]) == ("right", "left")


def test_diff_spans_whole_words():
    a, b = "a red circle above a cross", "a red square above a cross"
    sa, sb = diff_spans(a, b)
    assert a[slice(*sa)] == "circle" and b[slice(*sb)] == "square"


def test_diff_spans_leave_out_punctuation():
    a, b = "a dog near a white fence.", "a dog near a black fence."
    sa, sb = diff_spans(a, b)
    assert a[slice(*sa)] == "white" and b[slice(*sb)] == "black"
    a, b = "a dog near the fence.", "a dog near the gate."
    sa, sb = diff_spans(a, b)
    assert a[slice(*sa)] == "fence" and b[slice(*sb)] == "gate", "no trailing full stop"
    a, b = "a dog (white)", "a dog (black)"
    sa, sb = diff_spans(a, b)
    assert (a[slice(*sa)], b[slice(*sb)]) == ("white", "black")
    sa, sb = diff_spans("a dog.", "a dog!")
    assert sa == sb == (2, 6), "a punctuation-only difference keeps the punctuation"


def _write(tmp_path, data, *images):
    (tmp_path / "hnc.json").write_text(json.dumps(data))
    for i in images:
        Image.new("RGB", (40, 30)).save(tmp_path / f"{i}.jpg")
    return tmp_path / "hnc.json"


def _bare(caption, label=1, **kw):
    return {"caption": caption, "label": label, "type": kw.pop("typ", "positive"), **kw}


@pytest.mark.parametrize("wrapped", [True, False])
def test_hnc_both_shapes_numeric_order_and_null_captions(tmp_path, wrapped):
    caps = {
        "10": _bare("a dog on the grass"),
        "2": _bare("a dog near a car"),
        "0": _bare("a cat on a bed"),
        "x1": _bare("a bird on a wire"),
        "7": _bare(None),  # a null caption: skipped, not the text "None"
        "8": _bare(None, 0, typ="attr", replaced=["red", "blue"], cpt_p_id="2"),
        "3": _bare("a dog near a bus", 0, typ="obj", replaced=["car", "bus"], cpt_p_id="2"),
    }
    data = {"10": {"captions": caps} if wrapped else caps, "9": {"captions": {}} if wrapped else {}}
    path = _write(tmp_path, data, "10", "9")
    with pytest.warns(InputWarning, match="skipped 2 caption entries"):
        samples = list(load_hnc(path, tmp_path))
    assert [s.caption_id for s in samples] == ["0", "2", "10", "x1"], "numeric, then string order"
    assert all(s.image_id == "10" for s in samples)
    assert "None" not in {s.caption for s in samples}
    (neg,) = samples[1].negatives
    assert neg.caption[slice(*neg.span)] == "bus" and neg.kind == "obj"


def test_hnc_images_in_numeric_order(tmp_path):
    data = {i: {"captions": {"0": _bare(f"image {i}")}} for i in ("10", "2", "n5")}
    path = _write(tmp_path, data, "10", "2", "n5")
    assert [s.image_id for s in load_hnc(path, tmp_path)] == ["2", "10", "n5"]


def test_hnc_negatives_in_numeric_order(tmp_path):
    caps = {"p": _bare("a red car")}
    for cid, colour in (("10", "blue"), ("2", "green"), ("1", "pink")):
        caps[cid] = _bare(f"a {colour} car", 0, typ="attr", replaced=["red", colour], cpt_p_id="p")
    (s,) = load_hnc(_write(tmp_path, {"1": {"captions": caps}}, "1"), tmp_path)
    assert [n.caption for n in s.negatives] == ["a pink car", "a green car", "a blue car"]


def test_hnc_entry_of_an_unknown_shape_is_a_file_format_error(tmp_path):
    path = _write(tmp_path, {"1": {"captions": ["a dog"]}}, "1")
    with pytest.raises(FileFormatError, match="'1'"):
        list(load_hnc(path, tmp_path))
    path = _write(tmp_path, {"1": {"0": "a dog"}}, "1")
    with pytest.raises(FileFormatError, match="'1'"):
        list(load_hnc(path, tmp_path))


@pytest.mark.parametrize(
    ("replaced", "neg_caption", "want_new", "want_old"),
    [
        # one pair; the negative's trailing full stop is not part of the span
        (["fence", "wall"], "a red car left of a wall.", "wall", "fence"),
        (["fence.", "wall."], "a red car left of a wall.", "wall", "fence"),
        # a list of pairs: one group per pair, the span runs from the first to the last
        ([["red", "blue"], ["fence", "wall"]], "a blue car left of a wall.", "blue car left of a wall", "red car left of a fence"),
        ([["red", "blue"]], "a blue car left of a fence.", "blue", "red"),
        # two parallel lists (originals, replacements), and words given as lists
        ([["red", "left"], ["blue", "right"]], "a blue car right of a fence.", "blue car right", "red car left"),
        ([[["red"], ["blue"]], [["car"], ["bus"]]], "a blue bus left of a fence.", "blue bus", "red car"),
        # pairs listed out of caption order
        ([["fence", "wall"], ["red", "blue"]], "a blue car left of a wall.", "blue car left of a wall", "red car left of a fence"),
        # replaced words that are not in the captions: the words where they differ
        (["square", "circle"], "a red car right of a fence.", "right", "left"),
        (None, "a red car left of a gate.", "gate", "fence"),
    ],
)  # fmt: skip
def test_hnc_replaced_spans(tmp_path, replaced, neg_caption, want_new, want_old):
    caps = {
        "0": _bare("a red car left of a fence."),
        "1": _bare(neg_caption, 0, typ="attr", replaced=replaced, cpt_p_id="0"),
    }
    (s,) = load_hnc(_write(tmp_path, {"5": {"captions": caps}}, "5"), tmp_path)
    (n,) = s.negatives
    assert n.caption[slice(*n.span)] == want_new
    assert s.caption[slice(*n.original_span)] == want_old


def test_hnc_bad_file(tmp_path):
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(FileFormatError):
        list(load_hnc(tmp_path / "bad.json", tmp_path))


def test_export_hnc_round_trip(tmp_path):
    from dualex.data.synthetic import export_hnc, generate

    samples = generate(4, seed=3)
    path = export_hnc(samples, tmp_path)
    loaded = list(load_hnc(path, tmp_path / "images"))
    assert sorted(s.caption_id for s in loaded) == sorted(s.caption_id for s in samples)
    by_id = {s.caption_id: s for s in loaded}
    for orig in samples:
        got = by_id[orig.caption_id]
        assert len(got.negatives) == len(orig.negatives)
        for a, b in zip(orig.negatives, got.negatives, strict=True):
            assert a.caption == b.caption and a.kind == b.kind
            assert b.caption[slice(*b.span)].strip() and b.original_span is not None
