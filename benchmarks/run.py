"""The performance table: explain against the plain forward pass, per family, in one run.

    python -m benchmarks.run [--quick] [--device cuda] [--out benchmarks/results.json]
    (also: make bench)

On the CPU every row runs in its own subprocess (a fresh process: its own peak memory, no shared
caches); with ``--device cuda`` every row runs in this one process on the GPU (float32, timings
synchronised, memory from the CUDA allocator's peak), so a lent GPU gives the GPU rows in one
command. Each row builds a random-init model at 224 px, times the plain forward of the pair
(text tower and image tower apart, median of 3), warms up with one explanation of another image
(the input-independent reference hidden states and embeddings are then cached, as in any run over
a dataset), then times the workload. Ratios are taken back to back inside one process, so a noisy
machine affects both sides alike.

Rows: explain at the default split (HF CLIP, open_clip, OpenAI: the last block's input; SigLIP and
SigLIP-2 NaFlex, B/16 only: the text's last block and the image's attention-pool head) for
ViT-B/32 and ViT-B/16; throughput of 1 image × 80 captions and a 16 × 16 grid through ``project`` and of a dataset job
(``dualex explain --data``'s runner, 200 synthetic pairs), in pairs per second; layers 0 and 6 of
12 (the generic path); open_clip RN50 (CNN); and exclip 1.1 on the same open_clip ViT-B/32 pair
(its N = 10 Riemann sum; full run only, ``--no-exclip`` keeps the last measurement).

The *bound* column is the cost model, in forwards of the pair (F_t: tower t's forward, L_t its
blocks, n_t its nodes, S_t its positions, l_t its split layer):

* fast path (pooled-row or attention-pool structure): ``F_t · (1 + n_t / L_t)`` — the input's
  forward and about one block of matrix products per node;
* generic path: ``F_t · (1 + n_t · S_t · (L_t − l_t) / L_t)`` — one tangent per position per
  node through the blocks after the split.

The *before* column is the ratio of the same row in the results file this run replaces.
``--quick`` keeps the B/32 rows.
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
    """A random-init model of ``family`` (hf, openclip, openai, siglip, siglip2 NaFlex, rn50) at
    ``arch`` (B/32, B/16)."""
    import torch

    import dualex

    torch.manual_seed(0)
    patch = int(arch.split("/")[1]) if "/" in arch else 16
    tiny = os.environ.get("BENCH_TINY") == "1"  # the harness's own test: width 32, 32 px
    size = 32 if tiny else 224
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2} if tiny else {}
    small_heads = {"num_attention_heads": 2} if tiny else {}
    if tiny:
        patch = 8
    if family == "hf":
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

        tok = _clip_tokenizer()
        cfg = CLIPConfig(
            text_config={"vocab_size": max(len(tok), 49408), **small, **small_heads},
            vision_config={"patch_size": patch, "image_size": size, **small, **small_heads},
            projection_dim=16 if tiny else 512,
        )
        cfg._attn_implementation = "eager"
        proc = CLIPImageProcessor(size={"shortest_edge": size}, crop_size=size)
        return dualex.wrap(CLIPModel(cfg).eval(), tokenizer=tok, image_processor=proc)
    if family == "siglip":
        from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

        tok = _clip_tokenizer()
        cfg = SiglipConfig(
            text_config={
                "vocab_size": max(len(tok), 49408),
                "max_position_embeddings": 64,
                **small,
                **small_heads,
            },
            vision_config={"patch_size": patch, "image_size": size, **small, **small_heads},
        )
        cfg._attn_implementation = "eager"
        proc = SiglipImageProcessor(size={"height": size, "width": size})
        return dualex.wrap(SiglipModel(cfg).eval(), tokenizer=tok, image_processor=proc)
    if family == "siglip2":
        from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

        tok = _clip_tokenizer()
        cfg = Siglip2Config(
            text_config={
                "vocab_size": max(len(tok), 49408),
                "max_position_embeddings": 64,
                **small,
                **small_heads,
            },
            vision_config={
                "patch_size": patch,
                "num_patches": (size // patch) ** 2,
                **small,
                **small_heads,
            },
        )
        cfg._attn_implementation = "eager"
        proc = Siglip2ImageProcessor(patch_size=patch, max_num_patches=(size // patch) ** 2)
        return dualex.wrap(Siglip2Model(cfg).eval(), tokenizer=tok, image_processor=proc)
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


class Clock:
    """Wall time and peak memory growth on the CPU (RSS) or a CUDA device (allocator peak)."""

    def __init__(self, device: str) -> None:
        import torch

        self.cuda = device.startswith("cuda")
        self.torch = torch

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def now(self) -> float:
        self.sync()
        return time.perf_counter()

    def start_memory(self) -> float:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
            return self.torch.cuda.memory_allocated() / 1024**2
        from benchmarks.agreement_exclip import _reset_peak, _rss_mb

        _reset_peak()
        return _rss_mb("VmRSS")

    def growth(self, start: float) -> float:
        if self.cuda:
            return self.torch.cuda.max_memory_allocated() / 1024**2 - start
        from benchmarks.agreement_exclip import _rss_mb

        return _rss_mb("VmHWM") - start


def bound(tower, fast: bool, forward_s: float, steps: int, positions: int, layer: int) -> float:
    """The cost model of one tower's projection, in seconds (see the module docstring)."""
    L = tower.num_layers
    if fast:
        return forward_s * (1 + steps / L)
    return forward_s * (1 + steps * positions * max(L - layer, 0) / L)


def _data_job(model, n: int, clock: Clock) -> float:
    """Seconds of ``dualex explain --data``'s runner on ``n`` synthetic pairs (local backend)."""
    import shutil
    import tempfile

    from dualex.scale import Job, run_job

    job = Job(
        "benchmark-model",
        f"synthetic:seed=901,n={n}",
        "explain",
        ("dualex",),
        {"layers": None, "steps": None, "shard_size": 16, "limit": None},
    )
    root = Path(tempfile.mkdtemp(prefix="dxbench-"))
    try:
        t0 = clock.now()
        result = run_job(job, root / "out", backend="local", model=model, progress=False)
        seconds = clock.now() - t0
        if result.failed:
            raise RuntimeError(f"data job: {len(result.failed)} shards failed")
        assert result.n_samples == n, result.n_samples
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return seconds


def worker(row: dict, device: str = "cpu") -> dict:
    import torch

    import dualex

    if device == "cpu":
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    clock = Clock(device)
    model = build(row["family"], row["arch"])
    if device != "cpu":
        model.module.to(device)
    image, other = _images(2)
    towers = (model.tower_a, model.tower_b)
    inps = (towers[0].prepare(CAPTION), towers[1].prepare(image))

    def forward(k: int) -> float:
        t0 = clock.now()
        with torch.no_grad(), model.session():
            towers[k].encode(towers[k].on_device(inps[k].data))
        return clock.now() - t0

    forward(0), forward(1)
    layers = row.get("layers")
    dualex.explain(model, CAPTION, other, layers=layers)  # warm-up: references cached
    mem0 = clock.start_memory()
    t0 = clock.now()
    ex = dualex.explain(model, CAPTION, image, layers=layers)
    times = [clock.now() - t0]
    grow = clock.growth(mem0)
    # explain and forward alternate, medians of each: a machine whose load drifts affects both
    repeats = int(os.environ.get("BENCH_REPEATS", "3")) if row.get("layers") is None else 1
    tower_times: list[list[float]] = [[], []]
    for i in range(repeats):
        for k in (0, 1):
            tower_times[k].append(forward(k))
        if i + 1 < repeats:
            t0 = clock.now()
            dualex.explain(model, CAPTION, image, layers=layers)
            times.append(clock.now() - t0)
    tower_s = [statistics.median(t) for t in tower_times]
    fwd = sum(tower_s)
    pair = statistics.median(times)
    fast = [
        t.fast_path([inp], layer) is not None
        for t, inp, layer in zip(towers, inps, ex.layers, strict=True)
    ]
    bounds = [
        bound(t, f, F, n, S, layer)
        for t, f, F, n, S, layer in zip(
            towers, fast, tower_s, ex.completeness.steps, ex.matrix.shape, ex.layers, strict=True
        )
    ]
    out = {
        **row,
        "device": device,
        "forward_s": fwd,
        "tower_forward_s": tower_s,
        "explain_s": pair,
        "ratio": pair / fwd,
        "bound": sum(bounds) / fwd,
        "memory_growth_mb": grow,
        "relative_error": ex.completeness.relative_error,
        "steps": list(ex.completeness.steps),
        "positions": list(ex.matrix.shape),
        "layers_used": list(ex.layers),
        "fast_path": fast,
    }
    workload = row.get("workload")
    if workload == "sweep80":
        captions = [f"a photo of a {w}" for w in (WORDS * 6)[:80]]
        t0 = clock.now()
        dualex.project(model, texts=captions, images=[image])
        out["workload_s"], out["pairs"] = clock.now() - t0, 80
    elif workload == "grid16":
        captions = [" ".join(WORDS[i : i + 5]) for i in range(16)]
        t0 = clock.now()
        dualex.project(model, texts=captions, images=_images(16, seed=3))
        out["workload_s"], out["pairs"] = clock.now() - t0, 256
    elif workload == "data200":
        n = int(os.environ.get("BENCH_DATA_PAIRS", "200"))
        out["workload_s"], out["pairs"] = _data_job(model, n, clock), n
    if "workload_s" in out:
        out["pairs_per_s"] = out["pairs"] / out["workload_s"]
        out["workload_ratio"] = out["workload_s"] / pair
    out["threads"] = torch.get_num_threads()
    return out


def row_key(r: dict) -> tuple:
    return (r["family"], r["arch"], r.get("layers"), r.get("workload", "pair"))


def rows(quick: bool) -> list[dict]:
    archs = ["B/32"] if quick else ["B/32", "B/16"]
    out = [{"family": f, "arch": a} for a in archs for f in ("hf", "openclip", "openai")]
    out += [
        {"family": "hf", "arch": "B/32", "workload": "sweep80"},
        {"family": "hf", "arch": "B/32", "workload": "grid16"},
        {"family": "hf", "arch": "B/32", "workload": "data200"},
        {"family": "siglip", "arch": "B/16"},
        {"family": "siglip2", "arch": "B/16"},
        {"family": "rn50", "arch": "RN50"},
    ]
    if not quick:
        out += [{"family": "hf", "arch": "B/32", "layers": layer} for layer in (0, 6)]
    return out


def _run_row(row: dict, device: str, in_process: bool = False) -> dict:
    if device != "cpu" or in_process:  # one process (on the GPU: always)
        try:
            return worker(row, device)
        except Exception as err:  # a failed row is reported in the table
            return {**row, "error": f"{type(err).__name__}: {err}"[:200]}
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


def _device_line(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, float32"
    return (
        f"device: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
        f"torch {torch.__version__}, threads {os.environ.get('BENCH_THREADS', '2')}"
    )


def _layer_name(r: dict) -> str:
    if r.get("layers") is not None:
        return str(r["layers"])
    used = r.get("layers_used")
    if r["family"].startswith("siglip") and used:
        return f"default {tuple(used)} (text last block, image head)"
    return "last block"


def table(
    results: list[dict], exclip: dict | None, before: dict[tuple, dict], device: str = "cpu"
) -> str:
    lines = [
        _device_line(device),
        "",
        "| model | layer | workload | explain (s) | forward (s) | ratio | before | bound | "
        "ratio / bound | memory growth (MB) | steps | rel. error | fast path |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    throughput = []
    for r in results:
        name = f"{r['family']} {r['arch']}"
        if "error" in r:
            lines.append(
                f"| {name} | | {r.get('workload', 'pair')} | error: {r['error']} |" + " |" * 9
            )
            continue
        old = before.get(row_key(r), {})
        was = f"{old['ratio']:.1f}×" if "ratio" in old else ""
        wl = "pair" if "workload" not in r else f"pair (of the {r['workload']} run)"
        lines.append(
            f"| {name} | {_layer_name(r)} | {wl} | {r['explain_s']:.2f} | {r['forward_s']:.3f} | "
            f"{r['ratio']:.1f}× | {was} | {r['bound']:.1f}× | {r['ratio'] / r['bound']:.2f} | "
            f"{r['memory_growth_mb']:.0f} | {r['steps']} | {r['relative_error']:.1e} | "
            f"{r['fast_path']} |"
        )
        if "workload_s" in r:
            was = ""
            if "pairs_per_s" in old:
                was = f"{old['pairs_per_s']:.1f}"
            elif "workload_s" in old and "pairs" in r:
                was = f"{r['pairs'] / old['workload_s']:.1f}"
            throughput.append(
                f"| {name} | {r['workload']} | {r['pairs']} | {r['workload_s']:.1f} | "
                f"{r['pairs_per_s']:.1f} | {was} | {r['pairs_per_s'] * r['explain_s']:.1f}× |"
            )
    if throughput:
        lines += [
            "",
            "Throughput (pairs per second; the speed-up is against one explain call per pair):",
            "",
            "| model | workload | pairs | time (s) | pairs/s | before | vs explain per pair |",
            "|---|---|---|---|---|---|---|",
            *throughput,
        ]
    if exclip:
        lines += [
            "",
            "exclip 1.1 on the same open_clip ViT-B/32 pair (Riemann N = 10, layer 11):",
            "",
        ]
        if "error" in exclip:
            lines.append(f"exclip: {exclip['error']}")
        else:
            note = " (kept from an earlier run)" if exclip.get("kept") else ""
            lines.append(
                f"exclip {exclip['exclip_s']:.1f} s vs dualex {exclip['dualex_s']:.2f} s "
                f"({exclip['speed_ratio']:.0f}× faster); extra memory {exclip['exclip_extra_mb']:.0f}"
                f" MB vs {exclip['dualex_extra_mb']:.0f} MB ({exclip['memory_ratio']:.0f}×){note}"
            )
    return "\n".join(lines)


NOTES = """
Notes:

- Adaptive steps try nested rules: Gauss–Legendre with 4 nodes, then its Kronrod–Patterson
  extensions with 9, 19 and 39 nodes (each keeps every node already evaluated), then
  Gauss–Legendre with `max_steps`; a tower stops at the first rule whose completeness error is
  at most the tolerance. The reference embedding ē is cached per tower, layer and weights.
- SigLIP and SigLIP-2 image towers are split at the input of their attention-pool head by
  default (the output of the last block, `layers=num_layers`), not at the last block's input:
  every row of the last block feeds the head, so a split there costs S² rows of the block's MLP
  per node (the generic path), while at the head's input the learned probe is the only query and
  a node costs about one block. Their text towers keep the last block's input (pooled at the
  last position). Pass `layers=(L_text, L_image)` to choose another split.
- On a shared CPU the rows of one run can differ by 2× or more for equal work (the four
  hf B/32 pair rows repeat one measurement); a ratio is only comparable within its row.
- On a GPU: `python -m benchmarks.run --device cuda` runs every row in one process in float32
  (inputs of one shape are already batched through `project`), with synchronised timings and the
  CUDA allocator's peak as memory growth, and writes `docs/performance-gpu.md`.
"""


def _write_doc(doc: Path, text: str, quick: bool, gpu: bool, device: str) -> None:
    command = "python -m benchmarks.run" + (" --quick" if quick else "")
    command += f" --device {device}" if gpu else ""
    where = "one GPU" if gpu else "this project's 2-core CPU machine"
    kept = _other_sections(doc, text + NOTES)
    doc.write_text(
        "# Performance\n\nRegenerate with `" + command + "` (or `make bench`). Random-init "
        "models at 224 px, default accuracy (completeness ≤ 1e-3), measured on " + where + "; "
        "ratios are taken within one process. *before*: the same row in the table this one "
        "replaced; *bound*: the cost model of `benchmarks/run.py` (fast path: the input's forward "
        "plus one block per quadrature node; generic path: one tangent per position per node "
        "through the blocks after the split), in forwards of the pair.\n\n"
        + text
        + "\n"
        + NOTES
        + kept
    )


def _other_sections(doc: Path, generated: str) -> str:
    """The page's ``## `` sections that other benchmarks write (e.g. ``benchmarks.search``'s
    "Explain a search"), kept as they are when this harness rewrites its own part."""
    if not doc.exists():
        return ""
    parts = doc.read_text().split("\n## ")[1:]
    mine = {line[3:].strip() for line in generated.splitlines() if line.startswith("## ")}
    kept = [p for p in parts if p.splitlines()[0].strip() not in mine]
    return "".join("\n## " + p.rstrip("\n") + "\n" for p in kept)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="B/32 rows only, no exclip")
    ap.add_argument("--device", default="cpu", help="cpu (a subprocess per row) or cuda")
    ap.add_argument("--no-exclip", action="store_true", help="keep the last exclip measurement")
    ap.add_argument(
        "--only", help="comma-separated families to run; the other rows are kept from the last run"
    )
    ap.add_argument("--out", type=Path, default=None, help="results JSON")
    ap.add_argument("--doc", type=Path, default=None, help="Markdown page")
    ap.add_argument(
        "--in-process", action="store_true", help="every row in this process (as on a GPU)"
    )
    ap.add_argument("--render", action="store_true", help="rewrite the page from the results file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    gpu = args.device != "cpu"
    out = args.out or ROOT / "benchmarks" / ("results-gpu.json" if gpu else "results.json")
    doc = args.doc or ROOT / "docs" / ("performance-gpu.md" if gpu else "performance.md")
    previous = json.loads(out.read_text()) if out.exists() else {}
    if args.render:  # the page again from the results file, nothing measured
        before = {row_key(r): r for r in previous.get("before", []) if "error" not in r}
        text = table(previous["rows"], previous.get("exclip"), before, args.device)
        _write_doc(doc, text, args.quick, gpu, args.device)
        print(text)
        return 0
    last = {row_key(r): r for r in previous.get("rows", []) if "error" not in r}
    earlier = {row_key(r): r for r in previous.get("before", []) if "error" not in r}
    wanted = rows(args.quick)
    only = set(args.only.split(",")) if args.only else None
    results, before = [], {}
    for r in wanted:
        key = row_key(r)
        if only is None or r["family"] in only:
            results.append(_run_row(r, args.device, args.in_process))
            old = earlier.get(key) if only is not None else None  # a partial rerun: the
            old = old or last.get(key)  # row the table's last full run replaced
            if old is not None:
                before[key] = old
        elif key in last:  # kept as it was, beside the row it replaced then
            results.append(last[key])
            if key in earlier:
                before[key] = earlier[key]
    exclip = None
    if not args.quick and not gpu:
        if args.no_exclip and previous.get("exclip"):
            exclip = {**previous["exclip"], "kept": True}
        elif not args.no_exclip:
            exclip = _exclip_row()
    text = table(results, exclip, before, args.device)
    print(text)
    old_rows = list(before.values())
    out.write_text(json.dumps({"rows": results, "exclip": exclip, "before": old_rows}, indent=1))
    _write_doc(doc, text, args.quick, gpu, args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
