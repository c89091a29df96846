"""Evaluation settings are a typed dataclass written into a job and read back by one pair of
functions (:mod:`dualex.scale.settings`); the evaluation tasks reach the runner by registering
themselves (scale imports nothing of evaluate)."""

from __future__ import annotations

import json

import pytest

from dualex.errors import SettingError
from dualex.evaluate.tasks import EVAL_TASKS, EvalSettings, get
from dualex.scale.job import Job
from dualex.scale.settings import from_settings, to_settings
from dualex.scale.tasks import TASKS, get_task

COMMON = {"text": "span", "layers": None, "steps": None, "shard_size": 8, "limit": None}


def _recorded(settings: EvalSettings, task: str) -> dict:
    return to_settings(settings, omit=settings.unused(get(task).settings))


@pytest.mark.parametrize(
    ("settings", "task", "extra"),
    [
        (EvalSettings(), "grounding", {}),
        (EvalSettings(methods=("dualex",)), "mismatch", {}),
        (EvalSettings(methods=("dualex", "banzhaf"), budget=64), "grid", {"budget": 64}),
        (EvalSettings(protocol="fixlip"), "grid", {"protocol": "fixlip"}),
        (EvalSettings(coalitions=16, seed=3), "faithfulness", {"coalitions": 16, "seed": 3}),
    ],
)
def test_a_job_records_the_settings_it_always_did(settings, task, extra):
    """The manifest of a run started before settings were typed still matches (resumable):
    the common settings always, budget only with banzhaf, coalitions and seed only for
    faithfulness, the protocol only when it is not dualex's."""
    assert _recorded(settings, task) == {**COMMON, **extra}


def test_settings_read_back_from_a_manifest_equal_the_ones_written():
    s = EvalSettings(
        methods=("dualex", "banzhaf"),
        text="both",
        layers=(1, 2),
        steps=4,
        batch=3,
        limit=9,
        budget=64,
        coalitions=16,
        seed=5,
        protocol="fixlip",
    )
    job = Job("builtin", "synthetic:n=1", "faithfulness", s.methods, _recorded(s, "faithfulness"))
    back = Job.from_json(json.loads(json.dumps(job.to_json())))  # tuples became lists
    assert from_settings(EvalSettings, back.settings, methods=back.methods) == s
    # a job that does not record a setting reads back its default
    lean = from_settings(EvalSettings, {"steps": 2}, methods=["random"])
    assert lean == EvalSettings(methods=("random",), steps=2)


def test_every_evaluation_task_is_a_registered_job_kind():
    assert {"explain", "index"} | set(EVAL_TASKS) <= set(TASKS)
    for name, task in EVAL_TASKS.items():
        assert get_task(name).key == task.load()[0]
    with pytest.raises(SettingError, match="unknown task 'nope'; choose from"):
        get_task("nope")
