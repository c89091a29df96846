"""The README's Concepts example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_concepts_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    section = text[text.index("## Concepts") :]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "README.md#concepts", "exec"), ns)
    split, ex = ns["split"], ns["ex"]
    assert (tmp_path / "concepts-dict" / "concepts.safetensors").is_file()
    assert split.matrices.shape[1:] == ex.matrix.shape
    assert len(split.top(3)) == 3
