"""Explain a search: what a search with k = 10 explained hits costs, what an index stores, and
how fast it builds, on the built-in model and on a random-init HF CLIP ViT-B/32 at 224 px.

    python -m benchmarks.search [--models builtin,hf-clip-b32-224] [--steps adaptive,4]

Per model, in one process (ratios are taken back to back, so a busy machine affects both sides):

- ``search / text forward``: ``Index.search(query, k=10)`` (the query's projection, the scores
  of the whole gallery, k explanations from the stored projections) against one plain forward of
  the query through the text tower; medians over 5 queries, after one warm-up search (the
  input-independent reference hidden states are then cached, as in any session).
- ``bytes / image``: the projection files of an image-only index over the gallery, float32 and
  float16, divided by the number of images.
- ``float16 error``: the largest relative error of a stored ``P`` (``index.json``'s
  ``float16_error``) and of the k hits' interaction matrices against the float32 index
  (``‖M16 − M32‖ / ‖M32‖``, Frobenius).
- ``build / explain --data``: building an index of the gallery's images and captions (the same
  projections as ``explain --data``, no pair products) against the ``explain`` task of the same
  job runner over the same (image, caption) pairs; both from image files, same shard size.

Prints one Markdown table (rows for docs/performance.md) and the JSON of every number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

QUERIES = [
    "a red circle",
    "two blue squares",
    "a small green triangle left of a star",
    "a yellow heart",
    "a purple cross above an orange circle",
]


def _gallery(model_name: str, n: int, folder: Path) -> tuple[list[str], list[str]]:
    """``n`` image files and one caption each: synthetic scenes (their own captions)."""
    from dualex.data.sources import parse_data_spec

    size = 64 if model_name == "builtin" else 224
    samples = list(parse_data_spec(f"synthetic:seed=21,n={n},image_size={size}").samples())
    paths = []
    for i, s in enumerate(samples):
        p = folder / f"scene-{i:03d}.png"
        s.image.save(p)
        paths.append(str(p))
    return paths, [s.caption for s in samples]


def _model(name: str):
    import torch

    import dualex

    torch.manual_seed(0)
    if name == "builtin":
        return dualex.load("builtin")
    from benchmarks.run import build

    return build("hf", "B/32")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in (folder / "projections").glob("*.safetensors"))


def measure(name: str, n: int, steps: int | None = None, k: int = 10) -> dict:
    import torch

    from dualex.data.types import ImageRef, Sample
    from dualex.scale import Job, run_job
    from dualex.search import Index

    model = _model(name)
    tmp = Path(tempfile.mkdtemp(prefix="dualex-bench-search-"))
    paths, captions = _gallery(name, n, tmp)
    out: dict = {"model": name, "n_images": n, "k": k, "steps": steps or "adaptive"}
    out["threads"] = torch.get_num_threads()

    # storage and search: image-only indexes, float32 and float16
    t0 = time.perf_counter()
    idx = Index.build(model, tmp / "f32", images=paths, steps=steps)
    out["build_images_s"] = time.perf_counter() - t0
    half = Index.build(model, tmp / "f16", images=paths, dtype="float16", steps=steps)
    out["bytes_per_image_f32"] = _size(tmp / "f32") / n
    out["bytes_per_image_f16"] = _size(tmp / "f16") / n
    out["float16_P_error"] = half.meta["float16_error"]

    idx.search("a photo", k=k)  # warm-up
    tower = model.tower_a

    def forward(q: str) -> float:
        inp = tower.prepare(q)
        t = time.perf_counter()
        with torch.no_grad(), model.session():
            tower.encode(inp.data)
        return time.perf_counter() - t

    forward(QUERIES[0])
    fwd, srch, proj, m_err = [], [], [], []
    for q in QUERIES:
        fwd.append(forward(q))
        t = time.perf_counter()
        idx.query_parts(q)
        proj.append(time.perf_counter() - t)
        t = time.perf_counter()
        hits = idx.search(q, k=k)
        srch.append(time.perf_counter() - t)
        exact = {h.id: h.explanation.matrix.double() for h in hits}
        for h in half.search(q, k=k):
            M = exact[h.id]
            m_err.append(float((h.explanation.matrix.double() - M).norm() / M.norm()))
    out["text_forward_s"] = statistics.median(fwd)
    out["search_s"] = statistics.median(srch)
    out["search_over_forward"] = out["search_s"] / out["text_forward_s"]
    out["query_projection_s"] = statistics.median(proj)
    out["projection_over_forward"] = out["query_projection_s"] / out["text_forward_s"]
    out["float16_matrix_error"] = max(m_err)
    out["query_steps"] = hits[0].explanation.completeness.steps[0]

    # build throughput: index of images + captions vs the explain task over the same pairs
    t0 = time.perf_counter()
    Index.build(model, tmp / "both", images=paths, texts=captions, shard_size=8, steps=steps)
    out["build_s"] = time.perf_counter() - t0
    samples = [
        Sample(image=ImageRef(p), caption=c, image_id=f"i{i}", caption_id=f"c{i}")
        for i, (p, c) in enumerate(zip(paths, captions, strict=True))
    ]
    job = Job(model=name, data="bench", task="explain", settings={"shard_size": 8, "steps": steps})
    t0 = time.perf_counter()
    run_job(job, tmp / "explain", samples=samples, model=model, progress=False)
    out["explain_data_s"] = time.perf_counter() - t0
    out["build_over_explain"] = out["build_s"] / out["explain_data_s"]
    return out


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="gallery images of the built-in model")
    ap.add_argument("--n-b32", type=int, default=12, help="gallery images of ViT-B/32")
    ap.add_argument(
        "--steps", default="adaptive,4", help="quadrature settings, comma-separated (adaptive|N)"
    )
    ap.add_argument(
        "--models",
        default="builtin,hf-clip-b32-224",
        help="comma-separated: builtin, hf-clip-b32-224",
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.models.split(",")
    settings = [None if s == "adaptive" else int(s) for s in args.steps.split(",")]
    sizes = {"builtin": args.n, "hf-clip-b32-224": args.n_b32}
    results = [measure(n, sizes[n], st) for n in names for st in settings]
    print(
        "| model | steps | gallery | search k=10 / text forward | of which the query's projection | bytes/image fp32 | bytes/image fp16 "
        "| fp16 error: P, hit matrices | build / explain --data |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['model']} | {r['steps']} (query: {r['query_steps']}) | {r['n_images']} "
            f"| {r['search_over_forward']:.2f}× "
            f"({r['search_s'] * 1e3:.1f} / {r['text_forward_s'] * 1e3:.1f} ms) "
            f"| {r['projection_over_forward']:.2f}× "
            f"| {r['bytes_per_image_f32']:,.0f} | {r['bytes_per_image_f16']:,.0f} "
            f"| {r['float16_P_error']:.1e}, {r['float16_matrix_error']:.1e} "
            f"| {r['build_over_explain']:.2f}× ({r['build_s']:.1f} / {r['explain_data_s']:.1f} s) |"
        )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
