"""Ctrl-C before the command line has loaded: one line and exit code 130, as anywhere else.

Loading the command line takes a moment. :func:`guard_loading` makes Ctrl-C in that moment end
the program the way :func:`dualex.cli.main` ends an interrupted command, with one line
(``dualex: interrupted``) and exit code 130, instead of a traceback from inside an import.
Nothing has been written by then, so there is nothing to resume. Standard library only, so the
guard is in place before anything heavy is imported.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["INTERRUPTED", "guard_loading"]

INTERRUPTED = "interrupted"
"""What an interrupted command prints (with ``dualex: `` before it)."""


def _interrupted_while_loading(signum: int, frame: Any) -> None:
    sys.stderr.write(f"dualex: {INTERRUPTED}\n")
    sys.stderr.flush()
    os._exit(130)


def guard_loading() -> Callable[[], None]:
    """Make Ctrl-C end the process with one line and exit code 130 until the returned function
    is called (it puts the previous handler back). A SIGINT that is ignored, or handled by the
    host program, is left as it is."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        return lambda: None
    signal.signal(signal.SIGINT, _interrupted_while_loading)
    return lambda: signal.signal(signal.SIGINT, previous)
