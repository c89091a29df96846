"""The monitor's concept section: per concept, how often its caption side and its image side
fire together on held-out matching pairs, at each pass, in the timeline and the report."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
import torch

import dualex
from dualex import Concepts
from dualex.concepts.gaps import ConceptAgreement, agreement_rows, concept_agreement
from dualex.data.synthetic import generate
from dualex.errors import ModelMismatchError
from dualex.train import GroundingMonitor
from dualex.train.report import concept_gaps
from tests.conftest import tiny_clip


def _random_dictionary(enc, K=12, topk=3, seed=0):
    """A dictionary of random unit directions in ``enc``'s embedding space (random directions
    fire on some inputs and not others: enough to test the bookkeeping)."""
    E = dualex.project(enc, a=["a red circle"], b=[generate(1, seed=1)[0].image], steps=1,
                       progress=False).a[0].embedding.shape[0]  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(K, E, generator=g, dtype=torch.float64)
    names = [f"c{k} / d{k}" for k in range(K)]
    return Concepts.from_directions(enc, W, W.T.clone(), topk=topk, names=names)


def test_agreement_rows_are_the_rates_with_intervals_around_them():
    g = torch.Generator().manual_seed(3)
    A = torch.rand(40, 5, generator=g) < torch.tensor([0.9, 0.5, 0.0, 0.3, 0.0])
    B = torch.rand(40, 5, generator=g) < torch.tensor([0.8, 0.0, 0.4, 0.3, 0.0])
    B[:, 0] |= A[:, 0]  # concept 0 mostly on both sides

    from types import SimpleNamespace

    Names = SimpleNamespace(names=["zero", "one / uno", "two", "three", "four"])
    rows = agreement_rows(Names, A, B, n_boot=300)
    agr = ConceptAgreement.from_firing(Names.names, A, B)
    got = {(r["cls"], r["metric"]): r for r in rows}
    assert {c for c, _ in got} == {"#0 zero", "#1 one · uno", "#2 two", "#3 three"}  # 4 never fires
    for k, cls in ((0, "#0 zero"), (1, "#1 one · uno"), (2, "#2 two"), (3, "#3 three")):
        for metric, want in (("fires_a", agr.fires_a[k]), ("fires_b", agr.fires_b[k]),
                             ("agreement", agr.agreement[k]), ("gap", agr.gap[k])):  # fmt: skip
            r = got[(cls, metric)]
            if math.isnan(float(want)):
                assert math.isnan(r["value"]) and math.isnan(r["lo"])
                continue
            assert r["value"] == pytest.approx(float(want), abs=1e-12)
            assert r["lo"] <= r["value"] + 1e-12 and r["value"] <= r["hi"] + 1e-12
    assert got[("#1 one · uno", "gap")]["value"] == 1.0  # on side a only: a full gap
    assert got[("#1 one · uno", "gap")]["n"] == int(A[:, 1].sum())
    assert math.isnan(got[("#2 two", "gap")]["value"])  # never on side a


def test_monitor_measures_concepts_each_pass_and_reports_the_gaps(tmp_path):
    enc = dualex.load("builtin")
    concepts = _random_dictionary(enc)
    folder = concepts.save(tmp_path / "dict")
    samples = generate(10, seed=21)
    out = tmp_path / "mon"
    monitor = GroundingMonitor(samples, every=1, mentions=2, nodes=2, out=out,
                               concepts=folder, concept_pairs=8)  # fmt: skip
    rows0 = monitor.step(enc, 0)
    crow = [r for r in rows0 if r["group"] == "concept"]
    assert crow and all(r["step"] == 0 for r in crow)
    # the same numbers as the function, on the same 8 pairs
    want = concept_agreement(concepts, enc, samples[:8], same_weights=False)
    for r in crow:
        k = int(r["cls"].split()[0][1:])
        value = {"fires_a": want.fires_a, "fires_b": want.fires_b, "agreement": want.agreement,
                 "gap": want.gap}[r["metric"]][k]  # fmt: skip
        assert (math.isnan(r["value"]) and math.isnan(float(value))) or r["value"] == pytest.approx(
            float(value), abs=1e-12
        )
    # a changed model (as after a training step) is measured in the dictionary's terms
    with torch.no_grad():
        for p in enc.module.parameters():
            p.add_(0.02 * torch.randn_like(p))
    monitor.step(enc, 5)
    path = monitor.close()
    table = pq.read_table(out / "timeline.parquet").to_pylist()
    assert {r["step"] for r in table if r["group"] == "concept"} == {0, 5}
    html = path.read_text()
    assert "Concepts: knowledge gaps" in html
    rank = concept_gaps(table)
    assert rank, "some random concept fires on the captions"
    gaps = [r["gap"]["value"] for r in rank if math.isfinite(r["gap"]["value"])]
    assert gaps == sorted(gaps, reverse=True)
    assert rank[0]["cls"] in html


def test_monitor_refuses_a_dictionary_of_other_embeddings(tmp_path):
    enc = dualex.load("builtin")
    concepts = _random_dictionary(tiny_clip(1, torch.float32))  # 16-dim embeddings
    monitor = GroundingMonitor(generate(4, seed=2), every=1, mentions=1, nodes=2,
                               concepts=concepts)  # fmt: skip
    with pytest.raises(ModelMismatchError, match="size"):
        monitor.step(enc, 0)


def test_finetune_with_concepts_reports_them(tmp_path):
    from dualex.train import finetune

    folder = _random_dictionary(dualex.load("builtin")).save(tmp_path / "dict")
    res = finetune("builtin", "synthetic:seed=11,n=8", "synthetic:seed=12,n=6", tmp_path / "ft",
                   steps=2, batch=4, eval_every=2, monitor_mentions=2, monitor_nodes=2,
                   concepts=str(folder), progress=False, log=lambda s: None)  # fmt: skip
    table = pq.read_table(tmp_path / "ft" / "timeline.parquet").to_pylist()
    assert {r["step"] for r in table if r["group"] == "concept"} == {0, 2}
    assert "Concepts: knowledge gaps" in (tmp_path / "ft" / "report.html").read_text()
    assert res is not None
