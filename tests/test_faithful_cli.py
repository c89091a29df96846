"""The CLI's --method/--budget/--seed: bad settings exit 2 with one line before any work, and
--data runs keep each pair's method, settings and sampling error."""

from __future__ import annotations

import pytest

from tests.test_cli import picture, run, tiny_random_model  # noqa: F401 (shared fixtures)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "shapley"], "method="),
        (["--budget", "64"], "budget set"),
        (["--method", "banzhaf", "--budget", "8"], "out of range"),
        (["--method", "banzhaf", "--layers", "1"], "layers and steps"),
    ],
)
def test_bad_method_settings_exit_2(monkeypatch, capsys, picture, tmp_path, args, message):  # noqa: F811
    out = tmp_path / "x.html"
    code, _, err = run(monkeypatch, capsys, "explain", str(picture), "a dot", *args, "-o", str(out))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_data_run_keeps_the_method(monkeypatch, capsys, tmp_path):
    from dualex.scale.explain import load_explanation, read_index

    out = tmp_path / "run"
    code, _, err = run(
        monkeypatch,
        capsys,
        "explain",
        "--data",
        "synthetic:seed=3,n=2",
        "--model",
        "random-clip",
        "--method",
        "banzhaf",
        "--budget",
        "64",
        "--out",
        str(out),
    )
    assert code == 0, err
    rows = read_index(out)
    assert rows and all(r["file"] and r["sampling_error"] > 0 for r in rows), rows
    ex = load_explanation(out, rows[0])
    assert ex.method == "banzhaf" and ex.settings["budget"] == 64
    assert ex.sampling_error == pytest.approx(rows[0]["sampling_error"])
