"""Noise of the cross-modal Banzhaf estimators on the built-in model: sign-weighted Monte Carlo
(``sign``) against per-tower ridge regression (``regression``) on the same coalitions.

Three measurements, all on dualex's masking game (:class:`dualex.evaluate.game.PairGame`):

1. *FIxLIP's level*: captions of ``synthetic:seed=906,n=12`` with the text side enumerated and
   4 096 image coalitions; the seed-to-seed relative difference ``‖I₀ − I₁‖_F / ‖I₀‖_F``.
2. *Both sides sampled*: 2×2 synthetic grids with four objects and a caption naming all four
   (~20 tokens), budget 4 096 split as ``eval``'s banzhaf splits it; the same difference.
3. *Error against exact enumeration*: one pair with a 4×4 region grid (16 image players, every
   coalition enumerable) and an enumerated text; relative error of the interactions against the
   exact ones as the image coalitions grow (the curve should fall as ``1/sqrt(K)``).

Prints one JSON object (and a table); ratios come from one run.

    python benchmarks/banzhaf_noise.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

CORNERS = ("top left", "top right", "bottom left", "bottom right")


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def terms(game, dt, di, et, ei, p=0.5):
    from dualex.evaluate.methods.banzhaf import cross_banzhaf

    return {
        est: cross_banzhaf(dt, di, et, ei, p, est).interactions for est in ("sign", "regression")
    }


def fixlip_level(model, n_captions: int, k_image: int) -> dict:
    from dualex.data.sources import parse_data_spec
    from dualex.evaluate.game import PairGame
    from dualex.faithful import design

    out = {"sign": [], "regression": [], "tokens": []}
    for s in list(parse_data_spec("synthetic:seed=906,n=12").samples())[:n_captions]:
        game = PairGame(model, s.image, s.caption)
        if game.n_text > 12:
            continue
        dt = design(game.n_text, 1 << game.n_text, 0.5)
        et = game.text_embeddings(dt.coalitions)
        runs = []
        for seed in (0, 1):
            di = design(game.n_image, k_image, 0.5, np.random.default_rng([seed, 7]))
            runs.append(terms(game, dt, di, et, game.image_embeddings(di.coalitions)))
        for est in ("sign", "regression"):
            out[est].append(rel(runs[0][est], runs[1][est]))
        out["tokens"].append(game.n_text)
    return out


def grid_level(model, n_grids: int, budget: int) -> dict:
    from dualex.data.grid import iter_synthetic_grids
    from dualex.evaluate.game import PairGame
    from dualex.evaluate.methods.banzhaf import split_budget
    from dualex.faithful import design

    out = {"sign": [], "regression": [], "tokens": [], "split": []}
    grids = [g for g in iter_synthetic_grids(4 * n_grids, seed=5) if len(g.mentions) == 4]
    for g in grids[:n_grids]:
        quads = g.meta["quadrants"]
        caption = "a picture of " + ", ".join(
            f"a {m.label} in the {CORNERS[q]}" for m, q in zip(g.mentions, quads, strict=True)
        )
        game = PairGame(model, g.image, caption)
        k_t, k_i = split_budget(budget, game.n_text, game.n_image)
        runs = []
        for seed in (0, 1):
            rng = np.random.default_rng([seed, 11])
            dt, di = design(game.n_text, k_t, 0.5, rng), design(game.n_image, k_i, 0.5, rng)
            et, ei = game.text_embeddings(dt.coalitions), game.image_embeddings(di.coalitions)
            runs.append(terms(game, dt, di, et, ei))
        for est in ("sign", "regression"):
            out[est].append(rel(runs[0][est], runs[1][est]))
        out["tokens"].append(game.n_text)
        out["split"].append([k_t, k_i])
    return out


def error_curve(model, ks: list[int], seeds: int) -> dict:
    from dualex.data.sources import parse_data_spec
    from dualex.evaluate.game import PairGame
    from dualex.faithful import design

    s = next(iter(parse_data_spec("synthetic:seed=906,n=12").samples()))
    game = PairGame(model, s.image, "a red circle left of a blue star", grid=(4, 4))
    dt = design(game.n_text, 1 << game.n_text, 0.5)
    et = game.text_embeddings(dt.coalitions)
    full = design(game.n_image, 1 << game.n_image, 0.5)
    t0 = time.perf_counter()
    e_all = game.image_embeddings(full.coalitions)
    exact = terms(game, dt, full, et, e_all)["sign"]
    seconds = time.perf_counter() - t0
    bits = (full.coalitions * (1 << np.arange(game.n_image))).sum(1)
    index = np.argsort(bits)  # row of each bitmask
    out = {"k": ks, "sign": [], "regression": [], "exact_seconds": seconds}
    for k in ks:
        errs = {"sign": [], "regression": []}
        for seed in range(seeds):
            di = design(game.n_image, k, 0.5, np.random.default_rng([seed, 3]))
            rows = index[(di.coalitions * (1 << np.arange(game.n_image))).sum(1)]
            got = terms(game, dt, di, et, e_all[rows])
            for est in errs:
                errs[est].append(rel(exact, got[est]))
        for est in errs:
            out[est].append(float(np.sqrt(np.mean(np.square(errs[est])))))
    return out


def timing(model) -> dict:
    import dualex
    from dualex.data.sources import parse_data_spec

    s = next(iter(parse_data_spec("synthetic:seed=906,n=12").samples()))
    out = {}
    dualex.explain(model, s.caption, s.image)  # warm-up
    for name, kw in (
        ("dualex", {}),
        ("banzhaf-2048", {"method": "banzhaf", "budget": 2048}),
        ("banzhaf-256", {"method": "banzhaf", "budget": 256}),
    ):
        t0 = time.perf_counter()
        for _ in range(3):
            dualex.explain(model, s.caption, s.image, **kw)
        out[name] = (time.perf_counter() - t0) / 3
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer captions, grids and seeds")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import dualex

    model = dualex.load("builtin")
    n = 4 if args.quick else 12
    res = {
        "fixlip_level": fixlip_level(model, n, 4096),
        "grid_level": grid_level(model, 3 if args.quick else 8, 4096),
        "curve": error_curve(model, [64, 256, 1024, 4096, 16384], 2 if args.quick else 4),
        "seconds_per_explanation": timing(model),
    }
    for part in ("fixlip_level", "grid_level"):
        r = res[part]
        print(
            f"{part}: tokens {r['tokens']}  seed-to-seed rel. difference: sign "
            f"{np.mean(r['sign']):.3f} (max {np.max(r['sign']):.3f}), regression "
            f"{np.mean(r['regression']):.3f} (max {np.max(r['regression']):.3f})"
        )
    c = res["curve"]
    print("K image coalitions | sign error | regression error | sign·sqrt(K) | reg·sqrt(K)")
    for k, a, b in zip(c["k"], c["sign"], c["regression"], strict=True):
        print(f"{k:6d} | {a:.4f} | {b:.4f} | {a * k**0.5:.3f} | {b * k**0.5:.3f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
