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
  tokens in order and pools where it always does;
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
import torch
from torch import Tensor

from dualex.errors import InvalidInputError, SettingError
from dualex.evaluate.methods.base import UnsupportedMethodError
from dualex.towers.positions import ImagePositions, TextPositions

__all__ = ["MAX_REGIONS", "PairGame", "all_coalitions", "region_groups"]

MAX_REGIONS = 64
"""Largest patch grid whose patches are players themselves; larger grids are grouped."""

REGION_GRID = (8, 8)
"""Most regions per side of a grouped grid."""

TEXT_ABSENT = ("reference", "remove")


def region_groups(grid: tuple[int, int], regions: tuple[int, int]) -> list[list[int]]:
    """Patches (0-based, row-major over ``grid``) of each region of a ``regions`` partition.

    Rows and columns are split as evenly as possible (``numpy.array_split``); a side with fewer
    patches than asked for gets one region per patch.

    Args:
        grid: ``(rows, cols)`` of the patch grid.
        regions: ``(g_rows, g_cols)`` regions.

    Returns:
        ``g_rows' · g_cols'`` lists of patch indices, regions in row-major order.
    """
    rows, cols = (int(v) for v in grid)
    gr, gc = (int(v) for v in regions)
    if gr < 1 or gc < 1:
        raise SettingError(f"grid={regions!r}: give at least one region per side")
    r_parts = np.array_split(np.arange(rows), min(gr, rows))
    c_parts = np.array_split(np.arange(cols), min(gc, cols))
    return [[int(r) * cols + int(c) for r in rp for c in cp] for rp in r_parts for cp in c_parts]


def all_coalitions(n: int) -> np.ndarray:
    """Every coalition of ``n`` players, ``[2^n, n]`` bool; row ``k`` has player ``i`` iff bit
    ``i`` of ``k`` is set."""
    k = np.arange(1 << n)
    return ((k[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)


def _ids_key(data: dict[str, Tensor]) -> str:
    if "input_ids" in data:
        return "input_ids"
    ints = [k for k, v in data.items() if not v.is_floating_point() and v.dim() == 2]
    if len(ints) != 1:
        raise UnsupportedMethodError(
            "cannot tell which tensor of the text input holds the token ids "
            f"(keys {sorted(data)}); PairGame needs an 'input_ids' tensor"
        )
    return ints[0]


def _pixels_key(data: dict[str, Tensor]) -> str:
    if "pixel_values" in data:
        return "pixel_values"
    floats = [k for k, v in data.items() if v.is_floating_point() and v.dim() in (3, 4)]
    if len(floats) != 1:
        raise UnsupportedMethodError(
            "cannot tell which tensor of the image input holds the pixels "
            f"(keys {sorted(data)}); PairGame needs a 'pixel_values' tensor"
        )
    return floats[0]


class PairGame:
    """One (text, image) pair of an image–text dual encoder as a cooperative game.

    See the module docstring for the players, the masking and the units.

    Args:
        model: A :class:`dualex.DualEncoder` with a text tower and an image tower (or any model
            :func:`dualex.wrap` accepts).
        image: The image (any input the image tower accepts).
        text: The text.
        grid: ``(g_rows, g_cols)`` regions of patches (``None``: every patch a player when the
            grid has at most :data:`MAX_REGIONS` patches, else at most 8 × 8 regions).
        text_absent: ``"reference"`` (absent tokens become the reference filler token) or
            ``"remove"`` (absent tokens are dropped from the sequence).
        batch_size: Masked inputs per forward pass of a tower.
        image_reference: The image reference (``None``: the tower's default; any spec
            ``tower.reference_input`` takes, e.g. ``"zeros"``, ``"blur"``).
        text_groups: Token positions of each text player (e.g. whole words); ``None``: each
            non-special token alone.

    Attributes:
        model: The wrapped dual encoder.
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
        ta, tb = model.tower_a, model.tower_b
        if ta.modality != "text" or tb.modality != "image":
            raise UnsupportedMethodError(
                f"PairGame masks a text against an image; {model.name!r} is a "
                f"{ta.modality}–{tb.modality} model (image–text families: hf, hf-align, "
                "openclip, openai, builtin, custom image towers)"
            )
        for tower in (ta, tb):
            if not callable(getattr(tower, "encode", None)):
                raise UnsupportedMethodError(
                    f"the {tower.name} tower has no forward on model tensors (encode); PairGame "
                    "runs on towers built on a torch module (HookTower subclasses)"
                )
        if text_absent not in TEXT_ABSENT:
            raise SettingError(f"text_absent={text_absent!r}; use one of {TEXT_ABSENT}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SettingError(f"batch_size={batch_size!r}; use a positive int")
        self.model = model
        self.text_absent = text_absent
        self.batch_size = batch_size
        self.evaluations = 0
        module = getattr(model, "module", None)
        params = list(module.parameters()) if module is not None else []
        self._device = params[0].device if params else None

        # -- text side ------------------------------------------------------------------------
        t_inp = ta.prepare(text)
        pos = t_inp.positions
        if not isinstance(pos, TextPositions):
            raise UnsupportedMethodError(f"the {ta.name} tower's positions are not text tokens")
        self.text_positions: TextPositions = pos
        self._ids_key = _ids_key(t_inp.data)
        self._text_data = {k: v.detach() for k, v in t_inp.data.items()}
        ids = self._text_data[self._ids_key]
        try:
            ref = ta.reference_input(t_inp, "pad").data[self._ids_key]
        except InvalidInputError as err:
            raise UnsupportedMethodError(
                f"the {ta.name} tower has no 'pad' text reference to mask tokens with: {err}"
            ) from err
        if text_groups is None:
            groups = [[i] for i, sp in enumerate(pos.special) if not sp]
        else:
            groups = [sorted({int(i) for i in g}) for g in text_groups]
            bad = [i for g in groups for i in g if not 0 <= i < len(pos)]
            if bad or any(not g for g in groups):
                raise SettingError(f"text_groups must be non-empty lists of positions < {len(pos)}")
        if not groups:
            raise InvalidInputError(f"the text {text!r} has no non-special tokens to mask")
        self.text_groups: list[list[int]] = groups
        self.text_players: list[int] = [i for g in groups for i in g]
        self._fill = ref  # [1, T]: the reference's ids, the filler at every content position
        content = [i for i, sp in enumerate(pos.special) if not sp]
        self._fill_id = int(ref[0, content[0]]) if content else 0
        self._T = int(ids.shape[1])

        # -- image side -----------------------------------------------------------------------
        i_inp = tb.prepare(image)
        ipos = i_inp.positions
        if not isinstance(ipos, ImagePositions):
            raise UnsupportedMethodError(f"the {tb.name} tower's positions are not image patches")
        self.image_positions: ImagePositions = ipos
        self._px_key = _pixels_key(i_inp.data)
        self._image_data = {k: v.detach() for k, v in i_inp.data.items()}
        px = self._image_data[self._px_key]
        self._ref_px = tb.reference_input(i_inp, image_reference).data[self._px_key].to(px)
        rows, cols = (int(v) for v in ipos.grid)
        if grid is None:
            grid = (rows, cols) if rows * cols <= MAX_REGIONS else REGION_GRID
        if not (isinstance(grid, tuple | list) and len(grid) == 2):
            raise SettingError(f"grid={grid!r}; give (g_rows, g_cols)")
        self.image_players: list[list[int]] = region_groups((rows, cols), tuple(grid))
        self.regions = (min(int(grid[0]), rows), min(int(grid[1]), cols))
        self._region_masks = self._pixel_masks(px, (rows, cols))  # [n_image, *pixel grid]
        self._uncovered = ~self._region_masks.any(0).flatten()  # padding rows: always kept

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def n_text(self) -> int:
        """Number of text players."""
        return len(self.text_groups)

    @property
    def n_image(self) -> int:
        """Number of image players (regions)."""
        return len(self.image_players)

    @property
    def n_players(self) -> int:
        """``n_text + n_image``."""
        return self.n_text + self.n_image

    def _pixel_masks(self, px: Tensor, grid: tuple[int, int]) -> Tensor:
        """Bool ``[n_image, *px.shape[2:]]``: the input elements each region covers."""
        rows, cols = grid
        if px.dim() == 3:  # NaFlex: [1, N, patch pixels], patch rows row-major, then padding
            masks = torch.zeros(self.n_image, px.shape[1], dtype=torch.bool)
            for r, group in enumerate(self.image_players):
                masks[r, group] = True
            return masks
        H, W = int(px.shape[-2]), int(px.shape[-1])
        patch = getattr(self.model.tower_b, "patch", None)
        if patch is not None and getattr(self.model.tower_b, "kind", "vit") == "vit":
            ph, pw = (patch, patch) if isinstance(patch, int) else (int(patch[0]), int(patch[1]))
            ys = [r * ph for r in range(rows)] + [H]
            xs = [c * pw for c in range(cols)] + [W]
        else:  # feature-map cells: proportional shares of the input
            ys = [round(r * H / rows) for r in range(rows + 1)]
            xs = [round(c * W / cols) for c in range(cols + 1)]
        masks = torch.zeros(self.n_image, H, W, dtype=torch.bool)
        for r, group in enumerate(self.image_players):
            for k in group:
                i, j = divmod(k, cols)
                masks[r, ys[i] : ys[i + 1], xs[j] : xs[j + 1]] = True
        return masks

    # -- masked inputs -------------------------------------------------------------------------
    def _check(self, coalitions: Any, n: int) -> np.ndarray:
        c = np.asarray(coalitions)
        if c.ndim == 1:
            c = c[None]
        if c.ndim != 2 or c.shape[1] != n:
            raise InvalidInputError(f"coalitions must be [K, {n}] bool, got shape {c.shape}")
        return c.astype(bool)

    def _text_batch(self, present: Tensor) -> dict[str, Tensor]:
        """Model tensors of ``B`` masked texts; ``present``: bool ``[B, n_text]``."""
        B = present.shape[0]
        data = {k: v.expand(B, *v.shape[1:]).clone() for k, v in self._text_data.items()}
        ids = data[self._ids_key]
        pos_present = torch.ones(B, self._T, dtype=torch.bool)
        for p, group in enumerate(self.text_groups):
            pos_present[:, group] = present[:, p : p + 1]
        if self.text_absent == "reference":
            data[self._ids_key] = torch.where(pos_present, ids, self._fill.expand(B, -1))
            return data
        order = torch.argsort((~pos_present).to(torch.int8), dim=1, stable=True)  # kept first
        for k, v in data.items():
            if v.dim() == 2 and v.shape[1] == self._T:
                moved = torch.gather(v, 1, order)
                pad = self._fill_id if k == self._ids_key else 0
                data[k] = torch.where(torch.gather(pos_present, 1, order), moved, pad)
        return data

    def _image_batch(self, present: Tensor) -> dict[str, Tensor]:
        """Model tensors of ``B`` masked images; ``present``: bool ``[B, n_image]``."""
        B = present.shape[0]
        data = {k: v.expand(B, *v.shape[1:]) for k, v in self._image_data.items()}
        flat = self._region_masks.flatten(1).to(torch.float32)
        keep = ((present.to(torch.float32) @ flat) > 0) | self._uncovered  # [B, mask numel]
        px = self._image_data[self._px_key]
        shape = (B, px.shape[1], 1) if px.dim() == 3 else (B, 1, *px.shape[-2:])
        keep = keep.view(shape)
        data[self._px_key] = torch.where(keep, px, self._ref_px)
        return data

    def _encode(self, tower: Any, batches: list[dict[str, Tensor]]) -> Tensor:
        out = []
        with self.model.session(), torch.no_grad():
            for data in batches:
                if self._device is not None:
                    data = {k: v.to(self._device) for k, v in data.items()}
                e = tower.encode(data).detach().to("cpu", torch.float64)
                self.evaluations += int(e.shape[0])
                out.append(e)
        e = torch.cat(out)
        if self.model.similarity == "cosine":
            e = e / e.norm(dim=1, keepdim=True)
        return e

    def _embed(self, coalitions: Any, n: int, make: Any, tower: Any) -> Tensor:
        c = torch.from_numpy(self._check(coalitions, n))
        if len(c) == 0:
            return torch.zeros(0, 0, dtype=torch.float64)
        bs = self.batch_size
        return self._encode(tower, [make(c[s : s + bs]) for s in range(0, len(c), bs)])

    def text_embeddings(self, coalitions: Any) -> Tensor:
        """Embeddings of masked texts (unit length for a cosine model).

        Args:
            coalitions: ``[K, n_text]`` bool, the text players present.

        Returns:
            ``[K, E]`` float64.
        """
        return self._embed(coalitions, self.n_text, self._text_batch, self.model.tower_a)

    def image_embeddings(self, coalitions: Any) -> Tensor:
        """Embeddings of masked images (unit length for a cosine model).

        Args:
            coalitions: ``[K, n_image]`` bool, the image players present.

        Returns:
            ``[K, E]`` float64.
        """
        return self._embed(coalitions, self.n_image, self._image_batch, self.model.tower_b)

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
        c = self._check(coalitions, self.n_players)
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
