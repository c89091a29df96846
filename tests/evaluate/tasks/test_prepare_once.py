"""Each image is prepared once per group on the evaluation path: the task prepares it and every
method takes it prepared (a tower passes a prepared input through)."""

from __future__ import annotations

from dualex.data.sources import parse_data_spec
from dualex.evaluate.tasks import EvalSettings
from dualex.evaluate.tasks.faithfulness import faithfulness_rows
from dualex.evaluate.tasks.grid import grid_rows
from dualex.evaluate.tasks.grounding import grounding_rows
from dualex.towers.base import TowerInput


def test_the_image_of_a_group_is_prepared_once(clip64, monkeypatch):
    tower = clip64.tower_b
    real = tower.prepare
    raw: list[object] = []

    def counting(x):
        if not isinstance(x, TowerInput):
            raw.append(x)
        return real(x)

    monkeypatch.setattr(tower, "prepare", counting)
    methods = ("dualex", "random", "gae", "ig", "banzhaf")
    settings = EvalSettings(methods=methods, steps=2, budget=32, coalitions=8)
    for spec, task in (
        ("synthetic:seed=901,n=1", grounding_rows),
        ("synthetic-grid:seed=5,n=1", grid_rows),
        ("synthetic:seed=901,n=1", faithfulness_rows),  # the masking game prepares it too
    ):
        raw.clear()
        sample = next(iter(parse_data_spec(spec).samples()))
        rows = task(clip64, [(0, sample)], settings)
        assert {r["method"] for r in rows} >= set(methods) and not any(r["error"] for r in rows)
        assert len(raw) == 1, f"{task.__name__}: the image was prepared {len(raw)} times"
