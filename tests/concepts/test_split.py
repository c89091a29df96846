"""The concept split is exact (float64), recovers planted concepts, and refuses other models."""

from __future__ import annotations

import pytest
import torch

import dualex
from dualex import Concepts
from dualex.engine.concepts import encode_topk, split_pair
from dualex.errors import InvalidInputError, ModelMismatchError
from dualex.model import DualEncoder
from dualex.towers.base import FunctionTower
from tests.conftest import random_image, tiny_clip
from tests.toys import _positions, mixing_model


def _random_dictionary(model, E: int, K: int = 7, topk: int = 3, seed: int = 0) -> Concepts:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(K, E, generator=g, dtype=torch.float64)
    Da = torch.randn(E, K, generator=g, dtype=torch.float64)
    Db = torch.randn(E, K, generator=g, dtype=torch.float64)
    return Concepts.from_directions(model, W, Da, Db, topk=topk)


def _check_exact(ex, concepts):
    split = ex.concept_split(concepts)
    assert ex.matrix.dtype == torch.float64
    total = split.matrices.sum(0) + split.residual
    assert (total - ex.matrix).abs().max() <= 1e-10 * max(1.0, float(ex.matrix.abs().max()))
    # the residual is the dictionary's miss, not a difference that makes any split add up:
    # recompute it from its definition
    P_a, P_b = ex.projections
    W, Da, Db, k = concepts.encoder, concepts.decoders["a"], concepts.decoders["b"], concepts.topk
    Ra = P_a - Da @ encode_topk(P_a.T, W, k).T
    Rb = P_b - Db @ encode_topk(P_b.T, W, k).T
    want = 0.5 * ex.factor * (Ra.T @ P_b + P_a.T @ Rb)
    assert (split.residual - want).abs().max() <= 1e-12
    assert split.matrices.abs().sum() > 0.1 * ex.matrix.abs().sum(), "concepts carry the matrix"
    # ordered by |share|, names follow the indices
    shares = split.shares.abs()
    assert torch.all(shares[:-1] >= shares[1:])
    assert split.names == [concepts.names[int(i)] for i in split.concepts]
    return split


def test_split_is_exact_for_image_text():
    model = tiny_clip(seed=3)
    ex = dualex.explain(model, "a red circle", random_image(32, 32, seed=1), steps=3)
    split = _check_exact(ex, _random_dictionary(model, ex.projections[0].shape[0]))
    assert split.matrices.shape[1:] == ex.matrix.shape


def test_split_is_exact_for_text_text():
    model = mixing_model(seed=2, same=True)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ex = dualex.explain(model, x, y, steps=4)
    d = _random_dictionary(model, 5, K=6, topk=2)
    d.decoders["b"] = d.decoders["a"]  # one modality: one decoder
    _check_exact(ex, d)


def test_one_concept_matrix_matches_its_definition():
    """M_k[s, t] = ½ f (c_a[k, s] d_{a,k}·P_b[:, t] + P_a[:, s]·d_{b,k} c_b[k, t]), by loops."""
    g = torch.Generator().manual_seed(5)
    E, K, Sa, Sb, k = 6, 5, 3, 4, 2
    Pa, Pb = (torch.randn(E, S, generator=g, dtype=torch.float64) for S in (Sa, Sb))
    W = torch.nn.functional.normalize(torch.randn(K, E, generator=g, dtype=torch.float64), dim=1)
    Da, Db = (torch.randn(E, K, generator=g, dtype=torch.float64) for _ in range(2))
    mats, active, _ = split_pair(Pa, Pb, 0.7, W, Da, Db, k)
    for j, c in enumerate(active.tolist()):
        for s in range(Sa):
            pre = W @ Pa[:, s]
            keep = set(pre.abs().argsort(descending=True)[:k].tolist())
            ca = float(pre[c]) if c in keep else 0.0
            for t in range(Sb):
                pre_b = W @ Pb[:, t]
                keep_b = set(pre_b.abs().argsort(descending=True)[:k].tolist())
                cb = float(pre_b[c]) if c in keep_b else 0.0
                want = (
                    0.5 * 0.7 * (ca * float(Da[:, c] @ Pb[:, t]) + float(Pa[:, s] @ Db[:, c]) * cb)
                )
                assert abs(float(mats[j, s, t]) - want) <= 1e-12


# -- a planted model: embeddings are known sums of concept directions ----------------------------
E, K = 8, 6


def _directions(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(E, E, generator=g, dtype=torch.float64))
    return q[:, :K]  # [E, K] orthonormal concept directions


def _linear_tower(V: torch.Tensor, name: str, modality: str) -> FunctionTower:
    """Input ``x: [S, K]`` = each position's concept amounts; ``e = Σ_s V x_s``, so ``P[:, s] =
    V x_s`` exactly (a linear suffix, zero reference)."""
    return FunctionTower(
        lambda x, layer: x,
        lambda x, layer: lambda H: (H @ V.T).sum(dim=1),
        _positions,
        lambda x, spec: torch.zeros_like(x),
        num_layers=0,
        modality=modality,
        name=name,
    )


def planted(V: torch.Tensor) -> DualEncoder:
    return DualEncoder(
        _linear_tower(V, "pa", "text"), _linear_tower(V, "pb", "text"), "dot", name="planted"
    )


def _sparse_amounts(n: int, S: int, seed: int) -> list[torch.Tensor]:
    """``n`` inputs ``[S, K]`` with one concept per position, amount in [0.5, 2]."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.zeros(S, K, dtype=torch.float64)
        which = torch.randint(0, K, (S,), generator=g)
        x[torch.arange(S), which] = 0.5 + 1.5 * torch.rand(S, generator=g, dtype=torch.float64)
        out.append(x)
    return out


def _planted_matrices(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[K, S_a, S_b]``: concept j's planted matrix ``x[:, j] ⊗ y[:, j]`` (dot similarity)."""
    return torch.einsum("sj,tj->jst", x, y)


def test_known_dictionary_recovers_each_planted_matrix_exactly():
    V = _directions()
    model = planted(V)
    x, y = _sparse_amounts(2, 5, seed=1)
    x[0, 2] = 0.8  # a position with two concepts
    ex = dualex.explain(model, x, y, steps=2)
    split = ex.concept_split(Concepts.from_directions(model, V.T, V, topk=2))
    want = _planted_matrices(x, y)
    for j in range(K):
        got = split.matrices[split.concepts.tolist().index(j)] if j in split.concepts else 0
        assert torch.allclose(torch.as_tensor(got, dtype=torch.float64), want[j], atol=1e-12)
    assert split.residual.abs().max() <= 1e-12


def test_trained_dictionary_recovers_the_planted_matrices(tmp_path):
    V = _directions(seed=4)
    model = planted(V)
    xs = _sparse_amounts(40, 6, seed=2)
    g = torch.Generator().manual_seed(3)  # a matching b: the same concepts, shuffled, new amounts
    ys = [x[torch.randperm(6, generator=g)] * (0.5 + torch.rand(6, 1, generator=g)) for x in xs]
    concepts = Concepts.train(
        model,
        list(zip(xs, ys, strict=True)),
        concepts=K,
        topk=1,
        steps=300,
        seed=0,
        out=tmp_path / "d",
    )
    # each planted direction has its learnt concept (the decoder reconstructs it)
    D = torch.nn.functional.normalize(concepts.decoders["a"].double(), dim=0)
    cos = (D.T @ V).abs()  # [K learnt, K planted]
    match = cos.argmax(0)
    assert sorted(match.tolist()) == list(range(K)), "one learnt concept per planted one"
    assert cos.max(0).values.min() > 0.99
    x, y = _sparse_amounts(1, 5, seed=9)[0], _sparse_amounts(1, 4, seed=10)[0]
    ex = dualex.explain(model, x, y, steps=2)
    split = ex.concept_split(concepts)
    want = _planted_matrices(x, y)
    scale = want.abs().max()
    for j in range(K):
        learnt = int(match[j])
        got = (
            split.matrices[split.concepts.tolist().index(learnt)]
            if learnt in split.concepts
            else torch.zeros_like(want[j])
        )
        assert (got - want[j]).abs().max() <= 0.03 * scale, f"planted concept {j}"
    assert split.residual_share < 0.03


def test_split_refuses_another_model_and_missing_projections(tmp_path):
    V = _directions()
    model = planted(V)
    concepts = Concepts.from_directions(model, V.T, V, topk=1)
    other = tiny_clip(seed=0)
    ex = dualex.explain(other, "a red circle", random_image(32, 32), steps=2)
    with pytest.raises(ModelMismatchError, match="planted"):
        ex.concept_split(concepts)
    with pytest.raises(ModelMismatchError, match="train one for this model"):
        concepts.check(other)
    x, y = _sparse_amounts(2, 3, seed=0)
    own = dualex.explain(model, x, y, steps=2)
    concepts.check(model)  # its own model passes
    path = own.save(tmp_path / "e.safetensors")
    with pytest.raises(InvalidInputError, match="projections=True"):
        dualex.Explanation.load(path).concept_split(concepts)
    kept = dualex.Explanation.load(own.save(tmp_path / "p.safetensors", projections=True))
    assert torch.equal(kept.concept_split(concepts).matrices, own.concept_split(concepts).matrices)
