"""The dataset forms of ``dualex explain`` and ``dualex report`` (registered in dualex/cli.py).

Examples:
    dualex explain --data synthetic:seed=901,n=200 --out runs/explained --backend ray --workers 2
    dualex report runs/explained --limit 20 --sort worst-completeness --out worst.html
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dualex.errors import InvalidInputError, SettingError

__all__ = ["explain_data", "report_dir"]


def explain_data(
    data: str,
    out: Path | None,
    model: str,
    layers: str | None,
    steps: int | None,
    backend: str,
    workers: int,
    limit: int | None,
    image: Any = None,
    text: Any = None,
    *,
    batch: int = 8,
    method: str = "dualex",
    budget: int | None = None,
    seed: int | None = None,
) -> None:
    """``dualex explain --data SPEC --out DIR``: explain every pair, print one summary line.

    ``batch`` is the number of samples per shard (``--batch``)."""
    from rich.console import Console

    from dualex.cli_args import parse_layers
    from dualex.data.sources import parse_data_spec
    from dualex.scale import parse_backend
    from dualex.scale.explain import explain_dataset

    if image is not None or text is not None:
        raise InvalidInputError("pass either IMAGE TEXT (one pair) or --data SPEC, not both")
    if out is None or out.suffix:
        raise SettingError("with --data, pass --out DIR: a folder for the explanations and index")
    from dualex.limits import check_steps

    parse_data_spec(data)
    parse_backend(backend)
    check_steps(steps, 64, names=("--steps", "--max-steps"))  # before any shard runs
    from dualex.explainer import method_settings

    method_settings(method, budget, None, None, None, seed, None, parse_layers(layers), steps)
    result = explain_dataset(
        model,
        data,
        out,
        layers=parse_layers(layers),
        steps=steps,
        shard_size=batch,
        limit=limit,
        backend=backend,
        workers=workers,
        method=method,
        budget=budget,
        seed=seed,
    )
    rate = result.samples_done / result.seconds if result.seconds > 0 else float("nan")
    Console().print(
        f"explained {result.n_samples} pairs in {result.n_shards} shards ({result.ran} run now, "
        f"{rate:.2f} pairs/s); index: {result.rows}",
        soft_wrap=True,
    )


def report_dir(out_dir: Path, html: Path | None, limit: int, sort: str, title: str) -> None:
    """``dualex report DIR``: the HTML report of ``limit`` pairs of an explain run."""
    from rich.console import Console

    from dualex.scale.explain import report_dataset

    html = html or out_dir / "report.html"
    if html.suffix.lower() not in (".html", ".htm"):
        raise InvalidInputError(f"--out {html.name!r} must end with .html")
    path, n = report_dataset(
        out_dir, html, limit=limit, sort=sort, title=None if title == "dualex report" else title
    )
    Console().print(
        f"wrote {path} ({n} pairs by {sort}, {path.stat().st_size / 1e6:.2f} MB)", soft_wrap=True
    )
