"""Speed, memory and exactness of ``dualex.explain`` on ViT-B CLIP configs (random init).

For each config (HF CLIPModel, ViT-B/32 and ViT-B/16 at 224 px, 12+12 blocks, layer = input of
the last block) one subprocess builds the model, times the plain forward pass of the pair (text +
image tower), times ``explain`` (adaptive Gauss–Legendre steps, default tolerance), and reports
the ratio, the process's peak RSS, the completeness error and the steps used. Ratios are measured
within one process run, back to back (the machine may be noisy; compare ratios, not seconds).

    python benchmarks/speed.py [--configs B/32,B/16] [--layer -2] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CAPTION = "a white husky dog lying in the snow next to a red sled"
TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "data" / "clip-tokenizer"


def _tokenizer():
    from transformers import CLIPTokenizerFast

    if TOKENIZER.is_dir():
        return CLIPTokenizerFast.from_pretrained(str(TOKENIZER)), "CLIP BPE"
    from dualex.models.factory import word_tokenizer

    return word_tokenizer(CAPTION.split()), "word-level (CLIP BPE folder not found)"


def run_one(name: str, layer: int | None, steps: int | None, repeats: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    import dualex

    torch.manual_seed(0)
    patch = {"B/32": 32, "B/16": 16}[name]
    tok, tok_name = _tokenizer()
    cfg = CLIPConfig(
        text_config={"vocab_size": max(len(tok), 49408)},
        vision_config={"patch_size": patch, "image_size": 224},
        projection_dim=512,
    )
    cfg._attn_implementation = "eager"
    model = CLIPModel(cfg).eval()
    de = dualex.wrap(model, tokenizer=tok, image_processor=CLIPImageProcessor(), name=f"ViT-{name}")
    image = Image.fromarray((np.random.RandomState(0).rand(300, 400, 3) * 255).astype("uint8"))
    it, ii = de.tower_a.prepare(CAPTION), de.tower_b.prepare(image)

    def forward():
        with torch.no_grad():
            de.tower_a.encode(it.data)
            de.tower_b.encode(ii.data)

    forward()  # warm-up
    t_fwd = min(_timed(forward) for _ in range(repeats))
    dualex.explain(de, CAPTION, image, layers=layer, steps=2)  # warm-up of the AD paths
    times, ex = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        ex = dualex.explain(de, CAPTION, image, layers=layer, steps=steps)
        times.append(time.perf_counter() - t0)
    t_exp = min(times)
    c = ex.completeness
    return {
        "config": f"ViT-{name}",
        "matrix": list(ex.matrix.shape),
        "layers": list(ex.layers),
        "forward_s": t_fwd,
        "explain_s": t_exp,
        "ratio": t_exp / t_fwd,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "relative_error": c.relative_error,
        "tower_errors": list(c.tower_errors),
        "steps": list(c.steps),
        "tokenizer": tok_name,
        "threads": torch.get_num_threads(),
    }


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="B/32,B/16")
    ap.add_argument(
        "--layer", type=int, default=None, help="split layer (default: last block input)"
    )
    ap.add_argument("--steps", type=int, default=None, help="fixed steps (default: adaptive)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.layer, args.steps, args.repeats)))
        return
    rows = []
    for name in args.configs.split(","):
        cmd = [sys.executable, __file__, "--one", name, "--repeats", str(args.repeats)]
        if args.layer is not None:
            cmd += ["--layer", str(args.layer)]
        if args.steps is not None:
            cmd += ["--steps", str(args.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    head = (
        "config",
        "matrix",
        "layers",
        "forward s",
        "explain s",
        "explain/forward",
        "peak RSS MB",
        "rel. error",
        "tower errors",
        "steps",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(
            f"| {r['config']} | {r['matrix'][0]}x{r['matrix'][1]} | {r['layers']} | "
            f"{r['forward_s']:.3f} | {r['explain_s']:.2f} | {r['ratio']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['relative_error']:.1e} | "
            f"{r['tower_errors'][0]:.1e}, {r['tower_errors'][1]:.1e} | {r['steps']} |"
        )
    print(f"\ntokenizer: {rows[0]['tokenizer']}; torch threads: {rows[0]['threads']}")


if __name__ == "__main__":
    main()
