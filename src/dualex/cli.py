"""The ``dualex`` command line: explain, report, models, demo.

Bad input ends with one line on stderr naming the problem and exit code 2 (``--debug`` shows the
traceback). Work that takes more than a moment (loading a model, explaining, writing a report)
shows a progress bar on stderr, so stdout stays clean for the summary.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dualex.errors import DualexError, InvalidInputError, SettingError, UnknownModelError

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Explain what a dual encoder matched: token × patch (or token × token) interactions.",
    epilog=(
        "Examples:\n\n"
        "  dualex explain photo.jpg 'a dog on the grass' --out report.html\n\n"
        "  dualex explain photo.jpg 'a dog on the grass' --out fig.png --span dog --span grass\n\n"
        "  dualex report runs/*.safetensors --out report.html\n\n"
        "  dualex models"
    ),
)
_state = {"debug": False}

RANDOM_SPECS = ("random", "random-clip")
"""CLI-only model specs: a randomly initialised small CLIP (``random-clip[:SEED]``)."""

RANDOM_CONFIG: dict[str, int] = {"image_size": 64, "patch_size": 8}
"""Size of the ``random-clip`` model (``dualex.models.factory.clip_config`` arguments)."""

REPORT_SUFFIXES = (".html", ".htm")
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
TENSOR_SUFFIXES = (".safetensors",)


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


# -- helpers -------------------------------------------------------------------------------------
def _err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def _progress(description: str, total: float | None = None) -> Iterator[Any]:
    """A transient rich progress bar on stderr (pulsing when ``total`` is None).

    Yields:
        A callable ``advance(n=1)``.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
    if total is not None:
        columns.append(MofNCompleteColumn())
    columns.append(TimeElapsedColumn())
    console = _err_console()
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def _random_model(spec: str) -> Any:
    import dualex
    from dualex.models.factory import random_clip

    _, _, seed_text = spec.partition(":")
    try:
        seed = int(seed_text) if seed_text else 0
    except ValueError as err:
        raise UnknownModelError(
            f"cannot read the seed in {spec!r}; use random-clip or random-clip:SEED (an integer)"
        ) from err
    m, tok, proc = random_clip(seed=seed, **RANDOM_CONFIG)
    return dualex.wrap(m, tokenizer=tok, image_processor=proc, name=f"random-clip:{seed}")


def resolve_model(spec: str, console: Console | None = None) -> Any:
    """Load a model by spec, with the CLI's extras.

    ``random-clip[:SEED]`` (or ``random``) is a randomly initialised small CLIP; ``builtin``
    falls back to it, with a loud warning, while the built-in model is not installed.

    Raises:
        UnknownModelError: on an unknown spec.
    """
    import dualex
    from dualex.models import builtin

    key = spec.strip().lower()
    if key.partition(":")[0] in RANDOM_SPECS:
        return _random_model(key)
    if key == "builtin" and not builtin.available():
        (console or _err_console()).print(
            "[bold yellow]WARNING: the built-in model is not installed; explaining with a "
            "RANDOMLY INITIALISED CLIP (random-clip:0). The maps show exactness, not "
            "grounding.[/] Pass --model hf:<path> (or install the built-in model) for meaningful "
            "explanations.",
            soft_wrap=True,
        )
        return _random_model("random-clip:0")
    return dualex.load(spec)


def parse_layers(text: str | None) -> int | tuple[int, int] | None:
    """``"A"`` → ``A``; ``"A,B"`` → ``(A, B)``; ``None`` → ``None``.

    Raises:
        SettingError: if the text is not one or two integers.
    """
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or len(values) != len(parts):
        raise SettingError(
            f"cannot read --layers {text!r}; pass one layer (e.g. 11) or a pair for the text and "
            "image towers (e.g. 11,10); negative values count from the end"
        )
    return values[0] if len(values) == 1 else (values[0], values[1])


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` → a box in original image pixels.

    Raises:
        SettingError: if the text is not four numbers.
    """
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise SettingError(
            f"cannot read --box {text!r}; pass x0,y0,x1,y1 in original image pixels, e.g. "
            "10,20,120,90"
        )
    return (values[0], values[1], values[2], values[3])


def read_image(path: Path) -> Any:
    """Open an image file fully, or raise an error that names the problem.

    Raises:
        InvalidInputError: if the file is missing or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise InvalidInputError(f"image {str(path)!r} does not exist; pass a PNG or JPEG file")
    if not path.is_file():
        raise InvalidInputError(f"image {str(path)!r} is not a file; pass a PNG or JPEG file")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InvalidInputError(
            f"cannot read {str(path)!r} as an image ({type(err).__name__}); pass a PNG or JPEG file"
        ) from err


def _output_kind(out: Path | None) -> str | None:
    if out is None:
        return None
    suffix = out.suffix.lower()
    for kind, suffixes in (
        ("report", REPORT_SUFFIXES),
        ("figure", FIGURE_SUFFIXES),
        ("tensors", TENSOR_SUFFIXES),
    ):
        if suffix in suffixes:
            return kind
    raise InvalidInputError(
        f"cannot tell what to write to {out.name!r}; end --out with .html (interactive report), "
        ".png/.pdf/.svg (figure) or .safetensors (the explanation itself)"
    )


def _summary(ex: Any, console: Console) -> None:
    from rich.table import Table

    from dualex.viz.tokens import tokens_rich

    c = ex.completeness
    console.print(
        f"[bold]{ex.model}[/]  score [bold]{c.score:.5g}[/] = Σ interactions "
        f"{c.attribution_sum:.5g} + reference terms {sum(c.reference_terms):.5g}  "
        f"(relative error {c.relative_error:.2e}, steps {c.steps[0]}/{c.steps[1]} {c.rule}, "
        f"layers {ex.layers[0]}/{ex.layers[1]})"
    )
    with suppress(DualexError):  # two texts have no image side
        console.print("caption × whole image: ", tokens_rich(ex.text_positions, ex.text_scores()))
    table = Table(title="strongest interactions", title_justify="left")
    for col in ("a", "b", "value"):
        table.add_column(col)
    for la, lb, v in ex.top_interactions(5):
        table.add_row(la, lb, f"{v:+.4g}")
    console.print(table)


def _write(ex: Any, out: Path, kind: str, name: str, spans: list[str], boxes: list[str]) -> Path:
    if kind == "tensors":
        return ex.save(out)
    if kind == "report":
        from dualex.viz.report import write_report

        return write_report([ex], out, names=[name], title=f"dualex: {name}")
    from dualex.viz.figure import figure1, save_figure

    fig = figure1(
        ex,
        spans=spans or None,
        boxes=[parse_box(b) for b in boxes] or None,
    )
    return save_figure(fig, out)


# -- commands ------------------------------------------------------------------------------------
@app.command(
    epilog=(
        "Examples:\n\n"
        "  dualex explain dog.jpg 'a husky in the snow' --out report.html\n\n"
        "  dualex explain dog.jpg 'a husky in the snow' --model hf:./clip-vit-b16 "
        "--layers 11,10 --out fig.png --span husky --span snow --box 40,30,200,180\n\n"
        "  dualex explain dog.jpg 'a husky' --model random-clip --out expl.safetensors"
    )
)
def explain(
    image: Annotated[Path, typer.Argument(help="Image file (PNG, JPEG, ...).", show_default=False)],
    text: Annotated[str, typer.Argument(help="The caption.", show_default=False)],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="Model spec: builtin, hf:<id-or-path>, openclip:<arch>\\[/<pretrained>], "
            "openai:<name>, random-clip\\[:SEED]. See `dualex models`.",
        ),
    ] = "builtin",
    layers: Annotated[
        str | None,
        typer.Option(help="Split layer: one int for both towers or TEXT,IMAGE (e.g. 11,10)."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Quadrature nodes; default adaptive.", min=1)
    ] = None,
    rule: Annotated[
        str | None, typer.Option(help="Quadrature rule: gauss-legendre, riemann or trapezoid.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write report.html (interactive), fig.png/.pdf/.svg (Figure-1 grid) or "
            "expl.safetensors.",
        ),
    ] = None,
    span: Annotated[
        list[str] | None,
        typer.Option(help="Caption span for the figure (repeatable); default: top tokens."),
    ] = None,
    box: Annotated[
        list[str] | None,
        typer.Option(help="Box x0,y0,x1,y1 in image pixels for the figure (repeatable)."),
    ] = None,
) -> None:
    """Explain one caption–image pair: token × patch interactions, with a summary.

    Prints the score, its completeness and the caption coloured by the whole image.

    --out writes an interactive HTML report, a Figure-1 style grid or the explanation itself.
    """
    from rich.console import Console

    import dualex

    console = Console()
    from dualex.engine.quadrature import canonical_rule

    kind = _output_kind(out)  # fail on bad settings before any slow work
    canonical_rule(rule)
    layer_arg = parse_layers(layers)
    for b in box or []:
        parse_box(b)
    if not text.strip():
        raise InvalidInputError("the caption is empty; pass a non-empty TEXT")
    picture = read_image(image)
    with _progress(f"loading model {model}"):
        encoder = resolve_model(model)
    with _progress(f"explaining with {encoder.name}"):
        ex = dualex.explain(encoder, text, picture, layers=layer_arg, steps=steps, rule=rule)
    _summary(ex, console)
    if out is not None and kind is not None:
        with _progress(f"writing {out.name}"):
            path = _write(ex, out, kind, image.name, span or [], box or [])
        console.print(f"wrote {path}", soft_wrap=True)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  dualex report a.safetensors b.safetensors --out report.html\n\n"
        "  dualex report runs/*.safetensors --out runs.html --title 'epoch 3'"
    )
)
def report(
    explanations: Annotated[
        list[Path],
        typer.Argument(help="Explanation files written by `dualex explain --out x.safetensors`."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path(
        "report.html"
    ),
    title: Annotated[str, typer.Option(help="Page title.")] = "dualex report",
) -> None:
    """Gather saved explanations into one self-contained interactive HTML report."""
    from rich.console import Console

    from dualex.explanation import Explanation
    from dualex.viz.report import write_report

    if out.suffix.lower() not in REPORT_SUFFIXES:
        raise InvalidInputError(f"--out {out.name!r} must end with .html")
    exs = []
    with _progress("reading explanations", total=len(explanations)) as advance:
        for path in explanations:
            exs.append(Explanation.load(path))
            advance()
    with _progress(f"writing {out.name}", total=len(exs)) as advance:
        path = write_report(
            exs, out, names=[p.name for p in explanations], title=title, progress=advance
        )
    Console().print(
        f"wrote {path} ({len(exs)} pairs, {path.stat().st_size / 1e6:.2f} MB)", soft_wrap=True
    )


@app.command()
def models() -> None:
    """List the model spec forms and what is installed."""
    from importlib.util import find_spec

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from dualex.model import SPEC_FORMS
    from dualex.models import builtin

    def have(*modules: str) -> bool:
        try:
            return all(find_spec(m) is not None for m in modules)
        except (ImportError, ValueError):
            return False

    status = {
        "builtin": "installed"
        if builtin.available()
        else "not installed: --model builtin falls back to random-clip (with a warning)",
        "hf:<id-or-path>": "available" if have("transformers") else "needs transformers",
        "openclip:<arch>[/<pretrained>]": "available"
        if have("open_clip", "dualex.towers.openclip")
        else "not available (pip install 'dualex[openclip]')",
        "openai:<name>": "available"
        if have("clip", "dualex.towers.openai_clip")
        else "not available (pip install clip-anytorch)",
        "st:<id-or-path>": "available"
        if have("sentence_transformers", "dualex.towers.sentence_transformers")
        else "not available (pip install 'dualex[st]')",
    }
    table = Table(title="model specs (--model)", title_justify="left")
    table.add_column("spec", no_wrap=True)
    table.add_column("what")
    table.add_column("status")
    for spec, what in SPEC_FORMS.items():
        table.add_row(escape(spec), escape(what), escape(status.get(spec, "")))
    table.add_row(
        escape("random-clip[:SEED]"),
        "a randomly initialised small CLIP (CLI only; for trying things out)",
        "available",
    )
    Console().print(table)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo-output"),
) -> None:
    """Explain a few pairs offline and write the results to ./demo-output/."""
    from dualex.demo import run_demo

    run_demo(out)


from dualex.evaluate.cli import eval_app  # noqa: E402

app.add_typer(eval_app, name="eval")

from dualex.train.cli import EPILOG as _FT_EPILOG  # noqa: E402
from dualex.train.cli import finetune_command  # noqa: E402

app.command("finetune", epilog=_FT_EPILOG)(finetune_command)


def main() -> None:
    """Entry point: bad input becomes one line on stderr and exit code 2 (``--debug``: traceback)."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    try:
        app(standalone_mode=False)
    except DualexError as err:
        if _state["debug"]:
            raise
        print(f"dualex: error: {err}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("dualex: aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except typer.TyperException as err:  # usage errors: missing argument, bad option value
        if _state["debug"]:
            raise
        if not err.format_message().strip():  # no arguments at all: the help was shown
            sys.exit(getattr(err, "exit_code", 2))
        ctx = getattr(err, "ctx", None)
        where = ctx.command_path if ctx is not None else "dualex"
        message = " ".join(err.format_message().split())
        print(f"dualex: error: {message} (see `{where} --help`)", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2) or 2)


if __name__ == "__main__":
    main()
