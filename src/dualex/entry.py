"""The ``dualex`` program's entry point: the command line, loaded under
:func:`dualex.interrupts.guard_loading` (Ctrl-C while it loads is one line and exit code 130)."""

from __future__ import annotations

from dualex.interrupts import guard_loading

__all__ = ["main"]


def main() -> None:
    """The ``dualex`` command: load the command line under the guard, then run it."""
    restore = guard_loading()
    from dualex.cli import main as run

    restore()
    run()
