"""Adaptive steps: nested rules (every node evaluated once), one loop for the fast and the generic
path, and the reference embedding ē cached per tower, layer and weights."""

from __future__ import annotations

import itertools

import pytest
import torch

import dualex
import dualex.explainer as explainer
from dualex.engine.quadrature import nested_levels, nodes_and_weights
from dualex.errors import SettingError
from tests.conftest import random_image

CAPTION = "a red circle left of a blue star"


def test_kronrod_patterson_levels_are_nested_exact_and_positive():
    levels = nested_levels("gauss-legendre", 159)
    assert [lv.steps for lv in levels] == [4, 9, 19, 39, 79, 159]
    assert levels[-1].rule == "gauss-legendre", "past the last extension: the rule at the cap"
    levels = levels[:-1]
    a4, w4 = nodes_and_weights("gauss-legendre", 4)
    assert torch.equal(levels[0].alphas, a4) and torch.equal(levels[0].weights, w4)
    for prev, lv in itertools.pairwise(levels):
        assert lv.alphas[: prev.steps].tolist() == prev.alphas.tolist(), "old nodes, same floats"
        assert len(set(lv.alphas.tolist())) == lv.steps
        assert bool((lv.weights > 0).all()) and 0 < float(lv.alphas.min()) < 1
        assert float(lv.alphas.max()) < 1
        m = prev.steps
        for deg in range(3 * m + 2):  # exact up to degree 3m + 1 on [0, 1]
            got = float((lv.weights * lv.alphas**deg).sum())
            assert got == pytest.approx(1 / (deg + 1), rel=1e-12, abs=1e-14), (lv.steps, deg)
    a, w = nodes_and_weights("kronrod-patterson", 19)
    assert torch.equal(a, levels[2].alphas) and torch.equal(w, levels[2].weights)
    with pytest.raises(SettingError, match="4, 9, 19"):
        nodes_and_weights("kronrod-patterson", 10)


@pytest.mark.parametrize("rule", ["riemann", "trapezoid"])
def test_equispaced_levels_are_nested_and_end_at_the_cap(rule):
    levels = nested_levels(rule, 40)
    assert levels[-1].steps == 40
    for prev, lv in itertools.pairwise(levels[:-1]):
        assert set(prev.alphas.tolist()) <= set(lv.alphas.tolist())
        assert float(lv.weights.sum()) == pytest.approx(1.0, abs=1e-14)
    gl = nested_levels("gauss-legendre", 30)
    assert [lv.steps for lv in gl] == [4, 9, 19, 30] and gl[-1].rule == "gauss-legendre"
    assert {lv.rule for lv in gl[:-1]} == {"kronrod-patterson"}, "its 4-node rule is Gauss's"
    mid = nested_levels("gauss-legendre", 30, midpoint=True)
    assert mid[0].alphas.tolist() == [0.5] and 0.5 in mid[2].alphas.tolist(), "½ is a node of 9"


def _recording(monkeypatch, name):
    seen: list[list[float]] = []
    original = getattr(explainer, name)

    def record(*args, **kwargs):
        alphas = args[3] if name == "node_totals" else args[4]
        seen.append(alphas.tolist())
        return original(*args, **kwargs)

    monkeypatch.setattr(explainer, name, record)
    return seen


def test_fast_path_adaptive_evaluates_every_node_once(clip64, monkeypatch):
    image = random_image(seed=3)
    seen = _recording(monkeypatch, "last_block_nodes")
    ex = dualex.explain(clip64, CAPTION, image, tol=1e-15, max_steps=39)
    assert ex.completeness.steps == (39, 39), "an unreachable tolerance ends at the last level"
    for tower_calls in (seen[: len(seen) // 2], seen[len(seen) // 2 :]):
        flat = [a for call in tower_calls for a in call]
        assert [len(c) for c in tower_calls] == [4, 5, 10, 20], "only the new nodes per level"
        assert len(set(flat)) == len(flat) == 39
    monkeypatch.undo()
    direct = dualex.explain(clip64, CAPTION, image, steps=39, rule="kronrod-patterson")
    torch.testing.assert_close(ex.matrix, direct.matrix, rtol=0, atol=1e-12)


def test_generic_path_adaptive_evaluates_every_node_once_then_projects(clip64, monkeypatch):
    image = random_image(seed=4)
    seen = _recording(monkeypatch, "node_totals")
    ex = dualex.explain(clip64, CAPTION, image, layers=0, tol=1e-6)
    steps = ex.completeness.steps
    levels = nested_levels("gauss-legendre", 64, midpoint=True)
    sizes = [lv.steps for lv in levels]
    assert sizes[0] == 1 and all(s in sizes for s in steps) and max(steps) > 4

    def union(n):  # every node of the levels up to the one with n nodes
        return {a for lv in levels[: sizes.index(n) + 1] for a in lv.alphas.tolist()}

    calls = [len(c) for c in seen]
    split = next(i for i in range(1, len(calls) + 1) if sum(calls[:i]) == len(union(steps[0])))
    for tower_calls, n in ((seen[:split], steps[0]), (seen[split:], steps[1])):
        flat = [a for call in tower_calls for a in call]
        assert len(set(flat)) == len(flat), "each node once"
        assert set(flat) == union(n), "the nodes of the levels tried, no others"
    monkeypatch.undo()
    rule = ["gauss-legendre" if s in (1, 64) else "kronrod-patterson" for s in steps]
    assert ex.completeness.rule == (
        "kronrod-patterson" if 64 not in steps else ex.completeness.rule
    )
    pa = dualex.explainer.project_one(
        clip64.tower_a, CAPTION, layer=0, steps=steps[0], rule=rule[0]
    )
    pb = dualex.explainer.project_one(clip64.tower_b, image, layer=0, steps=steps[1], rule=rule[1])
    direct = explainer.combine_projections(clip64, pa, pb, None)
    torch.testing.assert_close(ex.matrix, direct.matrix, rtol=0, atol=1e-12)
    assert max(ex.completeness.tower_errors) <= 1e-6


def test_default_accuracy_still_meets_the_tolerance(clip64):
    for layers in (None, 0):
        ex = dualex.explain(clip64, CAPTION, random_image(seed=5), layers=layers)
        assert ex.completeness.relative_error <= 1e-3, ex.completeness


def test_reference_embedding_is_cached_per_weights(clip64):
    tower = clip64.tower_b
    tower.__dict__.pop("_eref_cache", None)
    calls = []
    original = tower.suffix_batch

    def counting(inps, layer):
        run = original(inps, layer)

        def wrapped(H, items):
            calls.append(H.shape[0])
            return run(H, items)

        return wrapped

    tower.suffix_batch = counting
    try:
        dualex.explain(clip64, CAPTION, random_image(seed=1), steps=4)
        assert len(calls) == 2, "e and ē"
        dualex.explain(clip64, CAPTION, random_image(seed=2), steps=4)
        assert len(calls) == 3, "the second image's ē comes from the cache"
        m = clip64.module
        with torch.no_grad():
            m.visual_projection.weight.mul_(1.5)  # an in-place step changes the weights
        try:
            ex = dualex.project(clip64, texts=[CAPTION], images=[random_image(seed=2)], steps=4)
            assert len(calls) == 5, "new weights: ē computed again"
            ref = tower.reference_input(tower.prepare(random_image(seed=2)))
            with torch.no_grad(), clip64.session():
                want = tower.encode(ref.data)[0]
            torch.testing.assert_close(ex.b[0].reference_embedding, want, rtol=0, atol=1e-12)
        finally:
            with torch.no_grad():
                m.visual_projection.weight.div_(1.5)
    finally:
        del tower.suffix_batch
        tower.__dict__.pop("_eref_cache", None)
