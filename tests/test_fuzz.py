"""Hypothesis fuzzing of the input boundary and the CLI: every failure is a DualexError (CLI: exit
2 with one line), never a stray exception or traceback."""

from __future__ import annotations

import contextlib
import io
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from dualex import cli
from dualex.data.sources import parse_data_spec
from dualex.errors import DualexError
from dualex.evaluate.cli import parse_shard
from dualex.towers import random_clip
from dualex.towers.inputs import check_text, load_image, tokenize_text

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

dtypes = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_])
shapes = st.one_of(
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=6),
    st.tuples(st.integers(0, 6), st.integers(0, 6), st.sampled_from([1, 2, 3, 4, 5])),
    hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4),
)


@FAST
@given(arr=dtypes.flatmap(lambda dt: hnp.arrays(dt, shapes)))
def test_any_array_is_an_rgb_image_or_a_dualex_error(arr):
    try:
        im = load_image(arr)
    except DualexError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert im.mode == "RGB" and im.width >= 1 and im.height >= 1


@FAST
@given(data=st.binary(max_size=300), keep=st.integers(8, 400))
def test_any_file_bytes_are_an_image_or_a_dualex_error(tmp_path_factory, data, keep):
    good = io.BytesIO()
    Image.new("RGB", (9, 7), (10, 200, 30)).save(good, format="PNG")
    folder = tmp_path_factory.mktemp("fuzz")
    for i, blob in enumerate((data, good.getvalue()[:keep] + data)):
        path = folder / f"f{i}.png"
        path.write_bytes(blob)
        try:
            im = load_image(path)
        except DualexError as err:
            assert str(err) and "\n" not in str(err)
            continue
        assert im.mode == "RGB"


@pytest.fixture(scope="module")
def builtin_tokenizer():
    from transformers import AutoTokenizer

    from dualex.models.builtin import BUILTIN_DIR

    return AutoTokenizer.from_pretrained(str(BUILTIN_DIR))


@FAST
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=10), st.integers(), st.none()))
def test_any_text_tokenises_within_the_context_or_is_a_dualex_error(builtin_tokenizer, text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = tokenize_text(builtin_tokenizer, text, 32)
        except DualexError as err:
            assert str(err)
            with pytest.raises(DualexError):
                check_text(text)
            return
    assert out.ids.shape[1] <= 32 and len(out.positions) == out.ids.shape[1]
    assert out.dropped >= 0 and 0.0 <= out.unknown <= 1.0


@FAST
@given(spec=st.text(max_size=60))
def test_any_data_spec_is_checked_or_a_dualex_error(spec):
    try:
        parse_data_spec(spec).check()
    except DualexError as err:
        assert str(err) and "\n" not in str(err)


@FAST
@given(
    spec=st.builds(
        lambda kv: "synthetic:" + ",".join(f"{k}={v}" for k, v in kv),
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["n", "seed", "domain", "image_size", "start", "max_objects", "shapes", "x"]
                ),
                st.one_of(st.integers(-5, 80).map(str), st.text("abcxyz+.", max_size=6)),
            ),
            max_size=4,
        ),
    )
)
def test_synthetic_specs_check_before_sampling(spec):
    try:
        source = parse_data_spec(spec).check()
    except DualexError:
        return
    first = next(iter(source.samples()), None)  # what check() accepts must really sample
    assert first is None or first.caption


@FAST
@given(text=st.text(max_size=20))
def test_cli_parsers(text):
    for parse in (cli.parse_layers, cli.parse_box, parse_shard):
        with contextlib.suppress(DualexError):
            parse(text)


def _run(monkeypatch, capsys, args):
    monkeypatch.setattr(sys, "argv", ["dualex", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    return code, *capsys.readouterr()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.one_of(st.none(), st.integers(-3, 3000).map(str), st.text("0123456789x-", max_size=4)),
    layers=st.one_of(st.none(), st.text("0123456789,-x ", max_size=6)),
    rule=st.one_of(st.none(), st.sampled_from(["gl", "riemann", "trapezoid", "simpson", ""])),
    box=st.one_of(st.none(), st.text("0123456789,.-", max_size=12)),
    suffix=st.sampled_from([".html", ".png", ".safetensors", ".txt", ""]),
    caption=st.sampled_from(["a red circle", "", "  ", "🐶", "<b>x</b>"]),
)
def test_cli_explain_arguments(
    monkeypatch, capsys, tmp_path_factory, steps, layers, rule, box, suffix, caption
):
    monkeypatch.setattr(
        random_clip,
        "RANDOM_CONFIG",
        {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "heads": 2},
    )
    folder = tmp_path_factory.mktemp("cli")
    image = folder / "img.png"
    Image.new("RGB", (40, 30), (200, 40, 40)).save(image)
    args = ["explain", str(image), caption, "-m", "random-clip", "-o", str(folder / f"out{suffix}")]
    for flag, value in (("--steps", steps), ("--layers", layers), ("--rule", rule), ("--box", box)):
        if value is not None:
            args += [flag, value]
    code, _, err = _run(monkeypatch, capsys, args)
    assert "Traceback" not in err
    if code != 0:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("dualex: error: "), err
        assert sorted(p.name for p in folder.iterdir()) == ["img.png"], "nothing left behind"
