"""The performance table: explain against the plain forward pass, per family, in one run.

    python -m benchmarks.run [--quick] [--out benchmarks/results.json]     (also: make bench)

Every row runs in its own subprocess (a fresh process: its own peak memory, no shared caches):
it builds a random-init model at 224 px, times the plain forward of the pair (text tower + image
tower, median of 3), warms up with one explanation of another image (the input-independent
reference hidden states are then cached, as in any run over a dataset), then times the workload.
Ratios are taken back to back inside one process, so a noisy machine affects both sides alike.

Rows: explain at the last block's input (HF CLIP, open_clip, OpenAI; ViT-B/32 and ViT-B/16),
1 image × 80 captions and a 16 × 16 grid through ``project`` (against one pair), layers 0 and 6 of
12, SigLIP (attention-pool head) and open_clip RN50 (CNN), and exclip 1.1 on the same open_clip
ViT-B/32 pair (its N = 10 Riemann sum; full run only). ``--quick`` keeps the B/32 rows.
The table is printed as Markdown and written to docs/performance.md with the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT.parent / "shared" / "data" / "clip-tokenizer"
CAPTION = "a white husky dog lying in the snow next to a red sled"
WORDS = [
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
    "small",
    "two",
]


def _images(n: int, seed: int = 0):
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    return [Image.fromarray((rng.rand(300, 400, 3) * 255).astype("uint8")) for _ in range(n)]


def _clip_tokenizer():
    from transformers import CLIPTokenizerFast

    from dualex.models.factory import word_tokenizer

    if TOKENIZER.is_dir():
        return CLIPTokenizerFast.from_pretrained(str(TOKENIZER))
    return word_tokenizer(CAPTION.split() + WORDS)


def build(family: str, arch: str):
    """A random-init model of ``family`` (hf, openclip, openai, siglip) at ``arch`` (B/32, B/16)."""
    import torch

    import dualex

    torch.manual_seed(0)
    patch = int(arch.split("/")[1]) if "/" in arch else 16
    if family == "hf":
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

        tok = _clip_tokenizer()
        cfg = CLIPConfig(
            text_config={"vocab_size": max(len(tok), 49408)},
            vision_config={"patch_size": patch, "image_size": 224},
            projection_dim=512,
        )
        cfg._attn_implementation = "eager"
        return dualex.wrap(
            CLIPModel(cfg).eval(), tokenizer=tok, image_processor=CLIPImageProcessor()
        )
    if family == "siglip":
        from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

        tok = _clip_tokenizer()
        cfg = SiglipConfig(
            text_config={"vocab_size": max(len(tok), 49408), "max_position_embeddings": 64},
            vision_config={"patch_size": 16, "image_size": 224},
        )
        cfg._attn_implementation = "eager"
        proc = SiglipImageProcessor(size={"height": 224, "width": 224})
        return dualex.wrap(SiglipModel(cfg).eval(), tokenizer=tok, image_processor=proc)
    if family in ("openclip", "rn50"):
        import open_clip

        name = "RN50" if family == "rn50" else f"ViT-B-{patch}"
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        return dualex.wrap(model.eval(), preprocess, tokenizer=open_clip.get_tokenizer(name))
    if family == "openai":
        from dualex.towers.openai_clip import OPENAI_ARCHITECTURES, import_clip

        clip = import_clip()
        params = {
            **OPENAI_ARCHITECTURES[f"ViT-B/{patch}"],
            "context_length": 77,
            "vocab_size": 49408,
        }
        return dualex.wrap(clip.model.CLIP(**params).float().eval())
    raise SystemExit(f"unknown family {family}")


def worker(row: dict) -> dict:
    import torch
    from benchmarks.agreement_exclip import _reset_peak, _rss_mb

    import dualex

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model = build(row["family"], row["arch"])
    image, other = _images(2)
    ti, ii = model.tower_a.prepare(CAPTION), model.tower_b.prepare(image)

    def forward() -> float:
        t0 = time.perf_counter()
        with torch.no_grad(), model.session():
            model.tower_a.encode(ti.data)
            model.tower_b.encode(ii.data)
        return time.perf_counter() - t0

    forward()
    fwd = statistics.median(forward() for _ in range(3))
    layers = row.get("layers")
    dualex.explain(model, CAPTION, other, layers=layers)  # warm-up: references cached
    _reset_peak()
    rss0 = _rss_mb("VmRSS")
    t0 = time.perf_counter()
    ex = dualex.explain(model, CAPTION, image, layers=layers)
    pair = time.perf_counter() - t0
    grow = _rss_mb("VmHWM") - rss0
    out = {
        **row,
        "forward_s": fwd,
        "explain_s": pair,
        "ratio": pair / fwd,
        "memory_growth_mb": grow,
        "relative_error": ex.completeness.relative_error,
        "steps": list(ex.completeness.steps),
        "positions": list(ex.matrix.shape),
        "fast_path": [
            t.fast_path(
                [t.prepare(x)],
                t.check_layer(layers if not isinstance(layers, tuple) else layers[k]),
            )
            is not None
            for k, (t, x) in enumerate(((model.tower_a, CAPTION), (model.tower_b, image)))
        ],
    }
    if row.get("workload") == "sweep80":
        captions = [f"a photo of a {w}" for w in (WORDS * 6)[:80]]
        t0 = time.perf_counter()
        dualex.project(model, texts=captions, images=[image])
        out["workload_s"] = time.perf_counter() - t0
    elif row.get("workload") == "grid16":
        captions = [" ".join(WORDS[i : i + 5]) for i in range(16)]
        t0 = time.perf_counter()
        dualex.project(model, texts=captions, images=_images(16, seed=3))
        out["workload_s"] = time.perf_counter() - t0
    if "workload_s" in out:
        out["workload_ratio"] = out["workload_s"] / pair
    out["threads"] = torch.get_num_threads()
    return out


def rows(quick: bool) -> list[dict]:
    archs = ["B/32"] if quick else ["B/32", "B/16"]
    out = [{"family": f, "arch": a} for a in archs for f in ("hf", "openclip", "openai")]
    out += [
        {"family": "hf", "arch": "B/32", "workload": "sweep80"},
        {"family": "hf", "arch": "B/32", "workload": "grid16"},
        {"family": "siglip", "arch": "B/16"},
        {"family": "rn50", "arch": "RN50"},
    ]
    if not quick:
        out += [{"family": "hf", "arch": "B/32", "layers": layer} for layer in (0, 6)]
    return out


def _run_row(row: dict) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore", TQDM_DISABLE="1")
    cmd = [sys.executable, "-m", "benchmarks.run", "--worker", json.dumps(row)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        return {**row, "error": proc.stderr.strip().splitlines()[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _exclip_row() -> dict:
    import tempfile

    from benchmarks.agreement_exclip import DEFAULT_EXCLIP, _run

    with tempfile.TemporaryDirectory() as tmp:
        try:
            ex = _run("exclip", "openclip-B/32", 11, Path(tmp) / "e.safetensors", DEFAULT_EXCLIP)
            du = _run("dualex", "openclip-B/32", 11, Path(tmp) / "d.safetensors", DEFAULT_EXCLIP)
        except SystemExit as err:
            return {"error": str(err)[:300]}
    return {
        "exclip_s": ex["seconds"],
        "dualex_s": du["seconds"],
        "speed_ratio": ex["seconds"] / du["seconds"],
        "exclip_extra_mb": ex["extra_mb"],
        "dualex_extra_mb": du["extra_mb"],
        "memory_ratio": ex["extra_mb"] / max(du["extra_mb"], 1.0),
    }


def table(results: list[dict], exclip: dict | None) -> str:
    import torch

    lines = [
        f"device: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
        f"torch {torch.__version__}, threads {os.environ.get('BENCH_THREADS', '2')}",
        "",
        "| model | layer | workload | explain (s) | forward (s) | ratio | workload ratio | "
        "memory growth (MB) | steps | rel. error | fast path |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        name = f"{r['family']} {r['arch']}"
        if "error" in r:
            lines.append(f"| {name} | | | error: {r['error']} | | | | | | | |")
            continue
        layer = "last block" if r.get("layers") is None else str(r["layers"])
        wl = r.get("workload", "pair")
        wr = f"{r['workload_ratio']:.1f}×" if "workload_ratio" in r else ""
        lines.append(
            f"| {name} | {layer} | {wl} | {r['explain_s']:.2f} | {r['forward_s']:.3f} | "
            f"{r['ratio']:.1f}× | {wr} | {r['memory_growth_mb']:.0f} | {r['steps']} | "
            f"{r['relative_error']:.1e} | {r['fast_path']} |"
        )
    if exclip:
        lines += [
            "",
            "exclip 1.1 on the same open_clip ViT-B/32 pair (Riemann N = 10, layer 11):",
            "",
        ]
        if "error" in exclip:
            lines.append(f"exclip: {exclip['error']}")
        else:
            lines.append(
                f"exclip {exclip['exclip_s']:.1f} s vs dualex {exclip['dualex_s']:.2f} s "
                f"({exclip['speed_ratio']:.0f}× faster); extra memory {exclip['exclip_extra_mb']:.0f}"
                f" MB vs {exclip['dualex_extra_mb']:.0f} MB ({exclip['memory_ratio']:.0f}×)"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="B/32 rows only, no exclip")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    results = [_run_row(r) for r in rows(args.quick)]
    exclip = None if args.quick else _exclip_row()
    text = table(results, exclip)
    print(text)
    args.out.write_text(json.dumps({"rows": results, "exclip": exclip}, indent=1))
    command = "python -m benchmarks.run" + (" --quick" if args.quick else "")
    args.doc.write_text(
        "# Performance\n\nRegenerate with `" + command + "` (or `make bench`). Random-init "
        "models at 224 px, default accuracy (completeness ≤ 1e-3), measured on this project's "
        "2-core CPU machine; ratios are taken within one process.\n\n" + text + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
