"""Arguments shared by the CLI's commands: model specs and layers (no command lives here).

Kept apart from :mod:`dualex.cli` so that sub-command modules (``dualex.evaluate.cli``...) can use
them without importing the CLI that imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dualex.errors import SettingError, UnknownModelError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "RANDOM_CONFIG",
    "RANDOM_SPECS",
    "model_weights",
    "parse_layers",
    "resolve_model",
    "weights_of",
]

RANDOM_SPECS = ("random", "random-clip")
"""CLI-only model specs: a randomly initialised small CLIP (``random-clip[:SEED]``)."""

RANDOM_CONFIG: dict[str, int] = {"image_size": 64, "patch_size": 8}
"""Size of the ``random-clip`` model (``dualex.models.factory.clip_config`` arguments)."""


def _err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


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
    return dualex.wrap(
        m, tokenizer=tok, image_processor=proc, name=f"random-clip:{seed}", weights="random"
    )


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


def weights_of(spec: str) -> str:
    """Where a ``--model`` spec's weights come from: ``random``, ``builtin`` or ``pretrained``.

    ``random-clip``, ``builtin`` while the built-in model is missing (the CLI falls back to
    ``random-clip``) and ``openclip:<arch>`` without a pretrained tag are random.
    """
    from dualex.models import builtin

    key = spec.strip().lower()
    kind, _, rest = key.partition(":")
    if kind in RANDOM_SPECS:
        return "random"
    if key == "builtin":  # the CLI falls back to random-clip while it is missing
        return "builtin" if builtin.available() else "random"
    if key in builtin.BUILTIN_MODELS:
        return "builtin"
    if kind == "openclip" and "/" not in rest:
        return "random"
    return "pretrained"


def model_weights(model: Any, spec: str) -> str:
    """Where a loaded model's weights come from: what its loader recorded
    (``DualEncoder.weights``), else what its ``--model`` spec says (:func:`weights_of`)."""
    known = str(getattr(model, "weights", "unknown"))
    return known if known != "unknown" else weights_of(spec)
