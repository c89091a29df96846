"""HNC loader: a hand-written fixture in the published JSON layout, and the exporter round trip."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from dualex.data.hnc import diff_spans, load_hnc
from dualex.errors import FileFormatError


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
