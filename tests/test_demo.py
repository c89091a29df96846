"""`dualex demo` in a reduced form (one scene)."""

from __future__ import annotations

import io

from rich.console import Console

from dualex.demo import run_demo
from dualex.models import builtin


def test_demo_runs_and_writes_heatmaps(tmp_path):
    buf = io.StringIO()
    exs = run_demo(tmp_path, console=Console(file=buf, width=200), n=1)
    text = buf.getvalue()
    assert len(exs) == 1
    assert "peak in box" in text and "completeness error" in text
    pngs = sorted(tmp_path.glob("scene0-mention*.png"))
    assert pngs and all(p.stat().st_size > 100 for p in pngs)
    assert (tmp_path / "scene0.safetensors").is_file()
    assert (tmp_path / "report.html").is_file()
    assert exs[0].completeness.relative_error < 1e-3
    if builtin.available():
        assert "builtin" in text
