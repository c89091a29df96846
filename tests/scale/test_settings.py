"""The runner's own job kinds have typed settings too, written and read by the same pair."""

from __future__ import annotations

import json

from dualex.scale.job import Job
from dualex.scale.settings import from_settings, to_settings
from dualex.scale.tasks import ExplainSettings, IndexSettings


def _through_a_manifest(settings: dict) -> dict:
    job = Job("builtin", "synthetic:n=1", "explain", ("dualex",), settings)
    return Job.from_json(json.loads(json.dumps(job.to_json()))).settings


def test_explain_jobs_record_what_they_always_did():
    st = ExplainSettings(layers=(1, 2), steps=4, shard_size=3, limit=5, budget=64, seed=1)
    dualex_run = {"layers": (1, 2), "steps": 4, "shard_size": 3, "limit": 5}
    assert to_settings(st, omit=st.unused("dualex")) == dualex_run
    assert to_settings(st, omit=st.unused("banzhaf")) == {**dualex_run, "budget": 64, "seed": 1}
    back = _through_a_manifest(to_settings(st))
    assert back["layers"] == [1, 2] and from_settings(ExplainSettings, back) == st


def test_index_settings_round_trip_and_defaults():
    st = IndexSettings(layers=(3, 4), steps=2, dtype="float16", texts=True, fingerprint="f")
    assert from_settings(IndexSettings, _through_a_manifest(to_settings(st))) == st
    assert from_settings(IndexSettings, {}) == IndexSettings()  # absent keys: the defaults
