"""Metrics of the built-in model on held-out synthetic scenes (reported in MODEL.md).

Run::

    python -m dualex.models.evaluate_builtin [--model DIR] [--out metrics.json]

* retrieval: image→text and text→image R@1 among 100 candidates (held-out images in groups of
  100, averaged), per domain, with 95 % percentile-bootstrap intervals over the queries
  (``<metric>_ci``; in-domain over the pooled plain and textured queries);
* hard negatives: how often the true caption scores above its hard negative, per kind;
* pointing game: the peak patch of ``dualex.explain(...).image_map(mention)`` has its centre inside
  one of the mention's boxes; the random baseline is the expected hit rate of a uniformly random
  patch; plus the completeness (relative) errors of those explanations.

In-domain = plain + textured (the training domains, new seeds); out-of-domain = cluttered.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dualex.data.synthetic import NEGATIVE_KINDS, generate
from dualex.models.train_builtin import EVAL_SEEDS, world_config

__all__ = [
    "evaluate",
    "format_markdown",
    "load_parts",
    "pointing_game",
    "retrieval",
    "samples",
]


def samples(domain: str, n: int, start: int = 0, world: str = "default") -> list[Any]:
    """``n`` held-out samples of a domain (seed from :data:`EVAL_SEEDS`) of a world
    (:data:`~dualex.models.train_builtin.WORLDS`: ``"default"`` for ``builtin``, ``"clip"`` for
    ``builtin-clip``)."""
    cfg = world_config(world=world)
    return generate(n, seed=EVAL_SEEDS[domain], domain=domain, start=start, config=cfg)


def load_parts(path: str | Path = "builtin") -> SimpleNamespace:
    """A model folder's (or a built-in model's, by spec) ``CLIPModel``, tokenizer, image processor
    and the wrapped ``dual``."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    import dualex
    from dualex.models.builtin import BUILTIN_MODELS

    name = str(path)
    d = str(BUILTIN_MODELS[name].folder if name in BUILTIN_MODELS else path)
    model = CLIPModel.from_pretrained(d, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(d)
    proc = CLIPImageProcessor.from_pretrained(d)
    dual = dualex.wrap(model, tokenizer=tok, image_processor=proc, name=name)
    return SimpleNamespace(model=model, tokenizer=tok, image_processor=proc, dual=dual)


@torch.no_grad()
def _embed(model: Any, texts: Sequence[str] | None = None, images: Sequence[Any] | None = None):
    hf = model.model
    if texts is not None:
        enc = model.tokenizer(list(texts), padding=True, return_tensors="pt")
        out = hf.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    else:
        px = model.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        out = hf.get_image_features(pixel_values=px)
    if not torch.is_tensor(out):
        out = out.pooler_output
    return F.normalize(out.float(), dim=-1)


def retrieval(model: Any, data: Sequence[Any], group: int = 100) -> dict[str, float]:
    """R@1 both ways among ``group`` candidates and the hard-negative win rate per kind.

    ``i2t_r1`` / ``t2i_r1`` count only the sample's own caption / image as a hit;
    ``*_r1_true`` also count any candidate the caption truly describes
    (:func:`~dualex.data.synthetic.caption_holds`: two scenes holding one small red circle each
    are both described by "a small red circle"); ``r1_ceiling`` is the best possible own-pair
    image→text R@1 of a model that cannot tell equivalent captions apart (mean of 1 / number of
    captions true for each image).

    Args:
        model: :func:`load_parts` of a model.
        data: Samples (one caption per image).
        group: Candidates per retrieval (``len(data)`` should be a multiple).
    """
    from dualex.data.synthetic import caption_holds

    img = _embed(model, images=[s.image for s in data])
    txt = _embed(model, texts=[s.caption for s in data])
    i2t, t2i, i2t_true, t2i_true, ceiling = [], [], [], [], []
    hits: dict[str, list[float]] = {"i2t_r1": [], "t2i_r1": []}
    for g0 in range(0, len(data) - group + 1, group):
        part = data[g0 : g0 + group]
        sim = img[g0 : g0 + group] @ txt[g0 : g0 + group].T
        target = torch.arange(group)
        hits["i2t_r1"] += (sim.argmax(1) == target).float().tolist()
        hits["t2i_r1"] += (sim.argmax(0) == target).float().tolist()
        i2t.append(float(np.mean(hits["i2t_r1"][-group:])))
        t2i.append(float(np.mean(hits["t2i_r1"][-group:])))
        # holds[c, i]: caption c describes image i (its own, or an equivalent scene's)
        holds = torch.tensor(
            [[caption_holds(c, i.meta["objects"], i.image.width) for i in part] for c in part]
        )
        i2t_true.append(holds[sim.argmax(1), target].float().mean().item())
        t2i_true.append(holds[target, sim.argmax(0)].float().mean().item())
        ceiling.append((1.0 / holds.sum(0).clamp(min=1)).mean().item())
    out = {
        "i2t_r1": float(np.mean(i2t)),
        "t2i_r1": float(np.mean(t2i)),
        "i2t_r1_true": float(np.mean(i2t_true)),
        "t2i_r1_true": float(np.mean(t2i_true)),
        "r1_ceiling": float(np.mean(ceiling)),
    }
    pos = (img * txt).sum(-1)
    for kind in NEGATIVE_KINDS:
        rows = [(i, n.caption) for i, s in enumerate(data) for n in s.negatives if n.kind == kind]
        if not rows:
            continue
        neg = _embed(model, texts=[c for _, c in rows])
        idx = torch.tensor([i for i, _ in rows])
        wins = pos[idx] > (img[idx] * neg).sum(-1)
        out[f"neg_{kind}"] = wins.float().mean().item()
        out[f"neg_{kind}_n"] = len(rows)
        hits[f"neg_{kind}"] = wins.float().tolist()
    out["hits"] = hits
    out.update(_intervals(hits))
    return out


def _intervals(hits: dict[str, list[float]]) -> dict[str, list[float]]:
    """95 % percentile-bootstrap intervals ``<key>_ci = [low, high]`` of per-query hit lists."""
    from dualex.stats import bootstrap_ci

    return {f"{k}_ci": list(bootstrap_ci(v)[1:3]) for k, v in hits.items() if v}


def pointing_game(
    model: Any,
    data: Sequence[Any],
    n_mentions: int = 500,
    layers: Sequence[int | None] = (None,),
    progress: bool = True,
) -> dict[str, Any]:
    """Pointing game of dualex heatmaps over the first ``n_mentions`` mentions of ``data``.

    Args:
        model: A :class:`dualex.DualEncoder`.
        data: Samples.
        n_mentions: How many mentions to score.
        layers: Split layers (``None``: dualex's default).
        progress: Progress bars.

    Returns:
        Per layer (``"default"`` or the index): ``{"hit": rate, "random": baseline rate,
        "n": mentions, "completeness_mean", "completeness_max"}``.
    """
    import dualex
    from dualex.pointing import box_mask
    from dualex.pointing import pointing_game as pointing

    items = []
    for s in data:
        for m in s.mentions:
            if len(items) >= n_mentions:
                break
            items.append((s, m))
    by_sample: dict[int, tuple[Any, list[Any]]] = {}
    for s, m in items:
        by_sample.setdefault(id(s), (s, []))[1].append(m)
    from tqdm.auto import tqdm

    out: dict[str, Any] = {}
    for layer in layers:
        hits, rand, errs = [], [], []
        t0 = time.time()
        for s, ms in tqdm(
            list(by_sample.values()), desc=f"pointing (layer {layer})", disable=not progress
        ):
            ex = dualex.explain(model, s.caption, s.image, layers=layer)
            errs.append(float(ex.completeness.relative_error))
            for m in ms:
                hits.append(bool(pointing(ex.image_map(tuple(m.span)), m.boxes, ex.b)))
                rand.append(float(box_mask(ex.b, m.boxes).mean()))
        out["default" if layer is None else str(layer)] = {
            "hit": float(np.mean(hits)),
            **_intervals({"hit": [float(h) for h in hits]}),
            "random": float(np.mean(rand)),
            "n": len(hits),
            "completeness_mean": float(np.mean(errs)),
            "completeness_max": float(np.max(errs)),
            "seconds": round(time.time() - t0, 1),
        }
    return out


def evaluate(
    model: Any = "builtin",
    n_images: int = 500,
    n_mentions: int = 500,
    n_mentions_ood: int = 200,
    layers: Sequence[int | None] = (None,),
    progress: bool = True,
    world: str = "default",
) -> dict[str, Any]:
    """All metrics of MODEL.md.

    Args:
        model: ``"builtin"``, ``"builtin-clip"``, a model folder, or :func:`load_parts`' result.
        n_images: Held-out images per domain for retrieval / negatives (multiple of 100).
        n_mentions: In-domain mentions of the pointing game (half plain, half textured).
        n_mentions_ood: Cluttered mentions of the pointing game.
        layers: Split layers to measure the pointing game at (``None`` = dualex's default).
        progress: Progress bars.
        world: The world of the held-out scenes (the model's training world).
    """
    if isinstance(model, str | Path):
        model = load_parts(model)
    res: dict[str, Any] = {"retrieval": {}, "pointing": {}}
    data = {d: samples(d, n_images, world=world) for d in ("plain", "textured", "cluttered")}
    for d, s in data.items():
        res["retrieval"][d] = retrieval(model, s)
    both = [res["retrieval"][d] for d in ("plain", "textured")]
    ind = {
        k: float(np.mean([r[k] for r in both]))
        for k in both[0]
        if k != "hits" and not k.endswith("_ci")
    }
    pooled = {k: both[0]["hits"][k] + both[1]["hits"].get(k, []) for k in both[0]["hits"]}
    ind.update(_intervals(pooled))  # in-domain intervals over the pooled queries
    res["retrieval"]["in-domain"] = ind
    for d in ("plain", "textured", "cluttered"):
        del res["retrieval"][d]["hits"]
    # pointing game: interleave plain and textured samples
    mixed = [s for pair in zip(data["plain"], data["textured"], strict=True) for s in pair]
    for name, items, n in (("in-domain", mixed, n_mentions),
                             ("cluttered", data["cluttered"], n_mentions_ood)):  # fmt: skip
        if n > 0:  # 0 mentions: retrieval only
            res["pointing"][name] = pointing_game(model.dual, items, n, layers, progress)
    return res


def format_markdown(res: dict[str, Any]) -> str:
    """Markdown tables of :func:`evaluate`'s result."""
    doms = ["in-domain", "plain", "textured", "cluttered"]
    lines = [
        "| metric | " + " | ".join(doms) + " |",
        "|---|" + "---|" * len(doms),
    ]
    keys = [("i2t_r1", "image→text R@1 (of 100)"), ("t2i_r1", "text→image R@1 (of 100)"),
            ("i2t_r1_true", "image→text R@1, any true caption"),
            ("t2i_r1_true", "text→image R@1, any described image"),
            ("r1_ceiling", "own-pair R@1 ceiling (equivalent captions)")]  # fmt: skip
    keys += [(f"neg_{k}", f"true caption beats {k} negative") for k in NEGATIVE_KINDS]

    def cell(r: dict[str, Any], k: str) -> str:
        if r.get(k) is None:
            return "–"
        ci = r.get(f"{k}_ci")
        return f"{r[k]:.1%}" + (f" [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else "")

    for k, name in keys:
        lines.append(f"| {name} | " + " | ".join(cell(res["retrieval"][d], k) for d in doms) + " |")
    lines += ["", "| pointing game | layer | hit | random | mentions | completeness error mean / max |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for dom, per_layer in res["pointing"].items():
        for layer, r in per_layer.items():
            lines.append(
                f"| {dom} | {layer} | {cell(r, 'hit')} | {r['random']:.1%} | {r['n']} | "
                f"{r['completeness_mean']:.1e} / {r['completeness_max']:.1e} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: print the metrics as Markdown and optionally save them as JSON."""
    p = argparse.ArgumentParser(description="Evaluate the built-in model")
    p.add_argument("--model", default="builtin", help='"builtin", "builtin-clip" or a folder')
    p.add_argument("--world", default="default", help='held-out world: "default" or "clip"')
    p.add_argument("--out", default=None, help="write the metrics JSON here")
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--mentions", type=int, default=500)
    p.add_argument("--mentions-ood", type=int, default=200)
    p.add_argument("--layers", default="default", help='comma list, e.g. "default,0"')
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    layers = [None if x == "default" else int(x) for x in a.layers.split(",")]
    res = evaluate(a.model, a.images, a.mentions, a.mentions_ood, layers, world=a.world)
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    print(format_markdown(res))


if __name__ == "__main__":
    main()
