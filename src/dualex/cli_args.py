"""Arguments shared by the CLI's commands: model specs and layers (no command lives here).

Kept apart from :mod:`dualex.cli` so that sub-command modules (``dualex.evaluate.cli``...) can use
them without importing the CLI that imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dualex.errors import SettingError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "model_weights",
    "parse_layers",
    "resolve_model",
    "weights_of",
]


def _err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def resolve_model(spec: str, console: Console | None = None) -> Any:
    """Load a model by spec, with the CLI's fallback: ``builtin`` falls back to
    ``random-clip:0``, with a loud warning, while the built-in model is not installed.

    Raises:
        UnknownModelError: on an unknown spec.
    """
    import dualex
    from dualex.models import builtin

    if spec.strip().lower() == "builtin" and not builtin.available():
        (console or _err_console()).print(
            "[bold yellow]WARNING: the built-in model is not installed; explaining with a "
            "RANDOMLY INITIALISED CLIP (random-clip:0). The maps show exactness, not "
            "grounding.[/] Pass --model hf:<path> (or install the built-in model) for meaningful "
            "explanations.",
            soft_wrap=True,
        )
        return dualex.load("random-clip:0")
    return dualex.load(spec)


def parse_layers(text: str | None, flag: str = "--layers") -> int | tuple[int, int] | None:
    """``"A"`` → ``A``; ``"A,B"`` → ``(A, B)``; ``None`` → ``None``; errors name ``flag``.

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
            f"cannot read {flag} {text!r}; pass one layer (e.g. 11) or a pair for the text and "
            "image towers (e.g. 11,10); negative values count from the end"
        )
    return values[0] if len(values) == 1 else (values[0], values[1])


def weights_of(spec: str) -> str:
    """Where a ``--model`` spec's weights come from (:func:`dualex.model.spec_weights`), with
    the CLI's fallback: ``builtin`` while the built-in model is missing is ``random`` (the CLI
    explains with ``random-clip`` then)."""
    from dualex.model import spec_weights
    from dualex.models import builtin

    if spec.strip().lower() == "builtin" and not builtin.available():
        return "random"
    return spec_weights(spec)


def model_weights(model: Any, spec: str) -> str:
    """Where a loaded model's weights come from: what its loader recorded
    (``DualEncoder.weights``), else what its ``--model`` spec says (:func:`weights_of`)."""
    known = str(getattr(model, "weights", "unknown"))
    return known if known != "unknown" else weights_of(spec)
