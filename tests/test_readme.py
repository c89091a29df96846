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
