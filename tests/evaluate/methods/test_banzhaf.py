"""banzhaf: the estimator equals exact weighted Banzhaf interactions (shapiq) when it enumerates,
is unbiased and converges when it samples, and runs on the image–text families."""

from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np
import pytest
import torch

import dualex
from dualex.encoder import DualEncoder
from dualex.errors import SettingError
from dualex.evaluate.game import PairGame, all_coalitions
from dualex.evaluate.methods import get
from dualex.evaluate.methods.banzhaf import (
    METHOD,
    banzhaf,
    estimate,
    split_budget,
)
from dualex.evaluate.methods.base import UnsupportedMethodError

NT, NI = 4, 5  # the analytic game's text and image players


def _bits(c: np.ndarray) -> np.ndarray:
    return (c * (1 << np.arange(c.shape[1]))).sum(1)


def _table_game(table: np.ndarray):
    """``value_table`` and the all-player value function of a game given by its full table."""

    def value_table(ct: np.ndarray, ci: np.ndarray) -> np.ndarray:
        return table[np.ix_(_bits(ct), _bits(ci))]

    def value(c: np.ndarray) -> np.ndarray:
        c = np.asarray(c, dtype=bool)
        nt = len(table).bit_length() - 1
        return table[_bits(c[:, :nt]), _bits(c[:, nt:])]

    return value_table, value


def _weighted_banzhaf(value, n: int, p: float, pair: tuple[int, int]) -> float:
    """The definition: E over the other players (present w.p. p) of the discrete derivative."""
    i, j = pair
    others = [k for k in range(n) if k not in pair]
    total = 0.0
    for bits in all_coalitions(len(others)):
        s = np.zeros(n, bool)
        s[others] = bits
        w = p ** bits.sum() * (1 - p) ** (len(others) - bits.sum())
        c = np.stack([s.copy() for _ in range(4)])
        c[0, [i, j]] = True
        c[1, i] = True
        c[2, j] = True
        v = value(c)
        total += w * (v[0] - v[1] - v[2] + v[3])
    return total


def _from_moebius(iv, n: int, p: float, order: int) -> dict[tuple[int, ...], float]:
    """Weighted Banzhaf terms from shapiq's Möbius transform: Σ_{U ⊇ T} p^{|U|−|T|} m(U)."""
    moebius = {u: float(iv.values[k]) for u, k in iv.interaction_lookup.items()}
    out = {}
    for t in (c for k in range(order + 1) for c in combinations(range(n), k)):
        out[t] = sum(p ** (len(u) - len(t)) * m for u, m in moebius.items() if set(t) <= set(u))
    return out


@pytest.fixture(scope="module")
def game_table() -> np.ndarray:
    """A general game (every Möbius order present) on 4 text + 5 image players."""
    return np.random.default_rng(0).normal(size=(1 << NT, 1 << NI))


@pytest.mark.parametrize("p", [0.5, 0.3, 0.7])
def test_enumerating_estimator_is_exact_against_shapiq(game_table, p):
    import shapiq

    value_table, value = _table_game(game_table)
    assert split_budget(64, NT, NI) == (16, 32)
    terms = estimate(value_table, NT, NI, budget=64, p=p)
    assert terms.exact and terms.text_coalitions * terms.image_coalitions == 512

    exact = shapiq.ExactComputer(value, n_players=NT + NI)
    want = _from_moebius(exact.moebius_transform, NT + NI, p, 2)
    pairs = np.array([[want[(i, NT + j)] for j in range(NI)] for i in range(NT)])
    np.testing.assert_allclose(terms.interactions, pairs, atol=1e-12)
    np.testing.assert_allclose(terms.banzhaf_text, [want[(i,)] for i in range(NT)], atol=1e-12)
    np.testing.assert_allclose(
        terms.banzhaf_image, [want[(NT + j,)] for j in range(NI)], atol=1e-12
    )
    assert terms.expected == pytest.approx(want[()], abs=1e-12)
    # the definition itself, enumerated, for two pairs
    for i, j in ((0, 0), (3, 4)):
        d = _weighted_banzhaf(value, NT + NI, p, (i, NT + j))
        assert terms.interactions[i, j] == pytest.approx(d, abs=1e-12)
    if p == 0.5:  # shapiq's Banzhaf interaction index
        bii = exact("BII", order=2)
        got = np.array([[bii[(i, NT + j)] for j in range(NI)] for i in range(NT)])
        np.testing.assert_allclose(terms.interactions, got, atol=1e-12)


def test_prediction_is_the_weighted_least_squares_projection(game_table):
    p = 0.3
    value_table, value = _table_game(game_table)
    terms = estimate(value_table, NT, NI, budget=64, p=p)
    c = all_coalitions(NT + NI).astype(float)
    cross = [c[:, i] * c[:, NT + j] for i in range(NT) for j in range(NI)]
    basis = np.column_stack([np.ones(len(c)), c, *cross])
    size = c.sum(1)
    sw = np.sqrt(p**size * (1 - p) ** (NT + NI - size))
    coef = np.linalg.lstsq(basis * sw[:, None], value(c) * sw, rcond=None)[0]
    assert terms.constant == pytest.approx(coef[0], abs=1e-10)
    np.testing.assert_allclose(terms.first_text, coef[1 : 1 + NT], atol=1e-10)
    np.testing.assert_allclose(terms.first_image, coef[1 + NT : 1 + NT + NI], atol=1e-10)
    np.testing.assert_allclose(terms.interactions.reshape(-1), coef[1 + NT + NI :], atol=1e-10)
    np.testing.assert_allclose(terms.predict(c), basis @ coef, atol=1e-10)


def test_prediction_is_exact_on_a_bilinear_game():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(NT + 1, 3)), rng.normal(size=(NI + 1, 3))

    def value_table(ct, ci):
        return (a[0] + ct @ a[1:]) @ (b[0] + ci @ b[1:]).T

    terms = estimate(value_table, NT, NI, budget=64, p=0.6)
    c = all_coalitions(NT + NI)
    v = np.array([value_table(x[None, :NT], x[None, NT:])[0, 0] for x in c])
    np.testing.assert_allclose(terms.predict(c), v, atol=1e-12)
    assert terms.constant == pytest.approx(a[0] @ b[0], abs=1e-12)  # v(∅)
    np.testing.assert_allclose(terms.first_text, a[1:] @ b[0], atol=1e-12)
    np.testing.assert_allclose(terms.interactions, a[1:] @ b[1:].T, atol=1e-12)


# -- sampling ------------------------------------------------------------------------------------
BT, BI = 9, 12  # too many players to enumerate at small budgets


def _nonlinear_table(ct: np.ndarray, ci: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(BT, 4)), rng.normal(size=(BI, 4))
    f, g = np.tanh(ct @ A - 1.0), np.tanh(ci @ B * 0.5 + 0.5)
    return f @ g.T + np.sin(ct.sum(1))[:, None] * 0.3 + (ci @ B[:, 0])[None, :] * 0.1


@pytest.fixture(scope="module")
def exact_nonlinear():
    assert split_budget(4608, BT, BI) == (512, 4096)
    terms = estimate(_nonlinear_table, BT, BI, budget=4608, p=0.5)
    assert terms.exact
    return terms


@pytest.mark.parametrize("estimator", ["sign", "regression"])
def test_sampled_estimates_converge(exact_nonlinear, estimator):
    scale = np.sqrt(np.mean(exact_nonlinear.interactions**2))
    rmse = {}
    for budget in (2**6, 2**8, 2**10, 2**12):
        errs = [
            estimate(
                _nonlinear_table, BT, BI, budget=budget, seed=s, estimator=estimator
            ).interactions
            - exact_nonlinear.interactions
            for s in range(4)
        ]
        rmse[budget] = float(np.sqrt(np.mean(np.square(errs)))) / scale
    assert rmse[2**6] > rmse[2**8] > rmse[2**10] > rmse[2**12]
    assert rmse[2**12] < 0.1, rmse
    assert rmse[2**6] / rmse[2**12] > 4, rmse  # ~ sqrt(64) for 64 times the budget


def test_sampled_estimator_is_unbiased(exact_nonlinear):
    runs = [
        estimate(_nonlinear_table, BT, BI, budget=32, seed=s, estimator="sign") for s in range(300)
    ]
    for name in ("interactions", "banzhaf_text", "banzhaf_image", "expected"):
        x = np.array([np.asarray(getattr(t, name)) for t in runs])
        se = x.std(0, ddof=1) / np.sqrt(len(runs))
        z = np.abs(x.mean(0) - np.asarray(getattr(exact_nonlinear, name))) / se
        assert np.max(z) < 4.5, (name, np.max(z))


def test_budget_and_p_are_checked():
    table, _ = _table_game(np.zeros((16, 32)))
    with pytest.raises(SettingError, match="16 to 4194304"):
        estimate(table, NT, NI, budget=8)
    with pytest.raises(SettingError, match=r"2\^22"):
        estimate(table, NT, NI, budget=2**30)
    with pytest.raises(SettingError, match="strictly in"):
        estimate(table, NT, NI, p=1.0)
    with pytest.raises(SettingError, match="budget"):
        estimate(table, NT, NI, budget=100.0)


# -- the method on models -----------------------------------------------------------------------


def _check_attribution(a, game: PairGame, score: float, tol: float) -> None:
    text_pos, image_pos = a.text, a.image
    assert a.matrix.shape == (len(text_pos), len(image_pos)) and a.units == "score"
    assert a.matrix.dtype == torch.float64
    special = [i for i, sp in enumerate(text_pos.special) if sp]
    assert torch.all(a.matrix[special] == 0) and torch.all(
        a.extra["first_order_text"][special] == 0
    )
    assert torch.all(a.matrix[:, : image_pos.prefix] == 0)
    assert torch.all(a.extra["first_order_image"][: image_pos.prefix] == 0)
    assert a.score == pytest.approx(score, abs=tol)
    terms = a.extra["terms"]
    # the position-level prediction equals the player-level one
    c = np.random.default_rng(0).random((6, game.n_players)) < 0.5
    rows = torch.zeros(6, len(text_pos), dtype=torch.float64)
    cols = torch.zeros(6, len(image_pos), dtype=torch.float64)
    for k, pos in enumerate(game.text_players):
        rows[:, pos] = torch.from_numpy(c[:, k]).double()
    for r, group in enumerate(game.image_players):
        for j in group:
            cols[:, image_pos.prefix + j] = torch.from_numpy(c[:, game.n_text + r]).double()
    pred = (
        a.extra["constant"]
        + rows @ a.extra["first_order_text"]
        + cols @ a.extra["first_order_image"]
        + ((rows @ a.matrix) * cols).sum(1)
    )
    np.testing.assert_allclose(pred.numpy(), terms.predict(c), atol=1e-10)


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_exact_on_a_tiny_clip_with_a_2x2_grid(clip64, image, p):
    import shapiq

    [a] = banzhaf(clip64, image, ["red circle"], grid=(2, 2), budget=64, p=p)
    game = a.extra["game"]
    assert a.extra["terms"].exact and (game.n_text, game.n_image) == (2, 4)
    assert a.steps == 4 + 16 + 4  # both sides enumerated, plus v(full) and v(∅) per side
    exact = shapiq.ExactComputer(game.to_shapiq(), n_players=6)
    if p == 0.5:
        iv = exact("BII", order=2)
        want = np.array([[iv[(i, 2 + j)] for j in range(4)] for i in range(2)])
    else:
        m = _from_moebius(exact.moebius_transform, 6, p, 2)
        want = np.array([[m[(i, 2 + j)] for j in range(4)] for i in range(2)])
    region_sums = np.array(
        [
            [float(a.matrix[row, [1 + k for k in g]].sum()) for g in game.image_players]
            for row in game.text_players
        ]
    )
    np.testing.assert_allclose(region_sums, want, atol=1e-10)
    assert a.extra["empty_value"] == pytest.approx(
        float(game.value(np.zeros((1, 6), bool))[0]), abs=1e-12
    )
    _check_attribution(a, game, dualex.explain(clip64, "red circle", image).score, 1e-10)


def test_builtin_model_shapes_seed_and_texts(image):
    model = dualex.load("builtin")
    texts = ["a red circle left of a blue star", "a green square"]
    a1, a2 = banzhaf(model, image, texts, budget=2**6, seed=1)
    assert a1.matrix.shape == (10, 65) and a1.image.grid == (8, 8)
    _check_attribution(a1, a1.extra["game"], dualex.explain(model, texts[0], image).score, 1e-5)
    assert a1.extra["game"].n_image == 64  # every patch a player
    again = banzhaf(model, image, texts[:1], budget=2**6, seed=1)[0]
    assert torch.equal(a1.matrix, again.matrix), "deterministic, and alone = among other texts"
    alone = banzhaf(model, image, texts[1:], budget=2**6, seed=1)[0]
    assert torch.equal(a2.matrix, alone.matrix)
    other = banzhaf(model, image, texts[:1], budget=2**6, seed=2)[0]
    assert not torch.equal(a1.matrix, other.matrix)
    k_t, k_i = split_budget(2**6, 8, 64)
    assert a1.steps == k_t + k_i + 4 and a1.extra["coalitions"] == k_t * k_i
    assert a1.seconds > 0 and a2.extra["image_passes"] >= k_i


def test_other_families_and_registry(siglip64, image):
    pytest.importorskip("open_clip")
    torch.manual_seed(0)
    text = dict(context_length=12, vocab_size=49408, width=32, heads=2, layers=2)
    vision = dict(image_size=32, layers=2, width=32, patch_size=8, head_width=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vit = dualex.load("openclip:ViT-B-32", embed_dim=16, vision_cfg=vision, text_cfg=text)
    assert get("banzhaf") is METHOD and METHOD.order == 2
    for model, tol in ((siglip64, 1e-10), (vit, 1e-5)):
        score = dualex.explain(model, "red circle", image).score
        for absent in ("reference", "remove"):
            [a] = METHOD(model, image, ["red circle"], budget=32, text_absent=absent)
            assert torch.isfinite(a.matrix).all()
            _check_attribution(a, a.extra["game"], score, tol)


def test_text_text_models_raise(clip64, image):
    tt = DualEncoder(clip64.tower_a, clip64.tower_a, name="text-text")
    with pytest.raises(UnsupportedMethodError, match="no image tower"):
        banzhaf(tt, "a red circle", ["a blue star"])
