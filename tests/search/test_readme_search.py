"""The README's "Explain a search" section runs as written: its three commands (serve up to the
point where it would start listening) and its Python example."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Explain a search")
    return text[start : text.index("\n## ", start + 3)]


def _commands() -> list[list[str]]:
    block = re.search(r"```bash\n(.*?)```", _section(), flags=re.S).group(1)
    return [shlex.split(line.split("#")[0]) for line in block.splitlines() if line.strip()]


def test_the_three_commands_run_as_written(tmp_path, monkeypatch, capsys):
    from dualex import cli
    from dualex.search import serve as serve_module

    commands = _commands()
    assert [c[:2] for c in commands] == [
        ["dualex", "index"],
        ["dualex", "search"],
        ["dualex", "serve"],
    ]
    monkeypatch.chdir(tmp_path)
    served = {}
    monkeypatch.setattr(serve_module, "serve", lambda idx, **kw: served.update(idx=idx, **kw))
    for argv in commands:
        monkeypatch.setattr(sys, "argv", argv)
        try:
            cli.main()
        except SystemExit as done:
            assert done.code in (0, None), capsys.readouterr()
    out = capsys.readouterr().out
    assert "indexed 8 images" in out
    hits = json.loads((tmp_path / "hits.json").read_text())
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert all(f"#{h['rank']:<3} id {h['id']}" in out for h in hits)
    page = (tmp_path / "search.html").read_text()
    assert page.count('"rank":') == 4 and 'id="why"' in page
    assert served["host"] == "127.0.0.1" and served["port"] == 8000 and len(served["idx"]) == 8


def test_the_python_example_runs(tmp_path, monkeypatch):
    block = re.search(r"```python\n(.*?)```", _section(), flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    hits, fused = ns["hits"], ns["fused"]
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
    assert ns["heat"].shape == hits[0].explanation.grid
    assert len(fused) == 3 and fused[0].explanation.completeness.absolute_error < 1e-2
