"""``dualex.project`` on an n × m grid: this checkout against another one, as a ratio.

Each measurement runs in its own subprocess with one dualex source tree first on the path; the
two trees alternate (A, B, A, B, ...) so that a noisy machine affects both alike, and the table
gives the median time of each and their ratio. Models: the built-in model and a random-init HF
CLIP ViT-B/32 at 224 px (CLIP's BPE tokenizer from ../shared when present). Default settings
(adaptive steps, the input of the last block).

    python benchmarks/project_batch.py --other /path/to/other/src [--n 16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"
TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "data" / "clip-tokenizer"


def worker(model_name: str, n: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    import dualex
    from dualex.data.synthetic import generate

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if model_name == "builtin":
        model = dualex.load("builtin")
        scenes = generate(n, seed=11)
        texts, images = [s.caption for s in scenes], [s.image for s in scenes]
    else:
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

        from dualex.models.factory import word_tokenizer

        words = [
            "a",
            "photo",
            "of",
            "the",
            "dog",
            "cat",
            "red",
            "blue",
            "car",
            "on",
            "in",
            "grass",
            "snow",
            "sled",
            "white",
            "big",
        ]
        tok = (
            CLIPTokenizerFast.from_pretrained(str(TOKENIZER))
            if TOKENIZER.is_dir()
            else word_tokenizer(words)
        )
        torch.manual_seed(0)
        cfg = CLIPConfig(
            text_config={"vocab_size": max(len(tok), 49408)},
            vision_config={"patch_size": 32, "image_size": 224},
            projection_dim=512,
        )
        cfg._attn_implementation = "eager"
        m = CLIPModel(cfg).eval()
        model = dualex.wrap(m, tokenizer=tok, image_processor=CLIPImageProcessor())
        rng = np.random.RandomState(0)
        texts = [" ".join(rng.choice(words, size=6 + i % 4)) for i in range(n)]
        images = [Image.fromarray((rng.rand(240, 320, 3) * 255).astype("uint8")) for _ in range(n)]
    start = time.perf_counter()
    proj = dualex.project(model, texts=texts, images=images)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "steps": sorted({p.steps for p in proj.a + proj.b})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other", required=True, help="src folder of the dualex to compare with")
    ap.add_argument("--n", type=int, default=16, help="captions and images per side")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models", default="builtin,vit-b32")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return
    trees = {"this": str(HERE), "other": str(Path(args.other).resolve())}
    rows = []
    for model in args.models.split(","):
        times: dict[str, list[float]] = {"this": [], "other": []}
        for _ in range(args.repeats):
            for label in ("other", "this"):
                env = dict(os.environ, PYTHONPATH=trees[label])
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--other",
                        args.other,
                        "--worker",
                        model,
                        str(args.n),
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                times[label].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
        this, other = statistics.median(times["this"]), statistics.median(times["other"])
        rows.append((model, other, this, other / this))
    print(
        f"project() of {args.n} captions x {args.n} images, torch threads "
        f"{os.environ.get('BENCH_THREADS', '2')}, median of {args.repeats} alternating runs\n"
    )
    print("| model | other (s) | this (s) | speed-up |\n|---|---|---|---|")
    for model, other, this, ratio in rows:
        print(f"| {model} | {other:.2f} | {this:.2f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
