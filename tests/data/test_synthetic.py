"""Tests of the synthetic shapes world: determinism, ground truth, negatives, exporters."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dualex.data import Negative, Sample
from dualex.data.synthetic import (
    COLOURS,
    DOMAINS,
    SHAPES,
    WorldConfig,
    export_coco,
    export_hnc,
    generate,
    iter_samples,
    make_scene,
)

RELATION_PAIRS = {("left", "right"), ("above", "below"), ("over", "under")}


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x")) else "s")


def _fingerprint(s: Sample) -> tuple:
    return (
        s.image.tobytes(),
        s.caption,
        tuple(s.mentions),
        tuple(s.negatives),
        s.image_id,
        s.caption_id,
        json.dumps(s.meta, sort_keys=True),
    )


def _mention_object_indices(s: Sample) -> list[list[int]]:
    return [m["objects"] for m in s.meta["mentions"]]


@pytest.fixture(scope="module")
def many() -> list[Sample]:
    return generate(400, seed=11, domain="mixed")


# ------------------------------------------------------------------------------------------
# determinism


@pytest.mark.parametrize("domain", [*DOMAINS, "mixed"])
def test_same_seed_gives_identical_samples(domain: str) -> None:
    a = generate(12, seed=5, domain=domain)
    b = generate(12, seed=5, domain=domain)
    assert len(a) == len(b) == 12
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert _fingerprint(x) == _fingerprint(y), f"sample {i} differs between two runs"


def test_different_seed_gives_different_samples() -> None:
    a = generate(12, seed=5)
    b = generate(12, seed=6)
    same_images = sum(x.image.tobytes() == y.image.tobytes() for x, y in zip(a, b, strict=True))
    same_captions = sum(x.caption == y.caption for x, y in zip(a, b, strict=True))
    assert same_images == 0, f"{same_images}/12 images identical across seeds"
    assert same_captions < 6, f"{same_captions}/12 captions identical across seeds"
    assert {x.image_id for x in a}.isdisjoint({y.image_id for y in b}), "image ids collide"


def test_samples_depend_only_on_seed_and_index() -> None:
    full = generate(8, seed=3, domain="textured")
    head = generate(3, seed=3, domain="textured")
    tail = list(iter_samples(4, seed=3, domain="textured", start=4))
    assert [_fingerprint(s) for s in head] == [_fingerprint(s) for s in full[:3]]
    assert [_fingerprint(s) for s in tail] == [_fingerprint(s) for s in full[4:]]
    assert len({s.image_id for s in full}) == 8, "image ids are not unique"


# ------------------------------------------------------------------------------------------
# ground truth: boxes and spans


def test_exact_colour_pixels_lie_in_their_boxes() -> None:
    for s in generate(60, seed=2, domain="plain", antialias=False):
        arr = np.asarray(s.image)
        objects = s.meta["objects"]
        for colour in {o["colour"] for o in objects}:
            hit = np.all(arr == np.array(COLOURS[colour], dtype=np.uint8), axis=-1)
            inside = np.zeros_like(hit)
            for o in objects:
                if o["colour"] == colour:
                    x0, y0, x1, y1 = (int(v) for v in o["box"])
                    inside[y0:y1, x0:x1] = True
            stray = int((hit & ~inside).sum())
            assert stray == 0, f"{s.image_id}: {stray} {colour} pixels outside the {colour} boxes"
            assert hit.sum() > 0, f"{s.image_id}: no {colour} pixels drawn"


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("domain", DOMAINS)
def test_boxes_are_tight_on_masks(domain: str, antialias: bool) -> None:
    for index in range(25):
        scene = make_scene(9, index, domain=domain, config=WorldConfig(antialias=antialias))
        masks = scene.masks
        assert masks.shape == (len(scene.objects), 64, 64)
        assert masks.min() >= 0.0 and masks.max() <= 1.0
        if not antialias:
            assert set(np.unique(masks).tolist()) <= {0.0, 1.0}, "aliased masks must be binary"
        arr = np.asarray(scene.image)
        for k, obj in enumerate(scene.objects):
            ys, xs = np.nonzero(masks[k] > 0)
            tight = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert tuple(obj.box) == tuple(float(v) for v in tight), (
                f"scene {index} object {k}: box {obj.box} != mask extent {tight}"
            )
            assert obj.area == int((masks[k] >= 0.5).sum())
            w, h = obj.box[2] - obj.box[0], obj.box[3] - obj.box[1]
            assert min(w, h) >= 12, f"object {obj} is smaller than 1.5 patches of 8 px"
            if not antialias:
                full = masks[k] == 1.0
                colour = np.array(COLOURS[obj.colour], dtype=np.uint8)
                assert np.all(arr[full] == colour), f"object {k} pixels not exactly {obj.colour}"


def test_mentions_name_and_locate_their_objects(many: list[Sample]) -> None:
    for s in many:
        objects = s.meta["objects"]
        assert s.mentions, f"{s.caption_id} has no mention"
        for m, idx in zip(s.mentions, _mention_object_indices(s), strict=True):
            text = s.caption[m.span[0] : m.span[1]]
            words = text.split()
            first = objects[idx[0]]
            assert m.label == first["shape"]
            assert first["colour"] in words, f"{text!r} lacks colour {first['colour']!r}"
            noun = first["shape"] if len(idx) == 1 else _plural(first["shape"])
            assert words[-1] == noun, f"{text!r} should end with {noun!r}"
            assert text == text.strip() and not text.startswith(("a ", "an ")), text
            assert len(m.boxes) == len(idx), f"{text!r}: {len(m.boxes)} boxes for {len(idx)}"
            for box, k in zip(m.boxes, idx, strict=True):
                assert list(box) == objects[k]["box"]
                x0, y0, x1, y1 = box
                assert 0 <= x0 < x1 <= s.image.width and 0 <= y0 < y1 <= s.image.height
            # a mention refers to *every* object of that colour and shape, so it is unambiguous
            same = [
                k
                for k, o in enumerate(objects)
                if (o["colour"], o["shape"]) == (first["colour"], first["shape"])
            ]
            assert sorted(idx) == same, f"{text!r} refers to {idx}, scene has {same}"
            if len(idx) > 1:
                assert words[0] in {"two", "three", "four"}, text
            size_words = [w for w in words if w in ("small", "large")]
            for w in size_words:
                assert all(objects[k]["size"] == w for k in idx), f"{text!r}: wrong size word"


def test_relation_captions_are_true(many: list[Sample]) -> None:
    rel = [s for s in many if s.meta["template"] == "relation"]
    assert len(rel) > 40, f"only {len(rel)} relational captions in 400"
    for s in rel:
        r = s.meta["relation"]
        a, b = s.meta["objects"][r["subject"]], s.meta["objects"][r["object"]]
        assert r["words"] in s.caption
        axis = 0 if r["axis"] == "x" else 1
        forward = r["words"] in ("left of", "to the left of", "on the left of", "above", "over")
        assert forward != r["swapped"], r
        if forward:
            assert a["centre"][axis] < b["centre"][axis], f"{s.caption!r} is false: {a} vs {b}"
        else:
            assert a["centre"][axis] > b["centre"][axis], f"{s.caption!r} is false: {a} vs {b}"
    # both phrases of a relation occur in true captions (else the words alone give a relation
    # negative away)
    swapped = Counter(s.meta["relation"]["swapped"] for s in rel)
    assert min(swapped.values()) > 0.3 * len(rel), swapped


def test_captions_name_every_object(many: list[Sample]) -> None:
    for s in many:
        named = sorted(k for ph in s.meta["mentions"] for k in ph["objects"])
        assert named == list(range(len(s.meta["objects"]))), (s.caption, s.meta["objects"])
    partial = generate(200, seed=11, domain="plain", mention_all=False)
    assert any(sum(len(m.boxes) for m in s.mentions) < len(s.meta["objects"]) for s in partial), (
        "mention_all=False should leave some objects unnamed"
    )


def test_vocabulary_and_variety(many: list[Sample]) -> None:
    objects = [o for s in many for o in s.meta["objects"]]
    shapes = Counter(o["shape"] for o in objects)
    colours = Counter(o["colour"] for o in objects)
    sizes = Counter(o["size"] for o in objects)
    counts = Counter(len(s.meta["objects"]) for s in many)
    assert len(shapes) >= 8 and set(shapes) == set(SHAPES), shapes
    assert len(colours) >= 6, colours
    assert set(sizes) == {"small", "large"}, sizes
    assert set(counts) == {1, 2, 3, 4}, counts
    assert len({s.meta["domain"] for s in many}) == 3, "mixed should use every domain"
    assert any(len(m.boxes) >= 2 for s in many for m in s.mentions), "no counted mention"
    assert len({s.caption for s in many}) > 300, "captions are not varied"
    prefixes = Counter(s.caption.split()[0] for s in many)
    assert len(prefixes) >= 4, prefixes


def test_meta_is_json_serialisable(many: list[Sample]) -> None:
    for s in many[:50]:
        meta = json.loads(json.dumps(s.meta))
        assert meta["domain"] in DOMAINS
        assert meta["seed"] == 11
        for o in meta["objects"]:
            assert set(o) >= {"shape", "colour", "size", "box"}


# ------------------------------------------------------------------------------------------
# domains


def test_domains_render_differently_with_the_same_objects() -> None:
    by_domain = {d: generate(6, seed=4, domain=d) for d in DOMAINS}
    for i in range(6):
        captions = {d: by_domain[d][i].caption for d in DOMAINS}
        assert len(set(captions.values())) == 1, f"sample {i}: captions differ {captions}"
        images = {d: by_domain[d][i].image.tobytes() for d in DOMAINS}
        assert len(set(images.values())) == 3, f"sample {i}: two domains render the same image"
        assert by_domain["plain"][i].meta["objects"] == by_domain["cluttered"][i].meta["objects"]

    def background_std(s: Sample) -> float:
        arr = np.asarray(s.image).astype(np.float64)
        keep = np.ones(arr.shape[:2], dtype=bool)
        for o in s.meta["objects"]:
            x0, y0, x1, y1 = (int(v) for v in o["box"])
            keep[y0:y1, x0:x1] = False
        return float(arr[keep].std(axis=0).mean())

    plain = np.mean([background_std(s) for s in by_domain["plain"]])
    textured = np.mean([background_std(s) for s in by_domain["textured"]])
    assert plain < 1.0, f"plain backgrounds should be flat, std {plain:.2f}"
    assert textured > 5.0, f"textured backgrounds should vary, std {textured:.2f}"


def test_backgrounds_keep_object_colours_recognisable() -> None:
    for s in generate(80, seed=8, domain="plain"):
        bg = np.array(s.meta["background"]["colour"])
        for name, rgb in COLOURS.items():
            dist = float(np.linalg.norm(bg - np.array(rgb)))
            assert dist >= 90.0, f"background {bg} too close to {name} ({dist:.0f})"
    palette = np.array([COLOURS[c] for c in WorldConfig().colours], dtype=np.float64)
    for s in generate(40, seed=8, domain="textured"):
        arr = np.asarray(s.image).astype(np.float64)
        keep = np.ones(arr.shape[:2], dtype=bool)
        for o in s.meta["objects"]:
            x0, y0, x1, y1 = (int(v) for v in o["box"])
            keep[y0:y1, x0:x1] = False
        dist = np.linalg.norm(arr[keep][:, None, :] - palette[None], axis=-1).min()
        assert dist >= 60.0, f"{s.image_id}: a texture pixel is {dist:.0f} from an object colour"


# ------------------------------------------------------------------------------------------
# negatives


def _check_negative(s: Sample, neg: Negative) -> None:
    (o0, o1), (n0, n1) = neg.original_span, neg.span
    assert neg.caption != s.caption
    assert neg.caption[:n0] == s.caption[:o0], f"{neg.kind}: prefix differs: {neg.caption!r}"
    assert neg.caption[n1:] == s.caption[o1:], f"{neg.kind}: suffix differs: {neg.caption!r}"
    old, new = s.caption[o0:o1], neg.caption[n0:n1]
    assert old and new and old != new, (old, new)
    assert new == new.strip() and old == old.strip(), f"span is not word-aligned: {new!r}"
    assert n0 == 0 or not neg.caption[n0 - 1].isalnum(), f"span starts mid-word: {new!r}"
    assert n1 == len(neg.caption) or not neg.caption[n1].isalnum(), f"ends mid-word: {new!r}"


def _mention_for(s: Sample, span: tuple[int, int]) -> int:
    """Index of the mention that the original span overlaps (article may precede it)."""
    for i, m in enumerate(s.mentions):
        if span[0] < m.span[1] and m.span[0] < span[1]:
            return i
    raise AssertionError(f"negative span {span} touches no mention of {s.caption!r}")


def test_negatives_differ_exactly_in_their_span(many: list[Sample]) -> None:
    kinds = Counter()
    for s in many:
        got = Counter(n.kind for n in s.negatives)
        assert got["colour"] == got["shape"] == got["absent"] == 1, (s.caption, got)
        assert got["relation"] == (1 if s.meta["template"] == "relation" else 0), got
        kinds.update(got)
        for neg in s.negatives:
            _check_negative(s, neg)
    assert kinds["relation"] > 40, kinds


def test_negatives_are_false_for_the_scene(many: list[Sample]) -> None:
    for s in many:
        objects = s.meta["objects"]
        present = {(o["colour"], o["shape"]) for o in objects}
        for neg in s.negatives:
            new_words = neg.caption[neg.span[0] : neg.span[1]].split()
            old_words = s.caption[neg.original_span[0] : neg.original_span[1]].split()
            if neg.kind == "relation":
                pair = (old_words[-1], new_words[-1])
                assert tuple(sorted(pair)) in RELATION_PAIRS, f"bad relation swap {pair}"
                assert old_words[:-1] == new_words[:-1]
                continue
            m = _mention_for(s, neg.original_span)
            idx = _mention_object_indices(s)[m]
            shape, colour = objects[idx[0]]["shape"], objects[idx[0]]["colour"]
            if neg.kind == "colour":
                new_colour = next(w for w in new_words if w in COLOURS)
                assert new_colour != colour
                assert (new_colour, shape) not in present, f"{neg.caption!r} is true"
            elif neg.kind == "shape":
                new_shape = next(sh for sh in SHAPES if new_words[-1] in (sh, _plural(sh)))
                assert new_shape != shape
                assert (colour, new_shape) not in present, f"{neg.caption!r} is true"
            elif neg.kind == "absent":
                new_colour = next(w for w in new_words if w in COLOURS)
                new_shape = next(sh for sh in SHAPES if new_words[-1] in (sh, _plural(sh)))
                assert new_colour not in {o["colour"] for o in objects}
                assert new_shape not in {o["shape"] for o in objects}
            else:
                raise AssertionError(f"unexpected kind {neg.kind}")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), domain=st.sampled_from([*DOMAINS, "mixed"]))
def test_invariants_hold_for_any_seed(seed: int, domain: str) -> None:
    for s in generate(3, seed=seed, domain=domain):
        assert s.image.size == (64, 64) and s.image.mode == "RGB"
        assert 1 <= len(s.meta["objects"]) <= 4
        for m in s.mentions:
            assert 0 <= m.span[0] < m.span[1] <= len(s.caption)
            assert s.caption[m.span[0] : m.span[1]].split()[-1].startswith(m.label)
        for neg in s.negatives:
            _check_negative(s, neg)


# ------------------------------------------------------------------------------------------
# options


def test_options_change_the_world() -> None:
    singles = generate(30, seed=1, max_objects=1)
    assert all(len(s.meta["objects"]) == 1 for s in singles)
    multi = generate(5, seed=1, captions_per_image=3)
    assert len(multi) == 15
    assert len({s.image_id for s in multi}) == 5
    assert len({s.caption_id for s in multi}) == 15
    big = generate(3, seed=1, image_size=128, domain="cluttered")
    assert all(s.image.size == (128, 128) for s in big)
    no_neg = generate(5, seed=1, negative_kinds=())
    assert all(not s.negatives for s in no_neg)
    few = generate(40, seed=1, shapes=("circle", "star"), colours=("red", "blue"))
    assert {o["shape"] for s in few for o in s.meta["objects"]} <= {"circle", "star"}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"domain": "space"}, ValueError),
        ({"shapes": ("blob",)}, ValueError),
        ({"colours": ("red", "mauve")}, ValueError),
        ({"min_objects": 3, "max_objects": 2}, ValueError),
        ({"image_size": 16}, ValueError),
        ({"no_such_option": 1}, TypeError),
    ],
)
def test_bad_options_are_rejected(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        generate(1, seed=0, **kwargs)


# ------------------------------------------------------------------------------------------
# exporters


def test_coco_export_round_trips_through_pycocotools(tmp_path: Path) -> None:
    pycocotools_coco = pytest.importorskip("pycocotools.coco")
    samples = generate(15, seed=21, domain="mixed", captions_per_image=2)
    paths = export_coco(samples, tmp_path)
    coco = pycocotools_coco.COCO(str(paths["instances"]))
    caps = pycocotools_coco.COCO(str(paths["captions"]))

    by_image: dict[str, Sample] = {}
    for s in samples:
        by_image.setdefault(s.image_id, s)
    assert len(coco.getImgIds()) == len(by_image) == 15
    n_objects = sum(len(s.meta["objects"]) for s in by_image.values())
    assert len(coco.getAnnIds()) == n_objects
    assert len(caps.getAnnIds()) == len(samples) == 30
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES)

    for img in coco.loadImgs(coco.getImgIds()):
        s = by_image[img["synthetic_id"]]
        assert (img["width"], img["height"]) == s.image.size
        with Image.open(tmp_path / "images" / img["file_name"]) as f:
            assert f.convert("RGB").tobytes() == s.image.tobytes(), "image bytes changed"
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        got = sorted(
            (coco.loadCats(a["category_id"])[0]["name"], *a["bbox"], a["iscrowd"]) for a in anns
        )
        want = sorted(
            (o["shape"], o["box"][0], o["box"][1], o["box"][2] - o["box"][0],
             o["box"][3] - o["box"][1], 0)
            for o in s.meta["objects"]
        )  # fmt: skip
        assert got == want
        assert all(a["area"] > 0 for a in anns)
        texts = {a["caption"] for a in caps.loadAnns(caps.getAnnIds(imgIds=[img["id"]]))}
        assert texts == {x.caption for x in samples if x.image_id == s.image_id}
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_hnc_export_has_the_documented_structure(tmp_path: Path) -> None:
    samples = generate(10, seed=13, domain="plain")
    path = export_hnc(samples, tmp_path)
    data = json.loads(path.read_text())
    assert set(data) == {s.image_id for s in samples}
    for s in samples:
        entry = data[s.image_id]
        assert (tmp_path / "images" / entry["file_name"]).is_file()
        cpts = entry["captions"]
        assert len(cpts) == 1 + len(s.negatives)
        pos = cpts[s.caption_id]
        assert pos["caption"] == s.caption and pos["label"] == 1 and pos["cpt_p_id"] is None
        assert pos["type"] == "positive" and pos["textual_label"] == "yes"
        mentioned = {k for idx in _mention_object_indices(s) for k in idx}
        assert set(pos["bboxes"]) == {str(k) for k in mentioned}
        for obj_id, b in pos["bboxes"].items():
            o = s.meta["objects"][int(obj_id)]
            assert b["name"] == o["shape"]
            assert [b["bbox"][k] for k in "xywh"] == [
                o["box"][0], o["box"][1], o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]
            ]  # fmt: skip
        negs = {k: v for k, v in cpts.items() if v["label"] == 0}
        assert len(negs) == len(s.negatives)
        for neg in s.negatives:
            match = [v for v in negs.values() if v["caption"] == neg.caption]
            assert len(match) == 1, neg.caption
            v = match[0]
            assert v["type"] == neg.kind and v["textual_label"] == "no"
            assert v["cpt_p_id"] == s.caption_id
            assert v["replaced"] == [
                s.caption[neg.original_span[0] : neg.original_span[1]],
                neg.caption[neg.span[0] : neg.span[1]],
            ]
            assert v["bboxes"] == pos["bboxes"]


def test_caption_holds_reads_the_ground_truth(many: list[Sample]) -> None:
    from dualex.data.synthetic import caption_holds

    size = many[0].image.width
    for s in many:
        assert caption_holds(s, s.meta["objects"], size), s.caption
    s = next(s for s in many if s.meta["template"] == "list" and len(s.meta["objects"]) < 4)
    objs = s.meta["objects"]
    moved = [dict(o, centre=[size - o["centre"][0], o["centre"][1]]) for o in objs]
    assert caption_holds(s, moved, size), "a list caption does not depend on positions"
    kinds = {(o["colour"], o["shape"]) for o in objs}
    colour = next(c for c in WorldConfig().colours if all((c, "star") != k for k in kinds))
    extra = dict(objs[0], colour=colour, shape="star")
    assert not caption_holds(s, [*objs, extra], size), "an unnamed object makes it incomplete"
    assert not caption_holds(s, objs[1:], size), "a named object is missing"
    rel = next(s for s in many if s.meta["template"] == "relation")
    r = rel.meta["relation"]
    objs = [dict(o) for o in rel.meta["objects"]]
    a, b = objs[r["subject"]], objs[r["object"]]
    a["centre"], b["centre"] = b["centre"], a["centre"]
    assert not caption_holds(rel, objs, size), "swapping the related objects makes it false"


def test_image_references_render_the_same_image_again():
    """Samples are indexed with a lazy ImageRef; a fresh reference re-renders identical pixels."""
    from dualex.data.types import ImageRef

    samples = generate(4, seed=8, domain="mixed", captions_per_image=2, max_objects=2)
    for s in samples:
        ref = s.image_ref
        assert ref is not None and ref.loaded, "the rendered scene is cached on the reference"
        again = ImageRef(ref.path)
        assert not again.loaded
        assert again.open().tobytes() == s.image.tobytes()
    assert samples[0].image_ref is samples[1].image_ref, "captions of an image share its reference"
    assert samples[0].image_ref != samples[2].image_ref
