"""The dualex command line: explain / report / models / demo, errors as one line and exit 2."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch
from PIL import Image, ImageDraw

from dualex import cli
from dualex.engine.interactions import Completeness
from dualex.errors import DualexError
from dualex.explanation import Explanation
from dualex.towers.positions import Geometry, ImagePositions, TextPositions

TINY = {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "heads": 2}


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``dualex ARGS`` in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["dualex", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def tiny_random_model(monkeypatch):
    """Make ``--model random-clip`` (and the builtin fallback) a tiny model."""
    from dualex.towers import random_clip

    monkeypatch.setattr(random_clip, "RANDOM_CONFIG", TINY)


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    im = Image.new("RGB", (48, 32), (235, 235, 230))
    ImageDraw.Draw(im).ellipse((9, 6, 23, 20), fill=(210, 30, 30))
    im.save(path)
    return path


def synthetic(caption: str, seed: int) -> Explanation:
    words = caption.split()
    offsets, start = [], 0
    for w in words:
        start = caption.index(w, start)
        offsets.append((start, start + len(w)))
        start += len(w)
    text = TextPositions(caption, words, offsets, [False] * len(words))
    image = ImagePositions((2, 2), 1, Geometry.resize((16, 16), (16, 16)))
    m = torch.randn(len(words), 5, generator=torch.Generator().manual_seed(seed))
    comp = Completeness(
        float(m.sum()),
        (0.0, 0.0, 0.0),
        float(m.sum()),
        0.0,
        0.0,
        (0.0, 0.0),
        (2, 2),
        "gauss-legendre",
    )
    return Explanation(
        m,
        text,
        image,
        comp,
        (1, 1),
        "synthetic",
        caption,
        Image.new("RGB", (16, 16), (90, 120, 200)),
    )


def one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit code 2 on bad input, got {code}: {err}"
    assert len(lines) == 1 and lines[0].startswith("dualex: error: "), f"one line: {err!r}"
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not named in {lines[0]!r}"


def test_explain_writes_report_figure_and_tensors(monkeypatch, capsys, picture, tmp_path):
    html = tmp_path / "r.html"
    code, out, err = run(
        monkeypatch,
        capsys,
        "explain",
        str(picture),
        "a red circle",
        "--model",
        "random-clip",
        "--steps",
        "3",
        "--out",
        str(html),
    )
    assert code == 0, err
    assert "score" in out and "relative error" in out and f"wrote {html}" in out
    page = html.read_text()
    data = json.loads(re.search(r'type="application/json">(.*?)</script>', page, re.S).group(1))
    assert data["pairs"][0]["caption"] == "a red circle"
    assert data["pairs"][0]["name"] == "scene.png"
    assert data["pairs"][0]["completeness"]["steps"] == [3, 3]

    fig = tmp_path / "fig.png"
    code, _, err = run(
        monkeypatch,
        capsys,
        "explain",
        str(picture),
        "a red circle",
        "-m",
        "random-clip:1",
        "--steps",
        "2",
        "-o",
        str(fig),
        "--span",
        "red",
        "--span",
        "circle",
        "--box",
        "9,6,24,21",
    )
    assert code == 0, err
    with Image.open(fig) as im:
        assert im.width > im.height

    st = tmp_path / "expl.safetensors"
    code, _, err = run(
        monkeypatch,
        capsys,
        "explain",
        str(picture),
        "a red circle",
        "-m",
        "random",
        "--steps",
        "2",
        "--layers",
        "1,2",
        "--rule",
        "riemann",
        "-o",
        str(st),
    )
    assert code == 0, err
    ex = Explanation.load(st)
    assert ex.layers == (1, 2) and ex.completeness.rule == "riemann"
    assert ex.model == "random-clip:0" and ex.image.size == (48, 32)


def test_builtin_falls_back_loudly_when_missing(monkeypatch, capsys, picture):
    from dualex.models import builtin

    monkeypatch.setattr(builtin, "available", lambda: False)
    code, out, err = run(
        monkeypatch, capsys, "explain", str(picture), "a red circle", "--steps", "2"
    )
    assert code == 0, err
    assert "WARNING" in err and "RANDOMLY INITIALISED" in err, err
    assert "random-clip:0" in out


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["explain", "missing.png", "a cat"], ["missing.png", "does not exist"]),
        (["explain", "{img}", "a cat", "--out", "x.txt"], ["x.txt", ".html"]),
        (["explain", "{img}", "a cat", "--layers", "one"], ["--layers", "'one'"]),
        (["explain", "{img}", "a cat", "--box", "1,2,3"], ["--box", "x0,y0,x1,y1"]),
        (["explain", "{img}", "a cat", "--rule", "simpson"], ["simpson"]),
        (["explain", "{img}", "   "], ["caption is empty"]),
        (["explain", "{img}", "a cat", "-m", "nope:thing"], ["unknown model spec", "nope:thing"]),
        (["explain", "{img}", "a cat", "-m", "random-clip:x"], ["seed"]),
        (["explain", "{img}", "a cat", "-m", "random", "--layers", "9"], ["layer 9"]),
        (["explain", "{img}", "a cat", "--steps", "0"], ["--steps"]),
        (["explain", "{img}"], ["Missing argument", "text"]),
        (["explain", "{img}", "a", "--bogus"], ["--bogus"]),
        (["frobnicate"], ["frobnicate"]),
        (["report", "{img}", "--out", "{tmp}/r.html"], ["safetensors"]),
        (["report", "{tmp}/a.safetensors", "--out", "{tmp}/r.txt"], [".html"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, picture, tmp_path, args, needles):
    args = [a.format(img=picture, tmp=tmp_path) for a in args]
    code, _, err = run(monkeypatch, capsys, *args)
    one_line_error(code, err, *needles)


def test_figure_options_are_checked_before_the_model_loads(monkeypatch, capsys, picture, tmp_path):
    """--span and --box choose what a caption-image figure shows: a span not in the caption, or
    either option with an output that would ignore it, is refused before any model loads."""

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(cli, "resolve_model", no_model)
    fig, page = str(tmp_path / "f.png"), str(tmp_path / "r.html")
    cases = [
        (["--out", fig, "--span", "dog"], ["span 'dog'", "does not occur", "'a red circle'"]),
        (["--out", fig, "--span", "red", "--span", ""], ["empty span"]),
        (["--out", page, "--span", "red"], ["--span", ".png", "report"]),
        (["--out", str(tmp_path / "e.safetensors"), "--box", "1,2,3,4"], ["--box", ".png"]),
        (["--span", "red"], ["--span", ".png"]),
    ]
    for extra, needles in cases:
        code, _, err = run(monkeypatch, capsys, "explain", str(picture), "a red circle", *extra)
        one_line_error(code, err, *needles)
    for flag, value in (("--span", "man"), ("--box", "1,2,3,4")):  # two texts: no image side
        code, _, err = run(monkeypatch, capsys, "explain", "a man", "a guitar", "-m", "st:any",
                           "--out", fig, flag, value)  # fmt: skip
        one_line_error(code, err, flag, "caption-image figures", "no image side")
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing written"


def test_bad_image_file_and_debug_traceback(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    code, _, err = run(monkeypatch, capsys, "explain", str(bad), "a cat")
    one_line_error(code, err, "bad.png", "as an image")
    monkeypatch.setattr(sys, "argv", ["dualex", "--debug", "explain", str(bad), "a cat"])
    with pytest.raises(DualexError, match="as an image"):
        cli.main()


def test_report_gathers_many_files(monkeypatch, capsys, tmp_path):
    paths = []
    for k, caption in enumerate(["a red circle", "two blue squares", "<b>bold</b> claim"]):
        paths.append(synthetic(caption, k).save(tmp_path / f"e{k}.safetensors"))
    out = tmp_path / "all.html"
    code, stdout, err = run(
        monkeypatch,
        capsys,
        "report",
        *map(str, paths),
        "--out",
        str(out),
        "--title",
        "three <pairs>",
    )
    assert code == 0, err
    assert "3 pairs" in stdout
    page = out.read_text()
    data = json.loads(re.search(r'type="application/json">(.*?)</script>', page, re.S).group(1))
    assert [p["name"] for p in data["pairs"]] == [  # named by caption, then file
        "a red circle (e0.safetensors)",
        "two blue squares (e1.safetensors)",
        "<b>bold</b> claim (e2.safetensors)",
    ]
    assert "<b>bold" not in page and "<title>three &lt;pairs&gt;</title>" in page


def test_models_lists_spec_forms(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "models")
    assert code == 0
    for spec in (
        "builtin",
        "hf:<id-or-path>",
        "openclip:<arch>[/<pretrained>]",
        "openai:<name>",
        "st:<id-or-path>",
        "random-clip[:SEED]",
    ):
        assert spec in out, f"{spec} missing from:\n{out}"


@pytest.mark.parametrize("command", [[], ["explain"], ["report"], ["models"], ["demo"]])
def test_help_has_examples(monkeypatch, capsys, command):
    code, out, _ = run(monkeypatch, capsys, *command, "--help")
    assert code == 0 and "Usage" in out
    if command in ([], ["explain"], ["report"]):
        assert "Examples" in out and "dualex " in out


def test_demo_delegates_to_run_demo(monkeypatch, capsys, tmp_path):
    import dualex.demo

    seen = []
    monkeypatch.setattr(dualex.demo, "run_demo", lambda out, **kw: seen.append(out) or [])
    code, _, err = run(monkeypatch, capsys, "demo", "--out", str(tmp_path / "d"))
    assert code == 0, err
    assert seen == [tmp_path / "d"]


# -- what the reader sees is true (issue 19) ---------------------------------------------------


def test_unknown_words_are_marked_in_the_printed_caption(monkeypatch, capsys, picture):
    args = ["explain", str(picture), "a red zyzzyva circle", "-m", "random-clip", "--steps", "2"]
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    assert (
        "struck through: 1 word unknown to the model's vocabulary (zyzzyva): the model reads it "
        "as one generic 'unknown' token" in " ".join(out.split())
    )
    table = out[out.index("strongest interactions") :]
    assert "zyzzyva" not in table  # never ranked


def test_a_caption_of_unknown_words_is_refused_before_any_work(
    monkeypatch, capsys, picture, tmp_path
):
    import dualex.explainer

    def no_work(*args, **kwargs):
        raise AssertionError("the explanation was started")

    monkeypatch.setattr(dualex.explainer, "project_one", no_work)
    html = tmp_path / "r.html"
    args = ["explain", str(picture), "zyzzyva quokka!", "-m", "random-clip", "-o", str(html)]
    code, _, err = run(monkeypatch, capsys, *args)
    one_line_error(code, err, "knows none of the words", "'zyzzyva'", "'quokka'")
    assert not html.exists()


def test_explain_help_lists_one_example_per_line(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "explain", "--help")
    assert code == 0
    lines = [line.strip(" │") for line in out.splitlines()]
    assert any(line.startswith("dualex explain --data coco:") for line in lines), out
    assert not any("pair.html" in line and "--data" in line for line in lines), out


def test_explain_data_batch_sets_samples_per_shard(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "run"
    args = ["explain", "--data", "synthetic:seed=4,n=4", "--out", str(out_dir)]
    code, out, err = run(monkeypatch, capsys, *args, "-m", "random-clip", "--steps", "2",
                         "--batch", "2")  # fmt: skip
    assert code == 0, err
    assert "explained 4 pairs in 2 shards" in out
    assert len(list((out_dir / "explanations").glob("*.safetensors"))) == 2


@pytest.mark.parametrize(
    "args",
    [
        ["explain", "--data", "synthetic:seed=4,n=4", "--out", "{tmp}/run", "--steps", "5000"],
        ["finetune", "--model", "random-clip", "--train", "synthetic:seed=1,n=4", "--eval",
         "synthetic:seed=2,n=2", "--out", "{tmp}/run", "--steps", "10000000000"],
    ],
)  # fmt: skip
def test_huge_steps_are_refused_before_anything_is_written(monkeypatch, capsys, tmp_path, args):
    args = [a.format(tmp=tmp_path) for a in args]
    code, _, err = run(monkeypatch, capsys, *args)
    one_line_error(code, err, "--steps", "5,000" if "explain" in args else "10,000,000,000")
    assert not (tmp_path / "run").exists()


def test_finetune_max_minutes_ends_the_sitting_and_says_how_to_resume(
    monkeypatch, capsys, tmp_path
):
    out_dir = tmp_path / "ft"
    args = ["finetune", "--model", "random-clip", "--train", "synthetic:seed=1,n=8", "--eval",
            "synthetic:seed=2,n=4", "--out", str(out_dir), "--steps", "3", "--batch", "4",
            "--monitor-mentions", "2", "--monitor-nodes", "2"]  # fmt: skip
    code, out, err = run(monkeypatch, capsys, *args, "--max-minutes", "1e-9")
    assert code == 0, err
    assert "stopped at step 1 of 3" in out and "re-run the same command to resume" in out
    assert not (out_dir / "final").exists()
    code, out, err = run(monkeypatch, capsys, *args)  # the same run, resumed without a budget
    assert code == 0, err
    assert "resuming" in out and (out_dir / "final").is_dir()
    code, _, err = run(monkeypatch, capsys, *args, "--max-minutes", "-2")
    one_line_error(code, err, "--max-minutes", "got -2.0")


@pytest.mark.parametrize(
    ("value", "needle"),
    [("x", "cannot read --monitor-layers 'x'"), ("1,2,3", "--monitor-layers"), ("99", "layer 99")],
)
def test_finetune_bad_monitor_layers_are_one_line(monkeypatch, capsys, tmp_path, value, needle):
    args = ["finetune", "--model", "random-clip", "--train", "synthetic:seed=1,n=4", "--eval",
            "synthetic:seed=2,n=2", "--out", str(tmp_path / "ft"), "--steps", "1",
            "--monitor-layers", value]  # fmt: skip
    code, _, err = run(monkeypatch, capsys, *args)
    one_line_error(code, err, needle)
    assert not (tmp_path / "ft").exists()
