"""``dualex eval``: grounding, mismatch, per-class comparison and the Shapley cross-check.

Examples:
    dualex eval grounding --model builtin --data synthetic:seed=901,n=300,domain=plain \\
        --methods dualex,ig,gae,maskclip,gradeclip,random --out runs/plain
    dualex eval mismatch --model builtin --data synthetic:seed=901,n=200 --out runs/mm
    dualex eval compare runs/a runs/b --out runs/cmp --names a,b
    dualex eval shapley --model builtin --data synthetic:seed=901,n=20 --out runs/shap
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from dualex.errors import SettingError

eval_app = typer.Typer(
    no_args_is_help=True,
    help="Measure grounding on datasets: metrics, baselines, mismatch, per-class gaps, Shapley.",
)

_MODEL = typer.Option("--model", help="Model spec (builtin, hf:PATH, random-clip[:SEED], ...).")
_DATA = typer.Option(
    "--data",
    help="coco:IMAGES,ANN_DIR | flickr30k:ROOT[,SPLIT] | hnc:JSON,IMAGES | "
    "synthetic:seed=S,n=N,domain=D",
)
_OUT = typer.Option("--out", help="Output folder (re-running it resumes).")
_BACKEND = typer.Option(
    "--backend", help="local (in-process), ray (a local Ray cluster) or ray:ADDRESS."
)
_WORKERS = typer.Option("--workers", help="Ray workers (model replicas).", min=1)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)``.

    Raises:
        SettingError: if it is not two integers with ``0 <= i < n``.
    """
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not (n >= 1 and 0 <= i < n):
        raise SettingError(f"cannot read --shard {text!r}; pass i/n with 0 <= i < n, e.g. 0/4")
    return i, n


def _setup(model: str, data: str, threads: int | None) -> tuple[Any, Any, int | None]:
    import torch

    from dualex.cli_args import resolve_model
    from dualex.data.sources import parse_data_spec

    if threads:
        torch.set_num_threads(threads)
    source = parse_data_spec(data)
    encoder = resolve_model(model)
    total = None
    if source.kind == "synthetic":
        total = int(source.options.get("n", 100)) * int(source.options.get("captions_per_image", 1))
    return encoder, source, total


def _prepare(data: str, backend: str, threads: int | None) -> None:
    """Check the data spec and backend before any slow work; set torch threads (local)."""
    from dualex.data.sources import parse_data_spec
    from dualex.scale import parse_backend

    parse_data_spec(data)
    kind, _ = parse_backend(backend)
    if threads and kind == "local":
        import torch

        torch.set_num_threads(threads)


def _write_meta(out: Path, command: str, **info: Any) -> None:
    from dualex.evaluate.store import atomic_write_text

    atomic_write_text(out / f"{command}.json", json.dumps(info, indent=2, default=str) + "\n")


@eval_app.command()
def grounding(
    model: Annotated[str, _MODEL] = "builtin",
    data: Annotated[str, _DATA] = "synthetic:seed=901,n=100,domain=plain",
    methods: Annotated[
        str,
        typer.Option(
            "--methods", help="Comma-separated: dualex,ig,gae,maskclip,gradeclip,surgery,random."
        ),
    ] = "dualex,ig,gae,maskclip,gradeclip,random",
    out: Annotated[Path, _OUT] = Path("runs/grounding"),
    limit: Annotated[int | None, typer.Option("--limit", help="Most samples to read.")] = None,
    shard: Annotated[
        str, typer.Option("--shard", help="i/n: run shards i, i+n, ... (processes sharing --out)")
    ] = "0/1",
    text: Annotated[
        str, typer.Option("--text", help="Baselines' text input: span (the mention) or caption.")
    ] = "span",
    layers: Annotated[
        str | None, typer.Option("--layers", help="dualex layer(s), e.g. 1 or 1,1.")
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", help="dualex quadrature nodes (default adaptive).")
    ] = None,
    batch: Annotated[
        int, typer.Option("--batch", help="Samples per shard (one Parquet part each).")
    ] = 8,
    threads: Annotated[int | None, typer.Option("--threads", help="torch CPU threads.")] = None,
    backend: Annotated[str, _BACKEND] = "local",
    workers: Annotated[int, _WORKERS] = 1,
) -> None:
    """Evaluate every mention with every method; writes rows.parquet, summary/per_class tables
    (Markdown + CSV) and summary.png. Re-running the same command resumes."""
    from dualex.cli_args import parse_layers
    from dualex.evaluate.grounding import EvalSettings, run_grounding
    from dualex.evaluate.report import write_grounding_tables

    settings = EvalSettings(
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        text=text,
        layers=parse_layers(layers),
        steps=steps,
        batch=batch,
        limit=limit,
        shard=parse_shard(shard),
    )
    _prepare(data, backend, threads)
    path = run_grounding(
        model, None, out, settings, data=data, backend=backend, workers=workers, threads=threads
    )
    _write_meta(out, "grounding", model=model, data=data, settings=settings)
    tables = write_grounding_tables(out)
    typer.echo(f"wrote {path} and tables in {out}")
    from dualex.evaluate.analysis import GROUNDING_METRICS, to_markdown

    typer.echo(to_markdown(tables["summary"], GROUNDING_METRICS))


@eval_app.command()
def mismatch(
    model: Annotated[str, _MODEL] = "builtin",
    data: Annotated[str, _DATA] = "synthetic:seed=901,n=100,domain=plain",
    out: Annotated[Path, _OUT] = Path("runs/mismatch"),
    limit: Annotated[int | None, typer.Option("--limit", help="Most samples to read.")] = None,
    shard: Annotated[
        str, typer.Option("--shard", help="i/n: run shards i, i+n, ... (processes sharing --out)")
    ] = "0/1",
    layers: Annotated[str | None, typer.Option("--layers", help="dualex layer(s).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="dualex quadrature nodes.")] = None,
    batch: Annotated[
        int, typer.Option("--batch", help="Samples per shard (one Parquet part each).")
    ] = 8,
    threads: Annotated[int | None, typer.Option("--threads", help="torch CPU threads.")] = None,
    backend: Annotated[str, _BACKEND] = "local",
    workers: Annotated[int, _WORKERS] = 1,
) -> None:
    """Hard negatives: the mismatched span's interaction vs matched spans and the positive caption."""
    from dualex.cli_args import parse_layers
    from dualex.evaluate.grounding import EvalSettings, run_mismatch
    from dualex.evaluate.report import write_mismatch_tables

    settings = EvalSettings(
        methods=("dualex",),
        layers=parse_layers(layers),
        steps=steps,
        batch=batch,
        limit=limit,
        shard=parse_shard(shard),
    )
    _prepare(data, backend, threads)
    path = run_mismatch(
        model, None, out, settings, data=data, backend=backend, workers=workers, threads=threads
    )
    _write_meta(out, "mismatch", model=model, data=data, settings=settings)
    tables = write_mismatch_tables(out)
    from dualex.evaluate.analysis import MISMATCH_METRICS, to_markdown

    typer.echo(f"wrote {path} and tables in {out}")
    typer.echo(to_markdown(tables["mismatch"], MISMATCH_METRICS))


@eval_app.command()
def compare(
    dir_a: Annotated[Path, typer.Argument(help="First run's folder (e.g. an earlier checkpoint).")],
    dir_b: Annotated[Path, typer.Argument(help="Second run's folder.")],
    out: Annotated[Path, _OUT] = Path("runs/compare"),
    names: Annotated[str, typer.Option("--names", help="Two names, e.g. step0,final.")] = "a,b",
    method: Annotated[str, typer.Option("--method", help="Method to compare.")] = "dualex",
) -> None:
    """Per-class grounding of two runs side by side, with the difference (largest drop first)."""
    from dualex.errors import FileFormatError
    from dualex.evaluate.analysis import to_markdown
    from dualex.evaluate.report import compare_dirs

    parts = [n.strip() for n in names.split(",")]
    if len(parts) != 2:
        raise SettingError(f"cannot read --names {names!r}; pass two names, e.g. before,after")
    for d in (dir_a, dir_b):
        if not (d / "rows.parquet").is_file():
            raise FileFormatError(
                f"{str(d)!r} has no rows.parquet; run `dualex eval grounding` first"
            )
    table = compare_dirs(dir_a, dir_b, out, names=(parts[0], parts[1]), method=method)
    typer.echo(to_markdown(table))


@eval_app.command()
def shapley(
    model: Annotated[str, _MODEL] = "builtin",
    data: Annotated[str, _DATA] = "synthetic:seed=901,n=20,domain=plain",
    out: Annotated[Path, _OUT] = Path("runs/shapley"),
    limit: Annotated[int | None, typer.Option("--limit", help="Most samples.")] = None,
    grid: Annotated[
        int, typer.Option("--grid", help="Regions per side (grid × grid players).")
    ] = 3,
    layers: Annotated[
        str,
        typer.Option(
            "--layers",
            help="dualex split layers to compare, e.g. 0,default (default: the last block's input).",
        ),
    ] = "0,default",
    method: Annotated[
        str, typer.Option("--method", help="factorised (exact, side-wise) or shapiq.")
    ] = "factorised",
    budget: Annotated[
        int, typer.Option("--budget", help="Coalitions (shapiq approximator).")
    ] = 4096,
    steps: Annotated[int | None, typer.Option("--steps", help="dualex quadrature nodes.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="torch CPU threads.")] = None,
) -> None:
    """Rank correlation of dualex's word × region interactions with exact pairwise Shapley
    interactions (SII) of the masking game."""
    from tqdm.auto import tqdm

    from dualex.evaluate.analysis import bootstrap_ci
    from dualex.evaluate.shapley import clip_crosscheck
    from dualex.evaluate.store import atomic_write_text

    try:
        layer_list = [
            None if v.strip() == "default" else int(v) for v in layers.split(",") if v.strip()
        ]
    except ValueError as err:
        raise SettingError(
            f"cannot read --layers {layers!r}; pass integers or 'default', e.g. 0,default"
        ) from err
    encoder, source, total = _setup(model, data, threads)
    rows: list[dict[str, Any]] = []
    n = limit if limit is not None else total
    for k, s in enumerate(tqdm(source.samples(), total=n, desc="shapley")):
        if limit is not None and k >= limit:
            break
        r = clip_crosscheck(
            encoder,
            s.caption,
            s.image,
            grid=grid,
            budget=budget,
            steps=steps,
            layers=layer_list,
            method=method,
            seed=k,
        )
        rows.append(
            {
                "sample_id": s.caption_id,
                "caption": s.caption,
                "words": len(r.words),
                "exact": r.exact,
                **{f"rho_{key}": v for key, v in r.spearman.items()},
            }
        )
    keys = [c for c in rows[0] if c.startswith("rho_")] if rows else []
    lines = [f"## Shapley cross-check ({grid}×{grid} regions, {len(rows)} pairs, {method})", ""]
    for key in keys:
        mean, lo, hi, cnt = bootstrap_ci([r[key] for r in rows])
        med = float(np.median([r[key] for r in rows]))
        lines.append(
            f"- dualex {key[4:]}: mean Spearman ρ = {mean:.3f} [{lo:.3f}, {hi:.3f}], "
            f"median {med:.3f} (n = {cnt})"
        )
    lines += [
        "",
        "| sample | words | exact | " + " | ".join(keys) + " |",
        "|---|---|---|" + "---|" * len(keys),
    ]
    lines += [
        f"| {r['sample_id']} | {r['words']} | {r['exact']} | "
        + " | ".join(f"{r[c]:.3f}" for c in keys)
        + " |"
        for r in rows
    ]
    atomic_write_text(out / "shapley.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "shapley.json", json.dumps(rows, indent=1) + "\n")
    typer.echo("\n".join(lines[: 2 + len(keys)]))
