"""2×2 grids of FIxLIP's pointing game: composition, specs, and a user's ImageNet-style folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dualex.data.grid import EMPTY_RGB, iter_folder_grids, iter_synthetic_grids, quadrant_box
from dualex.data.sources import parse_data_spec
from dualex.errors import FileFormatError, SettingError


def test_synthetic_grids_quadrants_spans_and_counts():
    grids = list(iter_synthetic_grids(8, seed=3, tile=32))
    assert [len(g.mentions) for g in grids] == [1, 2, 3, 4, 1, 2, 3, 4]
    for g in grids:
        img = np.asarray(g.image)
        assert img.shape == (64, 64, 3)
        words = g.caption.split(" ")
        assert len(set(words)) == len(words) == len(g.mentions)  # distinct classes
        filled = set(g.meta["quadrants"])
        for m, q in zip(g.mentions, g.meta["quadrants"], strict=True):
            assert g.caption[slice(*m.span)] == m.label  # the span is the phrase
            assert m.boxes == (quadrant_box(q, 32),)
            x0, y0, x1, y1 = (int(v) for v in m.boxes[0])
            assert not (img[y0:y1, x0:x1] == EMPTY_RGB).all(axis=-1).all()  # something drawn
        for q in set(range(4)) - filled:  # empty quadrants are flat grey
            x0, y0, x1, y1 = (int(v) for v in quadrant_box(q, 32))
            assert (img[y0:y1, x0:x1] == EMPTY_RGB).all()
    again = list(iter_synthetic_grids(8, seed=3, tile=32))
    assert [g.caption for g in again] == [g.caption for g in grids]  # deterministic
    assert np.array_equal(np.asarray(again[3].image), np.asarray(grids[3].image))
    fresh = next(iter_synthetic_grids(1, seed=3, tile=32))
    assert fresh.image_ref is not None and not fresh.image_ref.loaded  # indexed, not decoded


def test_grid_specs_parse_and_refuse_bad_options(tmp_path):
    src = parse_data_spec("synthetic-grid:seed=2,n=5,tile=32").check()
    assert src.total == 5 and len(list(src.samples())) == 5
    for bad, needle in [
        ("synthetic-grid:n=0", "positive number"),
        ("synthetic-grid:domain=moon", "unknown"),
        ("synthetic-grid:colour=red", "unknown option"),
        ("synthetic-grid:tile=x", "not an integer"),
        ("grid:", "names no folder"),
    ]:
        with pytest.raises(SettingError, match=needle):
            parse_data_spec(bad).check()
    with pytest.raises(FileFormatError, match="does not exist"):
        parse_data_spec(f"grid:{tmp_path / 'none'}").check()


def test_folder_grids_read_an_imagenet_layout(tmp_path):
    colours = {"golden_retriever": (200, 150, 50), "tabby": (90, 90, 90), "n0001": (0, 0, 200)}
    colours["zebra"] = (250, 250, 250)
    for k, (name, rgb) in enumerate(colours.items()):
        (tmp_path / name).mkdir()
        for j in range(2):
            Image.new("RGB", (40 + 10 * j, 30), rgb).save(tmp_path / name / f"{k}-{j}.png")
    (tmp_path / "empty").mkdir()  # no images: not a class
    (tmp_path / "classes.json").write_text(json.dumps({"n0001": "blue thing"}))
    grids = list(iter_folder_grids(tmp_path, n=4, seed=1, tile=16))
    phrases = {m.label for g in grids for m in g.mentions}
    assert phrases <= {"golden retriever", "tabby", "blue thing", "zebra"}
    four = grids[3]
    img = np.asarray(four.image)
    assert img.shape == (32, 32, 3)
    by_phrase = {"golden retriever": "golden_retriever", "blue thing": "n0001"}
    for m in four.mentions:
        x0, y0, _, _ = (int(v) for v in m.boxes[0])
        rgb = colours[by_phrase.get(m.label, m.label)]
        assert tuple(img[y0 + 8, x0 + 8]) == rgb  # the class's image fills its quadrant
    src = parse_data_spec(f"grid:{tmp_path},n=3,seed=1,tile=16").check()
    assert [s.caption for s in src.samples()] == [g.caption for g in grids[:3]]
    few = tmp_path / "few"
    few.mkdir()
    (few / "a").mkdir()
    Image.new("RGB", (8, 8)).save(few / "a" / "x.png")
    with pytest.raises(FileFormatError, match="at least 4"):
        parse_data_spec(f"grid:{few}").check()
