"""Projections and interactions against exact answers and a plain-autograd oracle (float64)."""

from __future__ import annotations

import pytest
import torch

import dualex
from dualex.engine.interactions import feature_pair_matrix, interactions
from dualex.engine.projection import integrated_projection, path_points
from dualex.engine.quadrature import nodes_and_weights
from dualex.errors import SettingError
from tests.toys import Recorder, mixing_model, planted_model


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _features(seed, S, D):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(S, D, generator=g, dtype=torch.float64)


def test_planted_interactions_are_recovered_exactly():
    g = torch.Generator().manual_seed(1)
    Wa = torch.randn(4, 3, generator=g, dtype=torch.float64)
    Wb = torch.randn(4, 5, generator=g, dtype=torch.float64)
    x, y = _features(2, 5, 3), _features(3, 7, 5)
    model = planted_model(Wa, Wb)
    ex = dualex.explain(model, x, y, steps=24)
    ga, gb = torch.tanh(x @ Wa.T), torch.tanh(y @ Wb.T)  # references are zeros: g(0) = 0
    expected = ga @ gb.T
    assert ex.matrix.shape == (5, 7)
    assert torch.allclose(ex.matrix, expected, atol=1e-12, rtol=0), (
        (ex.matrix - expected).abs().max()
    )
    assert ex.completeness.absolute_error < 1e-12


def test_planted_single_strong_pair_is_the_top_interaction():
    # Token 2 and patch 4 share one direction of the embedding; all else is near-orthogonal.
    Wa, Wb = torch.eye(4, 3), torch.eye(4, 3)
    x = torch.zeros(5, 3)
    y = torch.zeros(6, 3)
    x[2, 0], y[4, 0] = 1.5, 1.2
    x[0, 1], y[1, 2] = 0.3, 0.3  # orthogonal features: zero interaction
    ex = dualex.explain(planted_model(Wa, Wb), x, y, steps=8)
    flat = ex.matrix.abs().flatten().argmax().item()
    assert divmod(flat, 6) == (2, 4), ex.matrix
    assert abs(ex.matrix[0, 1].item()) < 1e-14


def test_recorder_sees_exactly_the_quadrature_points():
    Wa, Wb = torch.randn(3, 2), torch.randn(3, 2)
    rec = Recorder()
    x, y = _features(4, 3, 2), _features(5, 4, 2)
    dualex.explain(planted_model(Wa, Wb, rec), x, y, steps=5, rule="riemann", mode="reverse")
    alphas, _ = nodes_and_weights("riemann", 5)
    want_a = path_points(x, torch.zeros_like(x), alphas)
    batches = [p for p in rec.points() if p.shape == want_a.shape]
    assert any(torch.equal(p, want_a) for p in batches), "suffix never saw the riemann path points"
    for p in rec.points():  # every call is a path point batch, the input (α=1) or reference (α=0)
        base = x if p.shape[1] == 3 else y
        ratios = (p / base.unsqueeze(0)).reshape(p.shape[0], -1)
        assert torch.allclose(ratios, ratios[:, :1].expand_as(ratios), atol=1e-12)
        assert set(torch.round(ratios[:, 0] * 5).tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}


@pytest.mark.parametrize("layer", [0, 1, 3])
def test_matrix_equals_feature_pair_oracle(layer):
    model = mixing_model(seed=7)
    x, y = _features(8, 4, 6), _features(9, 5, 6)
    alphas, weights = nodes_and_weights("gauss-legendre", 3)
    ex = dualex.explain(model, x, y, layers=layer, steps=3)
    ta, tb = model.tower_a, model.tower_b
    ia, ib = ta.prepare(x), tb.prepare(y)
    ha, hb = ta.hidden(ia, layer), tb.hidden(ib, layer)
    ra, rb = ta.reference_hidden(ia, layer), tb.reference_hidden(ib, layer)
    F = feature_pair_matrix(
        ta.suffix(ia, layer), ha, ra, tb.suffix(ib, layer), hb, rb, alphas, weights
    )
    assert F.shape == (4, 6, 5, 6)
    ea, eb = ta.embed(ia), tb.embed(ib)
    oracle = F.sum(dim=(1, 3)) / (ea.norm() * eb.norm())
    assert torch.allclose(ex.matrix, oracle, atol=1e-10, rtol=0), (ex.matrix - oracle).abs().max()


def test_feature_pair_matrix_refuses_large_inputs():
    h = torch.zeros(100, 100)
    f = lambda H: H.sum(1)  # noqa: E731
    a, w = nodes_and_weights("riemann", 1)
    with pytest.raises(SettingError, match="only for small towers"):
        feature_pair_matrix(f, h, h, f, h, h, a, w, max_entries=1000)


def _suffix_and_states(layer=1):
    model = mixing_model(seed=3, D=6, E=4)
    t = model.tower_a
    x = _features(11, 7, 6)
    inp = t.prepare(x)
    return t.suffix(inp, layer), t.hidden(inp, layer), t.reference_hidden(inp, layer)


def test_forward_and_reverse_mode_agree():
    f, h, r = _suffix_and_states()
    a, w = nodes_and_weights("gauss-legendre", 4)
    Pf = integrated_projection(f, h, r, a, w, mode="forward")
    Pr = integrated_projection(f, h, r, a, w, mode="reverse")
    assert Pf.shape == (4, 7)
    assert torch.allclose(Pf, Pr, atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize(("node_chunk", "item_chunk"), [(1, 1), (2, 3), (5, 100)])
def test_chunk_sizes_do_not_change_the_result(mode, node_chunk, item_chunk):
    f, h, r = _suffix_and_states()
    a, w = nodes_and_weights("gauss-legendre", 5)
    ref = integrated_projection(f, h, r, a, w, mode=mode)
    got = integrated_projection(
        f, h, r, a, w, mode=mode, node_chunk=node_chunk, item_chunk=item_chunk
    )
    assert torch.allclose(ref, got, atol=1e-13, rtol=0)


def test_memory_budget_splits_work_without_changing_it():
    f, h, r = _suffix_and_states()
    a, w = nodes_and_weights("gauss-legendre", 6)
    ref = integrated_projection(f, h, r, a, w)
    tiny = integrated_projection(f, h, r, a, w, memory_budget=1)
    assert torch.allclose(ref, tiny, atol=1e-13, rtol=0)


def test_gauss_legendre_converges_with_far_fewer_nodes_than_riemann():
    f, h, r = _suffix_and_states(layer=0)
    target = (f(h.unsqueeze(0)) - f(r.unsqueeze(0)))[0]

    def error(rule, n):
        a, w = nodes_and_weights(rule, n)
        P = integrated_projection(f, h, r, a, w, mode="forward")
        return float((P.sum(1) - target).norm() / target.norm())

    gl = next(n for n in range(1, 40) if error("gauss-legendre", n) <= 1e-6)
    assert gl < 20, gl
    # Right Riemann converges like 1/N: ten times as many nodes are still far from 1e-6.
    assert error("riemann", 10 * gl) > 1e-6 * 10, error("riemann", 10 * gl)
    assert error("riemann", 10 * gl) > 100 * error("gauss-legendre", gl)


def test_interactions_completeness_identity_for_dot_and_cosine():
    g = torch.Generator().manual_seed(0)
    Pa, Pb = torch.randn(5, 3, generator=g), torch.randn(5, 4, generator=g)
    ra, rb = torch.randn(5, generator=g), torch.randn(5, generator=g)
    ea, eb = ra + Pa.sum(1), rb + Pb.sum(1)
    for sim, scale in (("dot", None), ("cosine", None), ("cosine", 100.0)):
        M, c = interactions(Pa, Pb, ea, ra, eb, rb, similarity=sim, logit_scale=scale)
        assert c.absolute_error < 1e-12, (sim, c)
        s = (
            float(ea @ eb)
            * (1 if sim == "dot" else 1 / float(ea.norm() * eb.norm()))
            * (scale or 1)
        )
        assert abs(c.score - s) < 1e-12
        assert abs(float(M.sum()) + sum(c.reference_terms) - s) < 1e-12
    with pytest.raises(SettingError):
        interactions(Pa, Pb, ea, ra, eb, rb, similarity="l2")
