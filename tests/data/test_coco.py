"""COCO loader: a hand-written captions/instances fixture in the official layout."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from dualex.data.coco import find_annotation_files, find_mentions, load_coco
from dualex.data.coco_synonyms import COCO_SYNONYMS, word_forms
from dualex.errors import FileFormatError


def _write_coco(root):
    (root / "val").mkdir()
    (root / "annotations").mkdir()
    Image.new("RGB", (64, 48), "white").save(root / "val" / "000000000001.jpg")
    Image.new("RGB", (32, 32), "black").save(root / "val" / "000000000002.jpg")
    images = [
        {"id": 1, "file_name": "000000000001.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "000000000002.jpg", "width": 32, "height": 32},
    ]
    cats = [
        {"id": 1, "name": "person", "supercategory": "person"},
        {"id": 18, "name": "dog", "supercategory": "animal"},
        {"id": 88, "name": "teddy bear", "supercategory": "indoor"},
        {"id": 23, "name": "bear", "supercategory": "animal"},
    ]
    inst = [
        {
            "id": 10,
            "image_id": 1,
            "category_id": 18,
            "bbox": [1, 2, 10, 20],
            "area": 200,
            "iscrowd": 0,
        },
        {
            "id": 11,
            "image_id": 1,
            "category_id": 18,
            "bbox": [30, 5, 8, 8],
            "area": 64,
            "iscrowd": 0,
        },
        {
            "id": 12,
            "image_id": 1,
            "category_id": 1,
            "bbox": [40, 10, 20, 30],
            "area": 600,
            "iscrowd": 0,
        },
        {
            "id": 13,
            "image_id": 1,
            "category_id": 1,
            "bbox": [0, 0, 64, 48],
            "area": 3000,
            "iscrowd": 1,
        },
        {
            "id": 14,
            "image_id": 2,
            "category_id": 88,
            "bbox": [4, 4, 10, 10],
            "area": 100,
            "iscrowd": 0,
        },
        {
            "id": 15,
            "image_id": 2,
            "category_id": 23,
            "bbox": [20, 20, 5, 5],
            "area": 25,
            "iscrowd": 0,
        },
    ]
    caps = [
        {"id": 101, "image_id": 1, "caption": "Two puppies play next to a man."},
        {"id": 100, "image_id": 1, "caption": "A dog and a cat."},
        {"id": 102, "image_id": 2, "caption": "A teddy bear beside a small bear"},
    ]
    info = {"description": "fixture"}
    (root / "annotations" / "captions_val2017.json").write_text(
        json.dumps({"info": info, "images": images, "annotations": caps})
    )
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"info": info, "images": images, "annotations": inst, "categories": cats})
    )


def test_coco_fixture_mentions_boxes_and_order(tmp_path):
    _write_coco(tmp_path)
    caps, inst = find_annotation_files(tmp_path / "annotations")
    samples = list(load_coco(tmp_path / "val", caps, inst))
    assert [s.caption_id for s in samples] == ["100", "101", "102"], "captions in id order"
    a, b, c = samples
    assert a.image.size == (64, 48)
    # "cat" has no instance in image 1: no mention; "dog" links both dog boxes (xywh -> xyxy)
    assert [(a.caption[slice(*m.span)], m.label) for m in a.mentions] == [("dog", "dog")]
    assert a.mentions[0].boxes == ((1.0, 2.0, 11.0, 22.0), (30.0, 5.0, 38.0, 13.0))
    # synonyms and plurals; crowd boxes are left out
    assert [(b.caption[slice(*m.span)], m.label) for m in b.mentions] == [
        ("puppies", "dog"),
        ("man", "person"),
    ]
    assert b.mentions[1].boxes == ((40.0, 10.0, 60.0, 40.0),)
    # the longest match wins: "teddy bear" is one mention, the lone "bear" another
    assert [(c.caption[slice(*m.span)], m.label) for m in c.mentions] == [
        ("teddy bear", "teddy bear"),
        ("bear", "bear"),
    ]


def test_find_mentions_word_boundaries():
    boxes = {"car": [(0, 0, 1, 1)], "cat": [(0, 0, 2, 2)]}
    ms = find_mentions("A scary cartoon of cats near a car", boxes)
    assert [m.label for m in ms] == ["cat", "car"], "no match inside 'scary' or 'cartoon'"


def test_synonym_table_covers_80_classes():
    assert len(COCO_SYNONYMS) == 80
    assert all(name in syns or name == "sports ball" for name, syns in COCO_SYNONYMS.items())
    assert word_forms("bus") == ("bus", "buses")
    assert word_forms("hot dog") == ("hot dog", "hot dogs")


def test_annotation_folder_errors(tmp_path):
    with pytest.raises(FileFormatError):
        find_annotation_files(tmp_path / "missing")
    (tmp_path / "captions_a.json").write_text("{}")
    with pytest.raises(FileFormatError, match="exactly one"):
        find_annotation_files(tmp_path)


def test_synthetic_export_round_trip(tmp_path):
    from dualex.data.synthetic import export_coco, generate

    samples = generate(3, seed=5)
    paths = export_coco(samples, tmp_path)
    loaded = list(load_coco(paths["images"], paths["captions"], paths["instances"]))
    assert [s.caption for s in loaded] == [s.caption for s in samples]
    for orig, got in zip(samples, loaded, strict=True):
        want = {m.label for m in orig.mentions}
        assert {m.label for m in got.mentions} == want, orig.caption


def _said(caption, boxes):
    return [(caption[slice(*m.span)], m.label) for m in find_mentions(caption, boxes)]


BALL = {"person": [(0, 0, 9, 9)], "sports ball": [(5, 5, 6, 6)]}


@pytest.mark.parametrize(
    ("caption", "want"),
    [
        # a ball word modifying a following noun is not a ball
        ("A baseball player throwing a pitch", [("player", "person")]),
        ("a baseball pitcher is throwing the ball", [("pitcher", "person"), ("ball", "sports ball")]),
        ("A batter at the plate during a baseball game.", [("batter", "person")]),
        ("the Camden baseball team", []),
        ("a baseball field at night", []),
        ("a man in a baseball cap", [("man", "person")]),
        ("a football stadium", []),
        ("the ball boy", [("boy", "person")]),
        # a longer phrase of a category without a box still owns its words
        ("a man holding a baseball bat", [("man", "person")]),
        ("a catcher with a baseball glove", [("catcher", "person")]),
        # true hits stay
        ("A batter prepares to hit a baseball that has just been thrown.",
         [("batter", "person"), ("baseball", "sports ball")]),
        ("A pitcher throws a baseball to a batter.",
         [("pitcher", "person"), ("baseball", "sports ball"), ("batter", "person")]),
        ("a man kicks the ball", [("man", "person"), ("ball", "sports ball")]),
        ("two baseballs, one ball", [("baseballs", "sports ball"), ("ball", "sports ball")]),
        ("a tennis ball on the court", [("tennis ball", "sports ball")]),
        # a plural is never a modifier
        ("footballs stand in a row", [("footballs", "sports ball")]),
        # words of one thing join into one mention
        ("A male tennis player reaching up", [("male tennis player", "person")]),
    ],
)  # fmt: skip
def test_modifiers_are_not_mentions(caption, want):
    assert _said(caption, BALL) == want


def test_compound_rule_on_other_categories():
    boxes = {
        "pizza": [(0, 0, 1, 1)],
        "dog": [(0, 0, 2, 2)],
        "giraffe": [(0, 0, 3, 3)],
        "person": [(0, 0, 4, 4)],
        "bus": [(0, 0, 5, 5)],
        "train": [(0, 0, 6, 6)],
    }
    assert _said("a pizza box on a table", boxes) == []
    assert _said("a pizza pie and a pizza", boxes) == [("pizza pie", "pizza"), ("pizza", "pizza")]
    assert _said("a hot dog on a plate", boxes) == [], "no dog inside 'hot dog'"
    assert _said("a baby giraffe", boxes) == [("giraffe", "giraffe")], "the baby is the giraffe"
    assert _said("people at the bus stop", boxes) == [("people", "person")]
    assert _said("the bus stops at the corner", boxes) == [("bus", "bus")], "'stops' as a verb"
    assert _said("trains on the train tracks", boxes) == [("trains", "train")]
    assert _said("a pit bull dog", boxes) == [("pit bull dog", "dog")]
    assert _said("a dog, a pizza", boxes) == [("dog", "dog"), ("pizza", "pizza")]


def test_new_synonyms():
    boxes = {"dog": [(0, 0, 1, 1)], "person": [(1, 1, 2, 2)]}
    assert _said("A black poodle is leashed to a fire hydrant.", boxes) == [("poodle", "dog")]
    assert _said("A baker is working in the kitchen", boxes) == [("baker", "person")]
    assert _said("a male is wearing white", boxes) == [("male", "person")]
    assert _said("two firemen and a policeman", boxes) == [
        ("firemen", "person"),
        ("policeman", "person"),
    ]
    assert word_forms("policeman") == ("policeman", "policemen")
    assert word_forms("german") == ("german", "germans")


def test_generic_words_link_to_the_categories_present():
    car, bus, truck = (0, 0, 1, 1), (2, 2, 3, 3), (4, 4, 5, 5)
    caption = "a number of vehicles driving down a road"
    (m,) = find_mentions(caption, {"car": [car], "bus": [bus], "person": [(9, 9, 10, 10)]})
    assert (caption[slice(*m.span)], m.label, m.boxes) == ("vehicles", "vehicle", (car, bus))
    (m,) = find_mentions(caption, {"truck": [truck]})
    assert (m.label, m.boxes) == ("truck", (truck,)), "one category present: its own label"
    assert find_mentions(caption, {"person": [car]}) == [], "no vehicle box: no mention"


@pytest.mark.parametrize(
    ("caption", "boxes", "want"),
    [
        ("a glass and a plate", {"cup": [(0, 0, 1, 1)]}, [("glass", "cup")]),
        ("a glass and a plate", {"wine glass": [(0, 0, 1, 1)]}, [("glass", "wine glass")]),
        ("a glass and a plate", {"wine glass": [(0, 0, 1, 1)], "cup": [(1, 1, 2, 2)]},
         [("glass", "glass")]),
        ("a glass and a plate", {"dining table": [(0, 0, 1, 1)]}, []),
        ("a sliding glass door", {"cup": [(0, 0, 1, 1)]}, []),
        ("a glass bowl", {"cup": [(0, 0, 1, 1)], "bowl": [(1, 1, 2, 2)]}, [("bowl", "bowl")]),
        ("a man wearing glasses", {"cup": [(0, 0, 1, 1)], "person": [(1, 1, 2, 2)]},
         [("man", "person")]),
        ("two wine glasses", {"cup": [(0, 0, 1, 1)]}, []),
    ],
)  # fmt: skip
def test_glass_only_where_a_glass_or_cup_box_exists(caption, boxes, want):
    assert _said(caption, boxes) == want


def test_other_class_names_still_match_themselves():
    boxes = {"fence": [(0, 0, 1, 1)], "man": [(1, 1, 2, 2)], "glass": [(2, 2, 3, 3)]}
    assert _said("two men by a glass fence", boxes) == [("men", "man"), ("fence", "fence")]
    assert _said("a man holds a glass", boxes) == [("man", "man"), ("glass", "glass")]
