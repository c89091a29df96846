# ruff: noqa: E402 (python -m dualex.cli guards its own loading first: dualex.interrupts)
"""The ``dualex`` command line: explain, report, models, demo.

Bad input ends with one line on stderr naming the problem and exit code 2 (``--debug`` shows the
traceback). Work that takes more than a moment (loading a model, explaining, writing a report)
shows a progress bar on stderr, so stdout stays clean for the summary.
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m dualex.cli: Ctrl-C while the modules below load
    from dualex.interrupts import guard_loading

    _restore_sigint = guard_loading()

import functools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dualex.cli_args import (
    _err_console,
    model_weights,
    parse_layers,
    resolve_model,
)
from dualex.errors import DualexError, InvalidInputError, SettingError
from dualex.interrupts import INTERRUPTED

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
_state = {"debug": False, "interrupted": False}

REPORT_SUFFIXES = (".html", ".htm")
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
TENSOR_SUFFIXES = (".safetensors",)


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


# -- helpers -------------------------------------------------------------------------------------
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


def read_image(path: Path, max_pixels: int | None = None) -> Any:
    """Open an image file fully (:func:`dualex.towers.inputs.load_image`'s policy).

    Raises:
        InvalidInputError: if the file is missing, not a readable image, or too large.
    """
    from dualex.towers.inputs import load_image

    return load_image(path, max_pixels=max_pixels)


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
    from rich.markup import escape
    from rich.table import Table

    from dualex.viz.summary import method_lines
    from dualex.viz.tokens import tokens_rich

    c = ex.completeness
    if getattr(ex, "method", "dualex") != "dualex":
        console.print(f"[bold]{escape(str(ex.model))}[/]  score [bold]{c.score:.5g}[/]")
        for label, value in method_lines(ex):
            console.print(f"  {escape(label)}: {escape(value)}", soft_wrap=True)
    else:
        console.print(
            f"[bold]{escape(str(ex.model))}[/]  score [bold]{c.score:.5g}[/] = Σ interactions "
            f"{c.attribution_sum:.5g} + reference terms {sum(c.reference_terms):.5g}  "
            f"(relative error {c.relative_error:.2e}, steps {c.steps[0]}/{c.steps[1]} {c.rule}, "
            f"layers {ex.layers[0]}/{ex.layers[1]})"
        )
    with suppress(DualexError):  # two texts have no image side
        console.print("caption × whole image: ", tokens_rich(ex.text_positions, ex.text_scores()))

    from dualex.towers.positions import ImagePositions
    from dualex.viz.summary import modality_names, strongest_interactions, unknown_note

    note = unknown_note(ex)
    if note:  # the struck-through words of the caption above (two texts: no caption line)
        shown = "struck through: " if isinstance(ex.b, ImagePositions) else ""
        console.print(f"[dim]{shown}{escape(note)}[/]", soft_wrap=True)

    table = Table(title="strongest interactions (by |value|)", title_justify="left")
    name_a, name_b = modality_names(ex)
    for col in (name_a, name_b + (" (pixels)" if name_b == "patch" else ""), "value"):
        table.add_column(col)
    for la, lb, v in strongest_interactions(ex, 5):
        table.add_row(escape(la), escape(lb), f"{v:+.4g}")
    console.print(table)


def _warn_random(ex: Any) -> None:
    from dualex.viz.report import RANDOM_WEIGHTS_NOTE

    if getattr(ex, "weights", "") == "random":
        print(
            f"dualex: warning: {RANDOM_WEIGHTS_NOTE} ({ex.model}); the maps show what an "
            "untrained network computes, not grounding",
            file=sys.stderr,
        )


def _pair_name(ex: Any, fallback: str) -> str:
    from dualex.towers.positions import TextPositions

    texts = [p.text for p in (ex.a, ex.b) if isinstance(p, TextPositions)]
    return " ↔ ".join(texts) if texts else fallback


def _write(
    ex: Any,
    out: Path,
    kind: str,
    name: str,
    spans: list[str],
    boxes: list[str],
    shared_range: bool = False,
    addons: Any = (),
) -> Path:
    from dualex.towers.positions import TextPositions

    if kind == "tensors":
        return ex.save(out)
    if kind == "report":
        from dualex.viz.report import write_report

        return write_report([ex], out, names=[name], title=f"dualex: {name}", addons=addons)
    from dualex.viz.figure import figure1, save_figure, text_pair_figure

    if isinstance(ex.a, TextPositions) and isinstance(ex.b, TextPositions):
        return save_figure(text_pair_figure(ex), out)
    fig = figure1(
        ex,
        spans=spans or None,
        boxes=[parse_box(b) for b in boxes] or None,
        shared_range=shared_range,
    )
    return save_figure(fig, out)


# -- commands ------------------------------------------------------------------------------------
@app.command(
    epilog=(
        "Examples:\n\n"
        "  dualex explain dog.jpg 'a husky in the snow' --out report.html\n\n"
        "  dualex explain dog.jpg 'a husky in the snow' --model hf:./clip-vit-b16 "
        "--layers 11,10 --out fig.png --span husky --span snow --box 40,30,200,180\n\n"
        "  dualex explain dog.jpg 'a husky' --model random-clip --out expl.safetensors\n\n"
        "  dualex explain 'a man plays guitar' 'someone is playing music' "
        "--model st:<path-or-id> --out pair.html\n\n"
        "  dualex explain --data coco:val2017,annotations --out runs/coco --backend ray "
        "--workers 8 --batch 16"
    )
)
def explain(
    image: Annotated[
        Path | None,
        typer.Argument(
            help="Image file (PNG, JPEG, ...), or the first text for a text–text model (st:...).",
            show_default=False,
        ),
    ] = None,
    text: Annotated[
        str | None,
        typer.Argument(help="The caption (or the second text).", show_default=False),
    ] = None,
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
        int | None, typer.Option(help="Quadrature nodes (1..1024); default adaptive.")
    ] = None,
    max_steps: Annotated[
        int, typer.Option("--max-steps", help="Most nodes adaptive steps may use (1..1024).")
    ] = 64,
    max_pixels: Annotated[
        int | None,
        typer.Option(
            "--max-pixels",
            help="Refuse images with more pixels (default 100 million, or $DUALEX_MAX_PIXELS).",
        ),
    ] = None,
    rule: Annotated[
        str | None,
        typer.Option(
            help="Quadrature rule: gauss-legendre, riemann, trapezoid or kronrod-patterson."
        ),
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
    shared_range: Annotated[
        bool,
        typer.Option(
            "--shared-range/--per-panel-range",
            help="Figure: one colour range for every heatmap and one for every token strip "
            "(default: each panel its own; every range is labelled).",
        ),
    ] = False,
    data: Annotated[
        str | None, typer.Option(help="Explain every pair of a dataset (see `dualex eval`).")
    ] = None,
    backend: Annotated[str, typer.Option(help="With --data: local, ray or ray:ADDRESS.")] = "local",
    workers: Annotated[int, typer.Option(help="With --data: Ray workers.", min=1)] = 1,
    batch: Annotated[
        int,
        typer.Option(
            "--batch",
            help="With --data: samples per shard (one file of explanations each; a shard is "
            "one worker's unit of work).",
            min=1,
        ),
    ] = 8,
    limit: Annotated[int | None, typer.Option(help="With --data: most samples.")] = None,
    method: Annotated[
        str,
        typer.Option(
            help="dualex (the paper's interactions, exact completeness) or banzhaf (sampled "
            "weighted Banzhaf interactions of the masking game; caption–image models)."
        ),
    ] = "dualex",
    budget: Annotated[
        int | None,
        typer.Option(help="banzhaf: tower passes per pair (16..4194304; default 2048)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="banzhaf: sampling seed (default 0).")] = None,
    concepts: Annotated[
        Path | None, typer.Option(help="Concept dictionary folder: the report's concept panel.")
    ] = None,
) -> None:
    """Explain one caption–image pair (token × patch) or two texts (token × token).

    Prints the score, its completeness and the caption coloured by the whole image.

    --out writes an interactive HTML report, a Figure-1 style grid or the explanation itself.

    With --data SPEC --out DIR (no IMAGE, TEXT): explain every pair of a dataset into DIR
    (sharded safetensors + index.parquet; resumable; --backend ray runs it on Ray).
    """
    from rich.console import Console

    import dualex

    if data is not None:
        from dualex.scale.cli import explain_data

        return explain_data(
            data,
            out,
            model,
            layers,
            steps,
            backend,
            workers,
            limit,
            image,
            text,
            batch=batch,
            method=method,
            budget=budget,
            seed=seed,
        )
    if image is None or text is None:
        missing = "IMAGE': pass an image file and" if image is None else "TEXT': pass"
        raise InvalidInputError(
            f"Missing argument '{missing} its caption text (or --data SPEC --out DIR: a dataset)"
        )

    console = Console()
    from dualex.engine.quadrature import canonical_rule
    from dualex.limits import check_steps

    kind = _output_kind(out)  # fail on bad settings before any slow work
    if concepts is not None and kind != "report":
        raise SettingError("--concepts adds a panel to the HTML report; pass --out report.html")
    check_steps(steps, max_steps, rule=canonical_rule(rule), names=("--steps", "--max-steps"))
    layer_arg = parse_layers(layers)
    from dualex.explainer import method_settings

    method_settings(method, budget, None, None, None, seed, None, layer_arg, steps)
    chosen = {} if method == "dualex" else {"method": method, "budget": budget, "seed": seed}
    for b in box or []:
        parse_box(b)
    from dualex.towers.inputs import check_text

    check_text(text)
    from dualex.towers.registry import modalities_of

    two_texts = not image.exists() and modalities_of(model) == ("text", "text")
    if two_texts:
        first: Any = check_text(str(image))
    else:
        if not image.exists():
            raise InvalidInputError(
                f"image {str(image)!r} does not exist; pass a PNG or JPEG file (to explain two "
                "texts, use a text–text model: --model st:<path-or-id>)"
            )
        first = read_image(image, max_pixels=max_pixels)
    if (span or box) and (kind != "figure" or two_texts):
        # the figure of an image-text pair is the one view they choose: elsewhere they would be
        # silently ignored (the report lets the reader pick spans and boxes interactively)
        flag = "--span" if span else "--box"
        raise SettingError(
            f"{flag} chooses what a caption-image figure shows; end --out with .png, .pdf or "
            ".svg, or drop it (the HTML report picks spans and boxes interactively)"
            if not two_texts
            else f"{flag} applies to caption-image figures; two texts have no image side and "
            "their figure shows every token"
        )
    from dualex.towers.positions import find_phrase

    for sp in span or []:
        find_phrase(text, sp)  # a span that is not in the caption fails before the model loads
    with _progress(f"loading model {model}"):
        encoder = resolve_model(model)
    if not two_texts and getattr(encoder.tower_b, "modality", "image") == "text":
        raise InvalidInputError(
            f"{encoder.name} compares two texts; pass two texts, not an image file"
        )
    with _progress(f"explaining with {encoder.name}"):
        opts = dict(layers=layer_arg, steps=steps, rule=rule, max_steps=max_steps, **chosen)
        pair = (first, text) if two_texts else (text, first)
        ex = dualex.explain(encoder, *pair, **opts)
    ex.weights = model_weights(encoder, model)
    _summary(ex, console)
    _warn_random(ex)
    if out is not None and kind is not None:
        name = _pair_name(ex, image.name) if two_texts else image.name
        with _progress(f"writing {out.name}"):
            from dualex.concepts.cli import report_addons

            addons = report_addons(ex, concepts, encoder) if kind == "report" else []
            path = _write(ex, out, kind, name, span or [], box or [], shared_range, addons)
        console.print(f"wrote {path}", soft_wrap=True)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  dualex report a.safetensors b.safetensors --out report.html\n\n"
        "  dualex report runs/*.safetensors --out runs.html --title 'epoch 3'\n\n"
        "  dualex report runs/coco-explained --limit 50 --sort lowest-score"
    )
)
def report(
    explanations: Annotated[
        list[Path],
        typer.Argument(help="Explanation files written by `dualex explain --out x.safetensors`."),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="The HTML file to write (default report.html)."),
    ] = None,
    title: Annotated[str, typer.Option(help="Page title.")] = "dualex report",
    limit: Annotated[int, typer.Option(help="For an explain DIR: pairs in the report.")] = 20,
    sort: Annotated[
        str,
        typer.Option(
            help="For an explain DIR: worst-completeness, best-completeness, lowest-score, "
            "highest-score or index."
        ),
    ] = "worst-completeness",
) -> None:
    """Gather saved explanations into one self-contained interactive HTML report.

    Given the folder of `dualex explain --data`, report --limit of its pairs chosen by --sort.
    """
    from rich.console import Console

    from dualex.explanation import Explanation
    from dualex.viz.report import write_report

    if len(explanations) == 1 and explanations[0].is_dir():
        from dualex.scale.cli import report_dir

        return report_dir(explanations[0], out, limit, sort, title)
    out = out or Path("report.html")

    if out.suffix.lower() not in REPORT_SUFFIXES:
        raise InvalidInputError(f"--out {out.name!r} must end with .html")
    exs = []
    with _progress("reading explanations", total=len(explanations)) as advance:
        for path in explanations:
            exs.append(Explanation.load(path))
            advance()
    with _progress(f"writing {out.name}", total=len(exs)) as advance:
        pairs = zip(exs, explanations, strict=True)
        names = [f"{_pair_name(ex, p.name)} ({p.name})" for ex, p in pairs]
        path = write_report(exs, out, names=names, title=title, progress=advance)
    randoms = [e for e in exs if getattr(e, "weights", "") == "random"]
    if randoms:
        _warn_random(randoms[0])
    Console().print(
        f"wrote {path} ({len(exs)} pairs, {path.stat().st_size / 1e6:.2f} MB)", soft_wrap=True
    )


@app.command()
def models() -> None:
    """List the model spec forms and what is installed."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from dualex.towers.registry import families

    table = Table(title="model specs (--model)", title_justify="left")
    table.add_column("spec", no_wrap=True)
    table.add_column("what")
    table.add_column("status")
    for family in families():
        for spec, what in family.spec_forms.items():
            table.add_row(escape(spec), escape(what), escape(family.status_of(spec)))
    Console().print(table)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo-output"),
) -> None:
    """Explain a few pairs offline and write the results to ./demo-output/."""
    from dualex.demo import run_demo

    run_demo(out)


from dualex.evaluate.cli import eval_app

app.add_typer(eval_app, name="eval")

from dualex.train.cli import EPILOG as _FT_EPILOG
from dualex.train.cli import finetune_command

MAX_FINETUNE_STEPS = 1_000_000
"""Most optimizer steps ``dualex finetune --steps`` takes: a fine-tune is hundreds to tens of
thousands of steps (the built-in model's whole training is 7 000); a number past this is a typo,
and the cosine schedule would spend its first 10 % warming up, far beyond any run's end."""


@functools.wraps(finetune_command)
def _finetune(**kwargs: Any) -> None:
    steps = kwargs.get("steps")
    if isinstance(steps, int) and steps > MAX_FINETUNE_STEPS:
        raise SettingError(
            f"--steps {steps:,} is more optimizer steps than dualex fine-tunes (at most "
            f"{MAX_FINETUNE_STEPS:,}; a fine-tune takes hundreds to tens of thousands); pass the "
            "number of steps you mean to run"
        )
    return finetune_command(**kwargs)


app.command("finetune", epilog=_FT_EPILOG)(_finetune)

from dualex.search.cli import register as _register_search

_register_search(app)

from dualex.concepts.cli import concepts_app

app.add_typer(concepts_app, name="concepts")


@contextmanager
def quiet_third_party(debug: bool) -> Iterator[None]:
    """Within the block, dualex's warnings print as one ``dualex: warning: ...`` line and
    third-party warnings, log messages and progress bars (transformers, huggingface_hub) are
    silenced; ``debug=True`` changes nothing. Every switch is restored on exit.
    """
    import os
    import warnings

    if debug:
        yield
        return
    env = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    restore: list[Any] = []
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None:  # already imported (in-process use): switch it, then restore
        level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        restore.append(lambda: hf_logging.set_verbosity(level))
        if bars:
            restore.append(hf_logging.enable_progress_bar)

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if category.__module__.split(".")[0] == "dualex":
            text = " ".join(str(message).replace("!", " ").split())
            print(f"dualex: warning: {text}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = show
            yield
    finally:
        for fn in restore:
            fn()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


RESUMING_EVALS = ("grounding", "mismatch", "grid", "faithfulness")
"""``dualex eval`` commands that run as resumable dataset jobs (``compare`` and ``shapley`` do
not: they start over)."""

RESUME_HINT = "re-run the same command to resume"
"""Added to :data:`INTERRUPTED` for the commands that resume where they stopped."""


def resumes(argv: list[str]) -> bool:
    """Whether the command of ``argv`` (the arguments after ``dualex``) resumes when re-run:
    ``finetune``, the ``eval`` dataset jobs and ``explain --data`` keep their finished work."""
    words = [a for a in argv if not a.startswith("-")]
    command = words[0] if words else ""
    if command == "finetune":
        return True
    if command == "eval":
        return len(words) > 1 and words[1] in RESUMING_EVALS
    return command == "explain" and any(a == "--data" or a.startswith("--data=") for a in argv)


def _on_sigint(signum: int, frame: Any) -> None:
    _state["interrupted"] = True
    raise KeyboardInterrupt


def main() -> None:
    """Entry point: bad input becomes one line on stderr and exit code 2 (``--debug``: traceback).

    Without ``--debug``, third-party warnings and progress bars are silenced and dualex's
    warnings print as one line each (see :func:`quiet_third_party`).

    Ctrl-C (SIGINT) anywhere in any command ends it with one line, ``dualex: interrupted``
    (``; re-run the same command to resume`` for the commands that resume, see :func:`resumes`)
    and exit code 130; every output is written atomically, so nothing half-written is left.
    """
    import signal

    argv = sys.argv[1:]
    _state["interrupted"] = False
    previous = signal.getsignal(signal.SIGINT)
    handled = previous is signal.default_int_handler  # an ignored SIGINT stays ignored
    if handled:
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        _dispatch("--debug" in argv)
    except BaseException:
        if not _state["interrupted"]:
            raise
    finally:
        if handled:
            signal.signal(signal.SIGINT, previous)
    if _state["interrupted"]:  # whatever the interrupted code raised or returned (typer: 130)
        hint = f"; {RESUME_HINT}" if resumes(argv) else ""
        print(f"dualex: {INTERRUPTED}{hint}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)


def _dispatch(debug: bool) -> None:
    try:
        with quiet_third_party(debug):
            code = app(standalone_mode=False)
        if code == 130:  # typer turns a KeyboardInterrupt into this exit code
            _state["interrupted"] = True
    except DualexError as err:
        if _state["debug"]:
            raise
        print(f"dualex: error: {err}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        _state["interrupted"] = True
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
    _restore_sigint()
    main()
