"""The ``dualex`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dualex.errors import DualexError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Explain what a dual encoder matched: token × patch (or token × token) interactions.",
)
_state = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo-output"),
) -> None:
    """Explain a few pairs offline and write the results to ./demo-output/."""
    from dualex.demo import run_demo

    run_demo(out)


def main() -> None:
    """Entry point: dualex errors become one line on stderr and exit code 2."""
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
    except Exception as err:  # click usage errors carry their own exit code
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(2)
        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
