"""The model's score of one (text, image) pair as a cooperative game.

Players are the text's non-special tokens (in the order of the text tower's positions),
followed by image regions: every patch of the image tower's grid, or, on grids of more than
:data:`MAX_REGIONS` patches, patches grouped into a grid of at most 8 × 8 regions (rows and
columns split as evenly as possible, :func:`region_groups`). The value of a coalition is the
model's score (dualex's :attr:`Explanation.score` units: the cosine, or the dot product for
``similarity="dot"`` models; never the logit scale) of the masked pair:

* an absent token is replaced by the filler token of the text tower's ``"pad"`` reference (the
  token dualex's text references fill with: CLIP's ``0``, SigLIP's / BERT's pad token), or, with
  ``text_absent="remove"``, dropped from the id sequence, which is then refilled at the end with
  that filler (attention mask 0, where the tower has one) so the model still sees its special
  tokens in order and pools where it always does; or, with ``text_absent="attention"``, kept
  in place with its attention-mask entry set to 0 (FIxLIP's masking: positions do not shift);
* an absent region takes the image tower's reference pixels (default ``"zeros"``: the dataset
  mean in normalised space) inside the boxes of its patches in the processed input (for CNN
  towers the grid is the feature map at the default split layer, each cell taking its share of
  the input; for SigLIP-2 NaFlex inputs the patch rows of the pixel sequence).

So the empty coalition is the text tower's ``"pad"`` reference against the image reference and
the grand coalition the pair itself. The value factorises over the two sides: it is the score of
a text embedding (a function of the text players present) with an image embedding (of the image
players present), so :meth:`PairGame.value_table` evaluates ``K_t × K_i`` coalitions with
``K_t + K_i`` tower passes.

The towers run their own forward (``encode``) on the masked inputs, in batches, under the
model's session (eval mode, no ``requires_grad``; the user's flags restored afterwards, also
after an error) and ``torch.no_grad()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from dualex.errors import SettingError
from dualex.masking import (
    MAX_REGIONS,
    REGION_GRID,
    TEXT_ABSENT,
    ImageMasker,
    TextMasker,
    all_coalitions,
    check_coalitions,
    model_device,
    region_groups,
    require_text_image,
)
from dualex.towers.positions import ImagePositions, TextPositions

__all__ = ["MAX_REGIONS", "REGION_GRID", "PairGame", "all_coalitions", "region_groups"]


class PairGame:
    """One (text, image) pair of an image–text dual encoder as a cooperative game.

    See the module docstring for the players, the masking and the units; the masked inputs are
    :class:`dualex.masking.TextMasker`'s and :class:`dualex.masking.ImageMasker`'s.

    Args:
        model: A :class:`dualex.DualEncoder` with a text tower and an image tower (or any model
            :func:`dualex.wrap` accepts).
        image: The image (any input the image tower accepts).
        text: The text.
        grid: ``(g_rows, g_cols)`` regions of patches (``None``: every patch a player when the
            grid has at most :data:`MAX_REGIONS` patches, else at most 8 × 8 regions).
        text_absent: ``"reference"`` (absent tokens become the reference filler token),
            ``"remove"`` (absent tokens are dropped from the sequence) or ``"attention"``
            (their attention-mask entries set to 0 in place, FIxLIP's masking).
        batch_size: Masked inputs per forward pass of a tower.
        image_reference: The image reference (``None``: the tower's default; any spec
            ``tower.reference_input`` takes, e.g. ``"zeros"``, ``"blur"``).
        text_groups: Token positions of each text player (e.g. whole words); ``None``: each
            non-special token alone.

    Attributes:
        model: The wrapped dual encoder.
        text: The text side's masker.
        image: The image side's masker.
        text_positions: Positions of the text tower (the rows of dualex's matrix).
        image_positions: Positions of the image tower (its columns, CLS / prefix included).
        text_groups: Token positions of each text player.
        text_players: The text players' token positions, flattened (one per player unless
            ``text_groups`` grouped them).
        image_players: Patch indices (0-based over the patch grid, row-major) of each region.
        n_text: Number of text players (first in every coalition).
        n_image: Number of image players (after the text players).
        n_players: ``n_text + n_image``.
        regions: ``(g_rows, g_cols)`` of the region grid.
        evaluations: Tower forward passes run so far (text and image inputs counted apart).

    Raises:
        UnsupportedMethodError: for a text–text model, or towers without a forward dualex can
            call on masked model tensors.
    """

    def __init__(
        self,
        model: Any,
        image: Any,
        text: str,
        *,
        grid: tuple[int, int] | None = None,
        text_absent: str = "reference",
        batch_size: int = 32,
        image_reference: Any = None,
        text_groups: Sequence[Sequence[int]] | None = None,
    ) -> None:
        import dualex

        model = dualex.wrap(model)
        require_text_image(model, "PairGame")
        ta, tb = model.tower_a, model.tower_b
        if text_absent not in TEXT_ABSENT:
            raise SettingError(f"text_absent={text_absent!r}; use one of {TEXT_ABSENT}")
        self.model = model
        self.text_absent = text_absent
        self.batch_size = batch_size
        opts = dict(
            normalize=model.similarity == "cosine",
            batch_size=batch_size,
            device=model_device(model),
        )
        self.text = TextMasker(ta, text, absent=text_absent, groups=text_groups, **opts)
        self.image = ImageMasker(tb, image, grid=grid, reference=image_reference, **opts)
        self.text_positions: TextPositions = self.text.positions
        self.text_groups: list[list[int]] = self.text.groups
        self.text_players: list[int] = [i for g in self.text_groups for i in g]
        self.image_positions: ImagePositions = self.image.positions
        self.image_players: list[list[int]] = self.image.groups
        self.regions = self.image.regions
        # the masked inputs, for tests and callers that build their own batches
        self._text_data = self.text.data
        self._image_data = self.image.data
        self._text_batch = self.text.batch
        self._image_batch = self.image.batch
        self._region_masks = self.image.region_masks

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def n_text(self) -> int:
        """Number of text players."""
        return self.text.n

    @property
    def n_image(self) -> int:
        """Number of image players (regions)."""
        return self.image.n

    @property
    def n_players(self) -> int:
        """``n_text + n_image``."""
        return self.n_text + self.n_image

    @property
    def evaluations(self) -> int:
        """Tower forward passes run so far (text and image inputs counted apart)."""
        return self.text.evaluations + self.image.evaluations

    def text_embeddings(self, coalitions: Any) -> Tensor:
        """Embeddings of masked texts (unit length for a cosine model).

        Args:
            coalitions: ``[K, n_text]`` bool, the text players present.

        Returns:
            ``[K, E]`` float64.
        """
        return self.text.embeddings(coalitions)

    def image_embeddings(self, coalitions: Any) -> Tensor:
        """Embeddings of masked images (unit length for a cosine model).

        Args:
            coalitions: ``[K, n_image]`` bool, the image players present.

        Returns:
            ``[K, E]`` float64.
        """
        return self.image.embeddings(coalitions)

    # -- values --------------------------------------------------------------------------------
    def value_table(self, text_coalitions: Any, image_coalitions: Any) -> np.ndarray:
        """Values of every text coalition with every image coalition.

        Args:
            text_coalitions: ``[K_t, n_text]`` bool.
            image_coalitions: ``[K_i, n_image]`` bool.

        Returns:
            ``[K_t, K_i]`` float64 (``K_t + K_i`` tower passes).
        """
        return (
            self.text_embeddings(text_coalitions) @ self.image_embeddings(image_coalitions).T
        ).numpy()

    def value(self, coalitions: Any) -> np.ndarray:
        """Values of coalitions of all players.

        Each distinct text half and image half is encoded once.

        Args:
            coalitions: ``[K, n_players]`` bool (text players first).

        Returns:
            ``[K]`` float64 scores.
        """
        c = check_coalitions(coalitions, self.n_players)
        t_u, t_inv = np.unique(c[:, : self.n_text], axis=0, return_inverse=True)
        i_u, i_inv = np.unique(c[:, self.n_text :], axis=0, return_inverse=True)
        et, ei = self.text_embeddings(t_u), self.image_embeddings(i_u)
        t_inv, i_inv = np.asarray(t_inv).reshape(-1), np.asarray(i_inv).reshape(-1)
        return (et[t_inv] * ei[i_inv]).sum(1).numpy()

    __call__ = value

    def to_shapiq(self, *, normalize: bool = False) -> Any:
        """This game as a ``shapiq.Game`` (for shapiq's approximators and exact computer).

        Args:
            normalize: shapiq's centring (value of the empty coalition subtracted).
        """
        import shapiq

        game = self

        class _Game(shapiq.Game):
            def value_function(self, coalitions: np.ndarray) -> np.ndarray:
                return game.value(coalitions)

        empty = float(self.value(np.zeros((1, self.n_players), bool))[0]) if normalize else None
        return _Game(self.n_players, normalize=normalize, normalization_value=empty)
