"""Property tests over random tiny models, layers, rules and settings (float64)."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dualex
from tests.toys import mixing_model

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _inputs(seed: int, sa: int, sb: int, D: int = 6):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(sa, D, generator=g, dtype=torch.float64),
        torch.randn(sb, D, generator=g, dtype=torch.float64),
    )


case = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 10_000),
        "sa": st.integers(1, 5),
        "sb": st.integers(1, 6),
        "layer": st.integers(0, 3),
        "rule": st.sampled_from(["gauss-legendre", "riemann", "trapezoid"]),
        "steps": st.integers(2, 9),
    }
)


@SETTINGS
@given(case)
def test_completeness_holds_within_the_quadrature_error(c):
    model = mixing_model(seed=c["seed"] % 50)
    x, y = _inputs(c["seed"], c["sa"], c["sb"])
    ex = dualex.explain(model, x, y, layers=c["layer"], steps=c["steps"], rule=c["rule"])
    comp = ex.completeness
    ea, eb = comp.tower_errors
    # Σ P = Δe + ε per tower, so |Σ M − scale·Δe_a·Δe_b| ≤ scale(|ε_a||Δe_b| + |Δe_a||ε_b| + |ε_a||ε_b|)
    assert comp.relative_error <= ea + eb + ea * eb + 1e-12, comp
    total = comp.attribution_sum + sum(comp.reference_terms)
    assert abs(total - comp.score) <= comp.absolute_error + 1e-12


@SETTINGS
@given(case)
def test_forward_mode_equals_reverse_mode(c):
    model = mixing_model(seed=c["seed"] % 50)
    x, y = _inputs(c["seed"], c["sa"], c["sb"])
    kw = dict(layers=c["layer"], steps=c["steps"], rule=c["rule"])
    f = dualex.explain(model, x, y, mode="forward", **kw)
    r = dualex.explain(model, x, y, mode="reverse", **kw)
    assert torch.allclose(f.matrix, r.matrix, atol=1e-12, rtol=0)


@SETTINGS
@given(case, st.integers(1, 4), st.integers(1, 5))
def test_chunking_through_the_memory_budget_does_not_change_results(c, nc, ic):
    from dualex.engine.projection import integrated_projection
    from dualex.engine.quadrature import nodes_and_weights

    model = mixing_model(seed=c["seed"] % 50)
    x, _ = _inputs(c["seed"], c["sa"], c["sb"])
    t = model.tower_a
    inp = t.prepare(x)
    h, r = t.hidden(inp, c["layer"]), t.reference_hidden(inp, c["layer"])
    a, w = nodes_and_weights(c["rule"], c["steps"])
    f = t.suffix(inp, c["layer"])
    whole = integrated_projection(f, h, r, a, w, node_chunk=len(a), item_chunk=10**6)
    parts = integrated_projection(f, h, r, a, w, node_chunk=nc, item_chunk=ic)
    assert torch.allclose(whole, parts, atol=1e-13, rtol=0)


@SETTINGS
@given(case)
def test_project_equals_explain_and_transposing_the_pair_transposes_m(c):
    model = mixing_model(seed=c["seed"] % 50, same=True)
    x, y = _inputs(c["seed"], c["sa"], c["sb"])
    kw = dict(layers=c["layer"], steps=c["steps"], rule=c["rule"])
    ex = dualex.explain(model, x, y, **kw)
    back = dualex.explain(model, y, x, **kw)
    assert torch.allclose(back.matrix, ex.matrix.T, atol=1e-14, rtol=0)
    assert abs(back.score - ex.score) < 1e-14
    proj = dualex.project(model, a=[x, y], b=[y], **kw)
    # inputs of one shape share a batched pass: equal to float64 round-off
    torch.testing.assert_close(proj.matrix(0, 0), ex.matrix, rtol=0, atol=1e-13)
