"""dualex's exceptions. Every message says what was wrong and what to do about it."""

from __future__ import annotations


class DualexError(Exception):
    """Base class of every error dualex raises on bad input or a bad setting."""


class UnknownModelError(DualexError, ValueError):
    """A model spec, architecture or pretrained tag that dualex cannot resolve."""


class InvalidLayerError(DualexError, ValueError):
    """A layer index outside the tower's range."""


class InvalidInputError(DualexError, ValueError):
    """An input (text, image, reference) that cannot be used."""


class UnsupportedMethodError(InvalidInputError):
    """A method that cannot run on the model's family (the message lists the families it can)."""


class SpanError(DualexError, ValueError):
    """A caption span that does not occur in, or does not fit, the caption."""


class BoxError(DualexError, ValueError):
    """An image box that is empty or lies outside the image."""


class SettingError(DualexError, ValueError):
    """A numeric or structural setting (rule, steps, mode, budget) that is out of range."""


class FileFormatError(DualexError, ValueError):
    """A file that is not what dualex expected (wrong format, version, or content)."""


class DualexWarning(UserWarning):
    """Base class of dualex's warnings: the input was used, but not all of it as given."""


class InputWarning(DualexWarning):
    """An input was changed on its way into the model (truncated, cropped, unknown tokens)."""


class ModelMismatchError(DualexError, ValueError):
    """A file made for one model (a concept dictionary) used with another."""


class OutputError(DualexError):
    """An output path that cannot be written (a read-only folder, a folder in the way, a full disk)."""


class JobError(DualexError, ValueError):
    """A dataset run that cannot go on: a different job in its output folder, or failed shards."""
