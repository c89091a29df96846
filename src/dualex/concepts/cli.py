"""``dualex concepts train`` and ``dualex concepts show``, and the ``--concepts`` option of
``dualex explain`` (its report panel)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

concepts_app = typer.Typer(
    no_args_is_help=True,
    help="A concept dictionary of a model (VL-SAE style) to split explanations into concepts.",
    epilog=(
        "Examples:\n\n"
        "  dualex concepts train --model builtin --data synthetic:seed=11,n=5000 --out dict\n\n"
        "  dualex concepts show dict --out concepts.html\n\n"
        "  dualex explain scene.png 'a red circle' --concepts dict --out report.html"
    ),
)


@concepts_app.command("train")
def train(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model spec (builtin, hf:..., st:..., ...).")
    ],
    data: Annotated[
        str,
        typer.Option(
            help="Data: synthetic:seed=S,n=N | coco:IMAGES,ANN_DIR | ... | text:FILE "
            "(one sentence, or 'a<TAB>b', per line)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder (re-running it resumes).")],
    concepts: Annotated[int, typer.Option("--concepts", help="Number of concepts K.")] = 64,
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 3000,
    topk: Annotated[int, typer.Option(help="Active concepts per vector.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the initialisation and the batches.")] = 0,
    pairs: Annotated[int | None, typer.Option(help="Use at most this many pairs.")] = None,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", help="Steps between checkpoints.")
    ] = 250,
) -> None:
    """Train a concept dictionary on a model's projections of a dataset (resumable)."""
    from rich.console import Console

    from dualex.cli_args import resolve_model
    from dualex.concepts.dictionary import Concepts

    encoder = resolve_model(model)
    result = Concepts.train(
        encoder,
        data,
        concepts=concepts,
        steps=steps,
        seed=seed,
        out=out,
        topk=topk,
        pairs=pairs,
        checkpoint_every=checkpoint_every,
    )
    used = [n for n in result.names if n != "(unused)"]
    Console().print(
        f"wrote {out}: {result.size} concepts ({len(used)} used), e.g. "
        + ", ".join(dict.fromkeys(used))[:200],
        soft_wrap=True,
    )


@concepts_app.command("show")
def show(
    folder: Annotated[Path, typer.Argument(help="A dictionary folder (`concepts train --out`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML page to write.")] = Path(
        "concepts.html"
    ),
) -> None:
    """Write a browsable page of a dictionary: labels, top captions, top patches."""
    from dualex.concepts.dictionary import Concepts
    from dualex.io import atomic_write
    from dualex.viz.concepts import concepts_page

    concepts = Concepts.load(folder)
    atomic_write(out, concepts_page(concepts, title=f"dualex concepts: {folder.name}"))
    print(f"wrote {out}")


def report_addons(ex: Any, folder: Path | None, model: Any) -> list[Any]:
    """The report panels ``dualex explain --concepts DIR`` adds (none without a folder).

    Raises:
        ModelMismatchError: if the dictionary belongs to another model.
    """
    if folder is None:
        return []
    from dualex.concepts.dictionary import Concepts
    from dualex.viz.concepts import concept_panel

    concepts = Concepts.load(folder)
    concepts.check(model)
    return [concept_panel([ex], concepts)]
