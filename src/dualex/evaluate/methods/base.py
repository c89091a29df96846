"""The one interface of evaluation methods: (model, image, texts) → attributions.

A method explains one image against one or more texts (the captions of one image, or one phrase
per mention) and returns one :class:`Attribution` per text. First-order methods fill
``image_map`` (one map on the patch grid per text); second-order methods fill ``matrix`` (every
text position × every image position) and the text positions, so a task can slice any phrase's
rows. Tasks (:mod:`dualex.evaluate.tasks`) only read attributions through
:meth:`Attribution.map_for` and :meth:`Attribution.scores_for`, so a new method is one file in
this package and one line in :data:`dualex.evaluate.methods.METHODS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from dualex.errors import SettingError, UnsupportedMethodError
from dualex.towers.positions import ImagePositions, TextPositions
from dualex.towers.registry import image_families_text

__all__ = [
    "Attribution",
    "Method",
    "UnsupportedMethodError",
    "needs_image_tower",
    "timed",
]


@dataclass
class Attribution:
    """One method's attribution of one (text, image) pair: the evaluation's record.

    Second-order results are :class:`dualex.Explanation` objects (dualex's and ``banzhaf``'s,
    the one result type, saved and loaded by one code path); an attribution of dualex carries
    its explanation in :attr:`explanation`. First-order maps keep this small record of their
    own: a map has no text rows, projections or completeness, and an ``Explanation`` with one
    side summed would invent a text side no first-order method computes.

    Attributes:
        method: The method's name.
        image: Positions of the image tower (grid, prefix, geometry).
        image_map: ``[rows, cols]`` first-order text→image map (first-order methods), else
            ``None``.
        matrix: ``[S_text, S_image]`` interactions of every text position with every image
            position (second-order methods; columns include CLS / prefix positions), else
            ``None``.
        text: Positions of ``matrix``'s rows (second-order methods), else ``None``.
        units: ``"score"`` when the values are in the model's score units (they add up to a
            score difference), ``"relative"`` when only their order and relative size mean
            anything (normalised maps).
        score: The model's score of the pair when the method computed it, else NaN.
        completeness: Relative completeness error (dualex), else NaN.
        steps: Quadrature nodes or model evaluations the method used (``-1``: none).
        seconds: Wall time of this attribution (a batch's time split evenly over its texts).
        extra: Method-specific terms (``first_order_text [S_text]``, ``first_order_image
            [S_image]``, ``constant`` for coalition predictions).
        explanation: The :class:`dualex.Explanation` behind ``matrix`` when the method made one
            (dualex), else ``None``.
    """

    method: str
    image: ImagePositions
    image_map: Tensor | None = None
    matrix: Tensor | None = None
    text: TextPositions | None = None
    units: str = "relative"
    score: float = float("nan")
    completeness: float = float("nan")
    steps: int = -1
    seconds: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)
    explanation: Any = None

    @property
    def order(self) -> int:
        """1 for a map, 2 for an interaction matrix."""
        return 2 if self.matrix is not None else 1

    def rows(self, span: Any = None) -> list[int]:
        """Matrix rows of a text span (``None``: every non-special token).

        Args:
            span: A ``(start, end)`` character range of the text, a substring, or token indices
                (see :meth:`TextPositions.span_indices`).
        """
        if self.text is None:
            raise SettingError(f"{self.method} gives a first-order map; it has no text rows")
        if span is None:
            return [i for i, sp in enumerate(self.text.special) if not sp]
        return self.text.span_indices(span)

    def map_for(self, span: Any = None) -> Tensor:
        """The image map of a text span, ``[rows, cols]`` (float64).

        Second-order methods sum the span's rows over the patch columns; first-order maps
        ignore ``span`` (they were made for their whole text).
        """
        if self.matrix is None:
            if self.image_map is None:
                raise SettingError(f"{self.method} returned neither a map nor a matrix")
            return self.image_map.double()
        if self.explanation is not None and span is not None:  # the explanation's own map
            return self.explanation.image_map(span).double()
        cols = self.image.patch_slice
        return self.matrix[self.rows(span)].sum(0)[cols].reshape(self.image.grid).double()

    def scores_for(self, patch_cols: Sequence[int]) -> Tensor | None:
        """Per-text-position scores of a set of image columns, ``[S_text]`` (second order only).

        Args:
            patch_cols: Column indices of ``matrix`` (prefix positions count).
        """
        if self.matrix is None:
            return None
        return self.matrix[:, list(patch_cols)].sum(1).double()


@dataclass(frozen=True)
class Method:
    """An evaluation method, described as data.

    Attributes:
        name: The ``--methods`` name.
        order: 1 (a map per text) or 2 (an interaction matrix per text).
        summary: One line: what the method is, with its reference.
        families: Model families it runs on (registry family names); empty: every family.
        run: ``run(model, image, texts, **options) -> list[Attribution]`` (one per text, in
            order). ``model`` is a :class:`dualex.DualEncoder`; ``image`` any image input dualex
            accepts; ``texts`` a non-empty list of strings.
        text_input: What a task gives the method for a mention: ``"caption"`` (the whole
            caption, once; the task slices the mention's phrase from it), ``"span"`` (the
            mention's phrase alone), or ``"given"`` (as the run's ``text`` setting says).
        check: ``check(model)`` raises :class:`UnsupportedMethodError` when the method cannot run
            on the model (cheap: no explanation is computed); ``None``: any model.
        settings: Run settings the method takes as keyword options of the same name (fields or
            properties of :class:`dualex.evaluate.tasks.EvalSettings`, e.g. ``"budget"``); a
            job records the fields among them.
        check_settings: ``check_settings(settings)`` raises a :class:`~dualex.errors.DualexError`
            on run settings the method cannot use (checked before a run writes anything).
        seeded: The method draws its values at random and takes ``seeds=`` (one key per text);
            tasks key each text by its sample (and mention), so reruns draw the same values.
        caption_scores: ``caption_scores(model, caption, key) -> (TextPositions, [S_text])``:
            per-token scores of a whole caption for the image → text metrics, for a method
            whose attribution of a phrase has no caption tokens (``None``: none).
    """

    name: str
    order: int
    summary: str
    run: Callable[..., list[Attribution]]
    families: tuple[str, ...] = ()
    text_input: str = "given"
    check: Callable[[Any], None] | None = None
    settings: tuple[str, ...] = ()
    check_settings: Callable[[Any], None] | None = None
    seeded: bool = False
    caption_scores: Callable[[Any, str, str], tuple[Any, Tensor]] | None = None

    def supports(self, model: Any) -> None:
        """Raise :class:`UnsupportedMethodError` if the method cannot run on ``model``."""
        if self.check is not None:
            self.check(model)

    def __call__(
        self, model: Any, image: Any, texts: Sequence[str], **options: Any
    ) -> list[Attribution]:
        """Run the method; see :attr:`run`."""
        if not texts:
            raise SettingError(f"{self.name}: pass at least one text")
        return self.run(model, image, list(texts), **options)


def needs_image_tower(name: str) -> Callable[[Any], None]:
    """A ``check`` for methods that need an image tower (image–text models)."""

    def check(model: Any) -> None:
        import dualex

        tower = dualex.wrap(model).tower_b
        if getattr(tower, "modality", None) != "image":
            raise UnsupportedMethodError(
                f"{name} explains an image; {getattr(model, 'name', 'this model')!r} has no image "
                f"tower (it runs on image–text families: {image_families_text()})"
            )

    return check


def timed(fn: Callable[[], list[Attribution]]) -> list[Attribution]:
    """Run ``fn`` and split its wall time evenly over the attributions it returns."""
    t0 = time.perf_counter()
    out = fn()
    dt = (time.perf_counter() - t0) / max(len(out), 1)
    for a in out:
        if a.seconds != a.seconds:  # NaN: not set by the method
            a.seconds = dt
    return out


def as_double(t: Tensor) -> Tensor:
    """Detached float64 copy on CPU."""
    return t.detach().to("cpu", torch.float64)
