"""docs/finetuning.md's "Monitor your own loop" examples run as written (plain loop on the
built-in model, transformers Trainer, open_clip)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "finetuning.md"


def _blocks():
    text = DOC.read_text()
    section = text.split("\n## Monitor your own loop\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_doc_opens_with_the_three_variants():
    text = DOC.read_text()
    assert text.split("\n## ", 2)[1].startswith("Monitor your own loop")
    assert len(_blocks()) == 3


@pytest.mark.slow
@pytest.mark.parametrize("k", [0, 1, 2], ids=["plain", "trainer", "openclip"])
def test_monitor_example_runs_as_written(k, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if k == 1:
        pytest.importorskip("accelerate")
    if k == 2:
        pytest.importorskip("open_clip")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_blocks()[k], f"finetuning.md[{k}]", "exec"), namespace)
    monitor = namespace["monitor"]
    steps = sorted({r["step"] for r in monitor.timeline})
    assert steps == [[0, 10, 20], [0, 5, 10], [0, 5, 10]][k]
    assert any(r["group"] == "class" and r["metric"] == "pointing" for r in monitor.timeline)
    assert namespace["model"].training  # the loop's mode survived the monitor
    logdir = tmp_path / "runs"
    events = list(logdir.rglob("events.out.tfevents.*"))
    assert events
    tags = set()
    for e in events:
        tags |= set(EventAccumulator(str(e.parent)).Reload().Tags()["scalars"])
    assert any("dualex/pointing/class/" in t for t in tags)
    if k == 0:
        assert (tmp_path / "runs" / "monitor" / "report.html").is_file()
