"""Agreement of dualex with the paper's reference implementation, exclip 1.1, and their cost.

For seeded, randomly initialised open_clip ViT-B/32 and OpenAI-package ViT-B/32 and RN50 models,
each (model, layer) row runs exclip's explainer and ``dualex.explain`` with the same inputs, the
paper's settings (right Riemann sum, N = 10) and the exclip-compatible references (text
``[BOS, 0, EOS, 0, …]``, all-zero image in normalised space). dualex's full matrix is cropped the
way exclip returns it (text rows 0..EOT, the CLS column dropped, patches as a grid; for a ResNet the
feature-map cells) and compared: max |dualex − exclip| / max |exclip| per row.

Every run is its own subprocess, so time (``explain`` only) and peak resident memory (the
high-water mark is reset right before ``explain``) belong to that method alone. Each worker builds
the model from the same seed and reports a checksum of its weights; the parent checks they match.

exclip is installed OUTSIDE the project's venv (it pins an old setuptools for the clip package):

    pip install --no-deps --target .venv/exclip exclip==1.1 clip-anytorch "setuptools<70"
    python benchmarks/agreement_exclip.py                  # all rows (~10 min on 2 cores)
    python benchmarks/agreement_exclip.py --rows openclip-B/32:11 --install

Rows are ``<model>:<layer>`` with models ``openclip-B/32``, ``openai-B/32`` and ``openai-RN50``
(for RN50 the layer is exclip's ResNet stage: the input of ``visual.layer<L>``, which is dualex's
layer ``L`` too; its text layer is 11). exclip's dense feature-pair matrix for RN50 stage 4 is
S_t·512 × 1024·14·14 floats, several copies at once, so that row uses a short caption.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXCLIP = ROOT / ".venv" / "exclip"
DEFAULT_ROWS = [
    "openclip-B/32:11",
    "openclip-B/32:5",
    "openai-B/32:11",
    "openai-B/32:5",
    "openai-RN50:4",
]
CAPTIONS = {
    "openclip-B/32": "a photo of a cat on a sofa",
    "openai-B/32": "a photo of a cat on a sofa",
    "openai-RN50": "a cat",  # exclip's RN50 matrix: ~2 GB per text token at stage 4
}
SEED = 0
STEPS = 10


# ---------------------------------------------------------------------------------------------
# worker side (one method, one row, one process)
# ---------------------------------------------------------------------------------------------


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _image():
    try:
        from PIL import Image
        from skimage import data

        return Image.fromarray(data.chelsea())  # 451 x 300, a cat
    except ImportError:
        import numpy as np
        from PIL import Image

        return Image.fromarray((np.random.RandomState(0).rand(300, 451, 3) * 255).astype("uint8"))


def _build(model_name: str):
    """The seeded random model and its dualex wrapper."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    if model_name == "openclip-B/32":
        import open_clip

        from dualex.towers.openclip import wrap_openclip

        torch.manual_seed(SEED)
        model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32")
        model.eval()
        de = wrap_openclip(model, preprocess, open_clip.get_tokenizer("ViT-B-32"), name=model_name)
        return model, de
    from dualex.towers.openai_clip import OPENAI_ARCHITECTURES, import_clip, wrap_openai

    clip = import_clip()
    arch = {"openai-B/32": "ViT-B/32", "openai-RN50": "RN50"}[model_name]
    torch.manual_seed(SEED)
    model = clip.model.CLIP(**OPENAI_ARCHITECTURES[arch], context_length=77, vocab_size=49408)
    model = model.float().eval()
    return model, wrap_openai(model, name=model_name)


def _checksum(model) -> float:
    import torch

    with torch.no_grad():
        return float(sum(p.double().sum() * (i + 1) for i, p in enumerate(model.parameters())))


def _load_exclip(path: Path):
    import importlib.util

    file = path / "exclip" / "explanation.py"
    if not file.is_file():
        raise SystemExit(
            f"exclip not found under {path}; run with --install or: {_install_cmd(path)}"
        )
    spec = importlib.util.spec_from_file_location("exclip_explanation", file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # imports only torch, tqdm, math, sys
    return mod


def worker(method: str, model_name: str, layer: int, out: Path, exclip_path: Path) -> dict:
    import torch
    from safetensors.torch import save_file

    import dualex

    model, de = _build(model_name)
    caption, image = CAPTIONS[model_name], _image()
    text_in, image_in = de.tower_a.prepare(caption), de.tower_b.prepare(image)
    ids, pixels = text_in.data["input_ids"], image_in.data["pixel_values"]
    eot = int(ids[0].argmax())
    resnet = de.tower_b.kind == "cnn"
    text_layer = 11 if resnet else layer
    if method == "exclip":
        ex_mod = _load_exclip(exclip_path)
        cls = (
            ex_mod.OpenClipExplainer
            if model_name.startswith("openclip")
            else ex_mod.OpenAIExplainer
        )
        explainer = cls(model, device=torch.device("cpu"))
        _reset_peak()
        rss0 = _rss_mb("VmRSS")
        t0 = time.perf_counter()
        A = explainer.explain(ids, pixels, text_layer=text_layer, image_layer=layer, N=STEPS)
        seconds = time.perf_counter() - t0
        explainer.reset_attribution()  # exclip leaves its hooks registered
        A = A.double()
    else:
        _reset_peak()
        rss0 = _rss_mb("VmRSS")
        t0 = time.perf_counter()
        ex = dualex.explain(
            de, text_in, image_in, layers=(text_layer, layer), steps=STEPS, rule="riemann"
        )
        seconds = time.perf_counter() - t0
        M = ex.matrix.double()[: eot + 1]
        rows, cols = ex.b.grid
        A = M[:, ex.b.patch_slice].reshape(eot + 1, rows, cols)
    peak = _rss_mb("VmHWM")
    save_file({"A": A.contiguous()}, str(out))
    return {
        "method": method,
        "seconds": seconds,
        "peak_mb": peak,
        "extra_mb": peak - rss0,
        "checksum": _checksum(model),
        "shape": list(A.shape),
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------
# parent side
# ---------------------------------------------------------------------------------------------


def _install_cmd(path: Path) -> str:
    return (
        f"{sys.executable} -m pip install --no-deps --target {path} exclip==1.1 clip-anytorch "
        '"setuptools<70"'
    )


def _run(method: str, model: str, layer: int, out: Path, exclip_path: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--model",
        model,
        "--layer",
        str(layer),
        "--out",
        str(out),
        "--exclip-path",
        str(exclip_path),
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore", TQDM_DISABLE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{method} worker for {model}:{layer} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", nargs="*", default=DEFAULT_ROWS, help="<model>:<layer> rows")
    ap.add_argument("--exclip-path", type=Path, default=DEFAULT_EXCLIP)
    ap.add_argument("--install", action="store_true", help="pip-install exclip into --exclip-path")
    ap.add_argument("--tol", type=float, default=1e-5, help="target max relative difference")
    ap.add_argument("--worker", choices=["exclip", "dualex"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--layer", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        res = worker(args.worker, args.model, args.layer, args.out, args.exclip_path)
        print(json.dumps(res))
        return 0

    if not (args.exclip_path / "exclip" / "explanation.py").is_file():
        if not args.install:
            print(
                f"exclip is not installed under {args.exclip_path}. Install it with:\n  "
                f"{_install_cmd(args.exclip_path)}\nor rerun with --install."
            )
            return 2
        subprocess.run(_install_cmd(args.exclip_path), shell=True, check=True)

    from safetensors.torch import load_file

    print(
        f"exclip 1.1 vs dualex: right Riemann N={STEPS}, exclip references, seed {SEED}, "
        "random weights; image: skimage 'chelsea' (451x300)"
    )
    header = (
        f"{'model':<15}{'layer':>6}{'matrix':>12}{'max rel diff':>14}{'max |diff|':>12}"
        f"{'exclip s':>10}{'dualex s':>10}{'exclip peak MB':>16}{'dualex peak MB':>16}"
    )
    print(header)
    print("-" * len(header))
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for row in args.rows:
            model, _, layer_s = row.rpartition(":")
            layer = int(layer_s)
            fx, fd = Path(tmp) / "exclip.safetensors", Path(tmp) / "dualex.safetensors"
            rx = _run("exclip", model, layer, fx, args.exclip_path)
            rd = _run("dualex", model, layer, fd, args.exclip_path)
            if abs(rx["checksum"] - rd["checksum"]) > 1e-6 * abs(rx["checksum"]):
                raise SystemExit(f"{row}: the two workers built different weights")
            A, B = load_file(str(fx))["A"], load_file(str(fd))["A"]
            if A.shape != B.shape:
                raise SystemExit(
                    f"{row}: exclip matrix {tuple(A.shape)} vs dualex {tuple(B.shape)}"
                )
            diff = float((A - B).abs().max())
            rel = diff / float(A.abs().max())
            worst = max(worst, rel)
            shape = "x".join(str(s) for s in A.shape)
            lay = f"{layer}" if not model.endswith("RN50") else f"s{layer}"
            print(
                f"{model:<15}{lay:>6}{shape:>12}{rel:>14.2e}{diff:>12.2e}"
                f"{rx['seconds']:>10.1f}{rd['seconds']:>10.1f}"
                f"{rx['peak_mb']:>9.0f} (+{rx['extra_mb']:.0f})"
                f"{rd['peak_mb']:>9.0f} (+{rd['extra_mb']:.0f})",
                flush=True,
            )
    print("-" * len(header))
    print(
        "peak MB = the process's resident high-water mark during explain (+ growth over the "
        "resident size before it); captions: "
        + "; ".join(f"{k}: {v!r}" for k, v in CAPTIONS.items())
    )
    ok = worst <= args.tol
    print(
        f"worst max relative difference {worst:.2e} {'<=' if ok else '>'} {args.tol:g}: "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
