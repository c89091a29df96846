"""``dualex eval``: grounding, mismatch, the grid pointing game, faithfulness, per-class
comparison and the Shapley cross-check.

Examples:
    dualex eval grounding --model builtin --data synthetic:seed=901,n=300,domain=plain \\
        --methods dualex,ig,gae,maskclip,gradeclip,random --out runs/plain
    dualex eval mismatch --model builtin --data synthetic:seed=901,n=200 --out runs/mm
    dualex eval grid --model builtin --data synthetic-grid:seed=5,n=80 \\
        --methods dualex,banzhaf,gae,gradeclip,legrad,random --out runs/grid
    dualex eval faithfulness --model builtin --data synthetic:seed=901,n=20 --out runs/faith
    dualex eval compare runs/a runs/b --out runs/cmp --names a,b
    dualex eval shapley --model builtin --data synthetic:seed=901,n=20 --out runs/shap
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from dualex.errors import SettingError
from dualex.towers.registry import image_families_text

eval_app = typer.Typer(
    no_args_is_help=True,
    help="Measure grounding on datasets: metrics, baselines, mismatch, per-class gaps, Shapley.",
)

_MODEL = typer.Option("--model", help="Model spec (builtin, hf:PATH, random-clip[:SEED], ...).")
_DATA = typer.Option(
    "--data",
    help="coco:IMAGES,ANN_DIR | flickr30k:ROOT[,SPLIT] | hnc:JSON,IMAGES | "
    "synthetic:seed=S,n=N,domain=D | synthetic-grid:seed=S,n=N | grid:FOLDER[,n=N]",
)
_METHODS_HELP = (
    "Comma-separated: dualex, dualex-span, banzhaf, ig, gae, maskclip, gradeclip, surgery, "
    "legrad, random."
)
_OUT = typer.Option("--out", help="Output folder (re-running it resumes).")
_BACKEND = typer.Option(
    "--backend", help="local (in-process), ray (a local Ray cluster) or ray:ADDRESS."
)
_WORKERS = typer.Option("--workers", help="Ray workers (model replicas).", min=1)
_LIMIT = typer.Option("--limit", help="Most samples to read.")
_LAYERS = typer.Option("--layers", help="dualex layer(s), e.g. 1 or 1,1.")
_STEPS = typer.Option("--steps", help="dualex quadrature nodes (default adaptive).")
_BATCH = typer.Option("--batch", help="Samples per shard (one Parquet part each).")
_THREADS = typer.Option("--threads", help="torch CPU threads.")
_BUDGET = typer.Option("--budget", help="banzhaf: coalitions sampled per explanation.")


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


def _setup(
    model: str, data: str, threads: int | None, steps: int | None = None, limit: int | None = None
) -> tuple[Any, Any, int | None]:
    """Check every argument, then load the model in this process: nothing is written before.

    Returns:
        ``(model, data source, number of samples or None)``.
    """
    from dualex.data.sources import parse_data_spec

    encoder = _prepare(model, data, "local", threads, steps, limit)
    source = parse_data_spec(data).check()
    return encoder, source, source.total


def _prepare(
    model: str,
    data: str,
    backend: str,
    threads: int | None,
    steps: int | None = None,
    limit: int | None = None,
    methods: tuple[str, ...] = (),
) -> Any:
    """Check every argument, then load the model (local backend): nothing is written before.

    With ``methods``, the local model must have an image tower and every method must support it.

    Returns:
        The loaded model (local backend) or its spec (Ray: each worker loads its replica).

    Raises:
        SettingError: on a bad ``--data``, ``--steps``, ``--limit``, ``--threads`` or backend.
        FileFormatError: on a missing dataset folder or file.
        UnknownModelError: on an unknown model spec.
    """
    from dualex.cli_args import resolve_model
    from dualex.data.sources import parse_data_spec
    from dualex.limits import check_steps
    from dualex.scale import parse_backend

    if threads is not None and threads < 1:
        raise SettingError(f"--threads {threads}: pass a positive number of CPU threads")
    if limit is not None and limit < 0:
        raise SettingError(f"--limit {limit}: pass a number of samples >= 0")
    check_steps(steps, 64, names=("--steps", "--max-steps"))
    parse_data_spec(data).check()
    kind, _ = parse_backend(backend)
    if kind != "local":
        from dualex.towers.registry import for_spec

        for_spec(model)  # an unknown spec fails here, before anything is written
        return model
    if threads:
        import torch

        torch.set_num_threads(threads)
    encoder = resolve_model(model)
    if methods:
        from dualex.evaluate.methods import get

        if getattr(encoder.tower_b, "modality", None) != "image":
            raise SettingError(
                f"dualex eval measures image grounding; {model!r} has no image tower. Use an "
                f"image–text model (families: {image_families_text()})"
            )
        for name in methods:
            get(name).supports(encoder)  # e.g. gae on a CNN tower: refused before any output
    return encoder


def _write_meta(out: Path, command: str, **info: Any) -> None:
    from dualex.io import atomic_write

    atomic_write(out / f"{command}.json", json.dumps(info, indent=2, default=str) + "\n")


def _evaluate(
    task: str,
    model: str,
    data: str,
    out: Path,
    settings: Any,
    backend: str,
    workers: int,
    threads: int | None,
    report: Any,
) -> None:
    """The body of every ``dualex eval TASK``: check and load, run the task as a resumable job,
    write the run's metadata and tables, print the summary.

    Args:
        report: ``report(out) -> (what was written, summary rows, columns)``.
    """
    from dualex.evaluate.analysis import to_markdown
    from dualex.evaluate.runs import run_task

    encoder = _prepare(
        model, data, backend, threads, settings.steps, settings.limit, settings.methods
    )
    path = run_task(
        task,
        encoder,
        None,
        out,
        settings,
        data=data,
        backend=backend,
        workers=workers,
        threads=threads,
    )
    _write_meta(out, task, model=model, data=data, settings=settings)
    what, rows, columns = report(out)
    typer.echo(f"wrote {path} and {what} in {out}")
    typer.echo(to_markdown(rows, columns))


@eval_app.command()
def grounding(
    model: Annotated[str, _MODEL] = "builtin",
    data: Annotated[str, _DATA] = "synthetic:seed=901,n=100,domain=plain",
    methods: Annotated[
        str,
        typer.Option("--methods", help=_METHODS_HELP),
    ] = "dualex,ig,gae,maskclip,gradeclip,random",
    out: Annotated[Path, _OUT] = Path("runs/grounding"),
    limit: Annotated[int | None, _LIMIT] = None,
    shard: Annotated[
        str, typer.Option("--shard", help="i/n: run shards i, i+n, ... (processes sharing --out)")
    ] = "0/1",
    text: Annotated[
        str, typer.Option("--text", help="Baselines' text input: span (the mention) or caption.")
    ] = "span",
    layers: Annotated[str | None, _LAYERS] = None,
    steps: Annotated[int | None, _STEPS] = None,
    batch: Annotated[int, _BATCH] = 8,
    threads: Annotated[int | None, _THREADS] = None,
    backend: Annotated[str, _BACKEND] = "local",
    workers: Annotated[int, _WORKERS] = 1,
) -> None:
    """Evaluate every mention with every method; writes rows.parquet, summary/per_class tables
    (Markdown + CSV) and summary.png. Re-running the same command resumes."""
    from dualex.cli_args import parse_layers
    from dualex.evaluate.analysis import GROUNDING_METRICS
    from dualex.evaluate.report import write_grounding_tables
    from dualex.evaluate.tasks import EvalSettings

    settings = EvalSettings(
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        text=text,
        layers=parse_layers(layers),
        steps=steps,
        batch=batch,
        limit=limit,
        shard=parse_shard(shard),
    )
    _evaluate(
        "grounding", model, data, out, settings, backend, workers, threads,
        lambda out: ("tables", write_grounding_tables(out)["summary"], GROUNDING_METRICS),
    )  # fmt: skip


@eval_app.command()
def mismatch(
    model: Annotated[str, _MODEL] = "builtin",
    data: Annotated[str, _DATA] = "synthetic:seed=901,n=100,domain=plain",
    out: Annotated[Path, _OUT] = Path("runs/mismatch"),
    limit: Annotated[int | None, _LIMIT] = None,
    shard: Annotated[
        str, typer.Option("--shard", help="i/n: run shards i, i+n, ... (processes sharing --out)")
    ] = "0/1",
    layers: Annotated[str | None, _LAYERS] = None,
    steps: Annotated[int | None, _STEPS] = None,
    batch: Annotated[int, _BATCH] = 8,
    threads: Annotated[int | None, _THREADS] = None,
    backend: Annotated[str, _BACKEND] = "local",
    workers: Annotated[int, _WORKERS] = 1,
) -> None:
    """Hard negatives: the mismatched span's interaction vs matched spans and the positive caption."""
    from dualex.cli_args import parse_layers
    from dualex.evaluate.analysis import MISMATCH_METRICS
    from dualex.evaluate.report import write_mismatch_tables
    from dualex.evaluate.tasks import EvalSettings

    settings = EvalSettings(
        methods=("dualex",),
        layers=parse_layers(layers),
        steps=steps,
        batch=batch,
        limit=limit,
        shard=parse_shard(shard),
    )
    _evaluate(
        "mismatch", model, data, out, settings, backend, workers, threads,
        lambda out: ("tables", write_mismatch_tables(out)["mismatch"], MISMATCH_METRICS),
    )  # fmt: skip


_PROTOCOL = typer.Option(
    "--protocol",
    help="dualex (default) or fixlip: FIxLIP's protocol (attention-mask text masking, all "
    "four quadrants filled, per-image aggregation, its coalition laws and counts).",
)


def _grid_data(data: str, protocol: str) -> str:
    """FIxLIP's grids fill all four quadrants: add ``fill=all`` to a synthetic-grid spec that
    does not say."""
    if protocol == "fixlip" and data.startswith("synthetic-grid:") and "fill=" not in data:
        return data + ",fill=all"
    return data


def _methods(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


@eval_app.command()
def grid(
    model: Annotated[str, _MODEL] = "builtin",
    data: Annotated[str, _DATA] = "synthetic-grid:seed=5,n=80",
    methods: Annotated[str, typer.Option("--methods", help=_METHODS_HELP)] = (
        "dualex,banzhaf,ig,gae,gradeclip,legrad,random"
    ),
    out: Annotated[Path, _OUT] = Path("runs/grid"),
    text: Annotated[
        str,
        typer.Option(
            "--text",
            help="First-order methods' text: caption (FIxLIP's setting), span (each phrase "
            "alone, as <method>-span) or both.",
        ),
    ] = "both",
    budget: Annotated[int, _BUDGET] = 1024,
    limit: Annotated[int | None, _LIMIT] = None,
    layers: Annotated[str | None, _LAYERS] = None,
    steps: Annotated[int | None, _STEPS] = None,
    batch: Annotated[int, _BATCH] = 8,
    threads: Annotated[int | None, _THREADS] = None,
    backend: Annotated[str, _BACKEND] = "local",
    workers: Annotated[int, _WORKERS] = 1,
    protocol: Annotated[str, _PROTOCOL] = "dualex",
) -> None:
    """FIxLIP's pointing game on 2×2 grids: mass and sign ratio per method and number of
    objects; writes rows.parquet and summary.{md,csv}. Re-running the same command resumes."""
    from dualex.cli_args import parse_layers
    from dualex.evaluate.report import write_grid_tables
    from dualex.evaluate.tasks import EvalSettings

    settings = EvalSettings(
        methods=_methods(methods),
        text=text,
        layers=parse_layers(layers),
        steps=steps,
        batch=batch,
        limit=limit,
        budget=budget,
        protocol=protocol,
    )
    _evaluate(
        "grid", model, _grid_data(data, protocol), out, settings, backend, workers, threads,
        lambda out: (
            "summary.csv", write_grid_tables(out)["summary"], ("mass_ratio", "sign_ratio", "seconds")
        ),
    )  # fmt: skip


@eval_app.command()
def faithfulness(
    model: Annotated[str, _MODEL] = "builtin",
    data: Annotated[str, _DATA] = "synthetic:seed=901,n=20,domain=plain",
    methods: Annotated[str, typer.Option("--methods", help=_METHODS_HELP)] = (
        "dualex,banzhaf,ig,gae,gradeclip,legrad,random"
    ),
    out: Annotated[Path, _OUT] = Path("runs/faithfulness"),
    coalitions: Annotated[
        int | None,
        typer.Option(
            "--coalitions", help="Coalitions per sample and law (default 128; fixlip: 1000)."
        ),
    ] = None,
    budget: Annotated[int, _BUDGET] = 1024,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampled coalitions.")] = 0,
    limit: Annotated[int | None, _LIMIT] = None,
    layers: Annotated[str | None, _LAYERS] = None,
    steps: Annotated[int | None, _STEPS] = None,
    batch: Annotated[int, _BATCH] = 8,
    threads: Annotated[int | None, _THREADS] = None,
    backend: Annotated[str, _BACKEND] = "local",
    workers: Annotated[int, _WORKERS] = 1,
    protocol: Annotated[str, _PROTOCOL] = "dualex",
) -> None:
    """R² of each method's prediction of the masked model on sampled coalitions (plain and
    size-weighted) and insertion / deletion AUC; writes rows.parquet and summary.{md,csv}."""
    from dualex.cli_args import parse_layers
    from dualex.evaluate.report import write_faithfulness_tables
    from dualex.evaluate.tasks import EvalSettings
    from dualex.evaluate.tasks.faithfulness import FIXLIP_COALITIONS, metrics

    if coalitions is None:
        coalitions = FIXLIP_COALITIONS if protocol == "fixlip" else 128
    settings = EvalSettings(
        methods=_methods(methods),
        layers=parse_layers(layers),
        steps=steps,
        batch=batch,
        limit=limit,
        budget=budget,
        coalitions=coalitions,
        seed=seed,
        protocol=protocol,
    )
    columns = (*metrics(settings.protocol), "seconds")
    _evaluate(
        "faithfulness", model, data, out, settings, backend, workers, threads,
        lambda out: ("summary.csv", write_faithfulness_tables(out)["summary"], columns),
    )  # fmt: skip


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
    steps: Annotated[int | None, _STEPS] = None,
    threads: Annotated[int | None, _THREADS] = None,
) -> None:
    """Rank correlation of dualex's word × region interactions with exact pairwise Shapley
    interactions (SII) of the masking game."""
    import numpy as np
    from tqdm.auto import tqdm

    from dualex.evaluate.analysis import bootstrap_ci
    from dualex.evaluate.shapley import clip_crosscheck
    from dualex.io import atomic_write

    try:
        layer_list = [
            None if v.strip() == "default" else int(v) for v in layers.split(",") if v.strip()
        ]
    except ValueError as err:
        raise SettingError(
            f"cannot read --layers {layers!r}; pass integers or 'default', e.g. 0,default"
        ) from err
    if grid < 1 or budget < 1:
        raise SettingError(f"--grid {grid} and --budget {budget} must be positive integers")
    encoder, source, total = _setup(model, data, threads, steps, limit)
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
    atomic_write(out / "shapley.md", "\n".join(lines) + "\n")
    atomic_write(out / "shapley.json", json.dumps(rows, indent=1) + "\n")
    typer.echo("\n".join(lines[: 2 + len(keys)]))
