"""Masked inputs of one tower: the players of a text (tokens) or of an image (patch regions).

A *coalition* is a bool vector over a side's players; the masked input keeps the players
present and masks the absent ones:

* text (:class:`TextMasker`), one of three ways (``absent``):

  - ``"reference"``: an absent token is replaced by the filler token of the tower's ``"pad"``
    reference (CLIP's ``0``, SigLIP's / BERT's pad token), attention kept;
  - ``"remove"``: absent tokens are dropped from the id sequence, which is refilled at the end
    with the filler (attention mask 0 where the tower has one), so the special tokens stay in
    order and the tower pools where it always does; positions shift;
  - ``"attention"``: an absent token keeps its id and position but its attention-mask entry is
    set to 0 (FIxLIP's text masking); needs a tower whose inputs carry an attention mask;

* image (:class:`ImageMasker`): an absent region takes the tower's reference pixels (default
  ``"zeros"``: the dataset mean in normalised space) inside the boxes of its patches in the
  processed input (CNN towers: the feature-map cells' shares of the input; SigLIP-2 NaFlex: the
  patch rows of the pixel sequence).

Both encode masked inputs with the tower's own forward (``encode``), in batches, in eval mode
under the tower's session and ``torch.no_grad()``, and return float64 embeddings (unit length
when ``normalize``). :class:`dualex.evaluate.game.PairGame` and the faithful (``banzhaf``)
explanations of :mod:`dualex.faithful` build on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InvalidInputError, SettingError, UnsupportedMethodError
from dualex.towers.positions import ImagePositions, TextPositions
from dualex.towers.registry import image_families_text

__all__ = [
    "MAX_REGIONS",
    "REGION_GRID",
    "TEXT_ABSENT",
    "ImageMasker",
    "TextMasker",
    "all_coalitions",
    "check_coalitions",
    "model_device",
    "region_groups",
]

MAX_REGIONS = 64
"""Largest patch grid whose patches are players themselves; larger grids are grouped."""

REGION_GRID = (8, 8)
"""Most regions per side of a grouped grid."""

TEXT_ABSENT = ("reference", "remove", "attention")
"""The ways an absent token is masked (see the module docstring)."""


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
            f"(keys {sorted(data)}); masking needs an 'input_ids' tensor"
        )
    return ints[0]


def _pixels_key(data: dict[str, Tensor]) -> str:
    if "pixel_values" in data:
        return "pixel_values"
    floats = [k for k, v in data.items() if v.is_floating_point() and v.dim() in (3, 4)]
    if len(floats) != 1:
        raise UnsupportedMethodError(
            "cannot tell which tensor of the image input holds the pixels "
            f"(keys {sorted(data)}); masking needs a 'pixel_values' tensor"
        )
    return floats[0]


def model_device(model: Any) -> torch.device | None:
    """The device of a :class:`dualex.DualEncoder`'s weights (``None``: no torch module)."""
    module = getattr(model, "module", None)
    params = list(module.parameters()) if module is not None else []
    return params[0].device if params else None


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SettingError(f"batch_size={batch_size!r}; use a positive int")
    return batch_size


def check_coalitions(coalitions: Any, n: int) -> np.ndarray:
    """``coalitions`` as a ``[K, n]`` bool array (one row allowed as ``[n]``).

    Raises:
        InvalidInputError: for another shape.
    """
    c = np.asarray(coalitions)
    if c.ndim == 1:
        c = c[None]
    if c.ndim != 2 or c.shape[1] != n:
        raise InvalidInputError(f"coalitions must be [K, {n}] bool, got shape {c.shape}")
    return c.astype(bool)


class _Masker:
    """Shared encoding of masked inputs (see the module docstring)."""

    n: int

    def __init__(self, tower: Any, normalize: bool, batch_size: int, device: Any) -> None:
        if not callable(getattr(tower, "encode", None)):
            raise UnsupportedMethodError(
                f"the {tower.name} tower has no forward on model tensors (encode); masking "
                "runs on towers built on a torch module (HookTower subclasses)"
            )
        self.tower = tower
        self.normalize = bool(normalize)
        self.batch_size = _check_batch_size(batch_size)
        self.evaluations = 0
        self.device = device

    def batch(self, present: Tensor) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def embeddings(self, coalitions: Any) -> Tensor:
        """Embeddings of masked inputs (unit length when ``normalize``).

        Args:
            coalitions: ``[K, n]`` bool, the players present.

        Returns:
            ``[K, E]`` float64 (``[0, 0]`` for no coalition).
        """
        c = torch.from_numpy(check_coalitions(coalitions, self.n))
        if len(c) == 0:
            return torch.zeros(0, 0, dtype=torch.float64)
        bs = self.batch_size
        out = []
        with self.tower.session(), torch.no_grad():
            for s in range(0, len(c), bs):
                data = self.batch(c[s : s + bs])
                if self.device is not None:
                    data = {k: v.to(self.device) for k, v in data.items()}
                e = self.tower.encode(data).detach().to("cpu", torch.float64)
                self.evaluations += int(e.shape[0])
                out.append(e)
        e = torch.cat(out)
        if self.normalize:
            e = e / e.norm(dim=1, keepdim=True)
        return e


class TextMasker(_Masker):
    """Masked versions of one text (players: tokens, or groups of tokens).

    Args:
        tower: A text tower with ``prepare``, ``reference_input`` and ``encode``.
        text: The text.
        absent: ``"reference"``, ``"remove"`` or ``"attention"`` (see the module docstring).
        groups: Token positions of each player (e.g. whole words); ``None``: each non-special
            token alone.
        normalize: Return unit-length embeddings (cosine models).
        batch_size: Masked inputs per forward pass.
        device: Where the tower's weights are (:func:`model_device`); ``None``: the CPU.

    Attributes:
        positions: The text's positions (rows of an explanation's matrix).
        groups: Token positions of each player.
        n: Number of players.
        evaluations: Forward passes (inputs) run so far.

    Raises:
        UnsupportedMethodError: for a tower without a forward on model tensors, a ``"pad"``
            reference, or (``"attention"``) an attention mask.
        InvalidInputError: for a text without non-special tokens.
    """

    def __init__(
        self,
        tower: Any,
        text: Any,
        *,
        absent: str = "reference",
        groups: Sequence[Sequence[int]] | None = None,
        normalize: bool = True,
        batch_size: int = 32,
        device: Any = None,
    ) -> None:
        super().__init__(tower, normalize, batch_size, device)
        if absent not in TEXT_ABSENT:
            raise SettingError(f"text_absent={absent!r}; use one of {TEXT_ABSENT}")
        self.absent = absent
        inp = tower.prepare(text)
        pos = inp.positions
        if not isinstance(pos, TextPositions):
            raise UnsupportedMethodError(f"the {tower.name} tower's positions are not text tokens")
        self.positions: TextPositions = pos
        self.ids_key = _ids_key(inp.data)
        self.data = {k: v.detach() for k, v in inp.data.items()}
        if absent == "attention" and "attention_mask" not in self.data:
            raise UnsupportedMethodError(
                f"the {tower.name} tower's inputs have no attention mask to mask tokens with; "
                "use text_absent='reference' or 'remove'"
            )
        ids = self.data[self.ids_key]
        try:
            ref = tower.reference_input(inp, "pad").data[self.ids_key]
        except InvalidInputError as err:
            raise UnsupportedMethodError(
                f"the {tower.name} tower has no 'pad' text reference to mask tokens with: {err}"
            ) from err
        if groups is None:
            found = [[i] for i, sp in enumerate(pos.special) if not sp]
        else:
            found = [sorted({int(i) for i in g}) for g in groups]
            bad = [i for g in found for i in g if not 0 <= i < len(pos)]
            if bad or any(not g for g in found):
                raise SettingError(f"text_groups must be non-empty lists of positions < {len(pos)}")
        if not found:
            raise InvalidInputError(f"the text {text!r} has no non-special tokens to mask")
        self.groups: list[list[int]] = found
        self.n = len(found)
        self.fill = ref  # [1, T]: the reference's ids, the filler at every content position
        content = [i for i, sp in enumerate(pos.special) if not sp]
        self.fill_id = int(ref[0, content[0]]) if content else 0
        self.length = int(ids.shape[1])

    def batch(self, present: Tensor) -> dict[str, Tensor]:
        """Model tensors of ``B`` masked texts; ``present``: bool ``[B, n]``."""
        B = present.shape[0]
        data = {k: v.expand(B, *v.shape[1:]).clone() for k, v in self.data.items()}
        ids = data[self.ids_key]
        pos_present = torch.ones(B, self.length, dtype=torch.bool)
        for p, group in enumerate(self.groups):
            pos_present[:, group] = present[:, p : p + 1]
        if self.absent == "reference":
            data[self.ids_key] = torch.where(pos_present, ids, self.fill.expand(B, -1))
            return data
        if self.absent == "attention":
            mask = data["attention_mask"]
            data["attention_mask"] = torch.where(pos_present, mask, torch.zeros_like(mask))
            return data
        order = torch.argsort((~pos_present).to(torch.int8), dim=1, stable=True)  # kept first
        for k, v in data.items():
            if v.dim() == 2 and v.shape[1] == self.length:
                moved = torch.gather(v, 1, order)
                pad = self.fill_id if k == self.ids_key else 0
                data[k] = torch.where(torch.gather(pos_present, 1, order), moved, pad)
        return data


class ImageMasker(_Masker):
    """Masked versions of one image (players: regions of patches).

    Args:
        tower: An image tower with ``prepare``, ``reference_input`` and ``encode``.
        image: The image.
        grid: ``(g_rows, g_cols)`` regions of patches (``None``: every patch a player when the
            grid has at most :data:`MAX_REGIONS` patches, else at most 8 × 8 regions).
        reference: The image reference (``None``: the tower's default; any spec
            ``tower.reference_input`` takes, e.g. ``"zeros"``, ``"blur"``).
        normalize: Return unit-length embeddings (cosine models).
        batch_size: Masked inputs per forward pass.
        device: Where the tower's weights are (:func:`model_device`); ``None``: the CPU.

    Attributes:
        positions: The image's positions (columns of an explanation's matrix, CLS included).
        groups: Patch indices (0-based over the patch grid, row-major) of each region.
        regions: ``(g_rows, g_cols)`` of the region grid.
        n: Number of players.
        evaluations: Forward passes (inputs) run so far.
    """

    def __init__(
        self,
        tower: Any,
        image: Any,
        *,
        grid: tuple[int, int] | None = None,
        reference: Any = None,
        normalize: bool = True,
        batch_size: int = 32,
        device: Any = None,
    ) -> None:
        super().__init__(tower, normalize, batch_size, device)
        inp = tower.prepare(image)
        ipos = inp.positions
        if not isinstance(ipos, ImagePositions):
            raise UnsupportedMethodError(
                f"the {tower.name} tower's positions are not image patches"
            )
        self.positions: ImagePositions = ipos
        self.px_key = _pixels_key(inp.data)
        self.data = {k: v.detach() for k, v in inp.data.items()}
        px = self.data[self.px_key]
        self.ref_px = tower.reference_input(inp, reference).data[self.px_key].to(px)
        rows, cols = (int(v) for v in ipos.grid)
        if grid is None:
            grid = (rows, cols) if rows * cols <= MAX_REGIONS else REGION_GRID
        if not (isinstance(grid, tuple | list) and len(grid) == 2):
            raise SettingError(f"grid={grid!r}; give (g_rows, g_cols)")
        self.groups: list[list[int]] = region_groups((rows, cols), tuple(grid))
        self.n = len(self.groups)
        self.regions = (min(int(grid[0]), rows), min(int(grid[1]), cols))
        self.region_masks = self._pixel_masks(px, (rows, cols))  # [n, *pixel grid]
        self.uncovered = ~self.region_masks.any(0).flatten()  # padding rows: always kept

    def _pixel_masks(self, px: Tensor, grid: tuple[int, int]) -> Tensor:
        """Bool ``[n, *px.shape[2:]]``: the input elements each region covers."""
        rows, cols = grid
        if px.dim() == 3:  # NaFlex: [1, N, patch pixels], patch rows row-major, then padding
            masks = torch.zeros(self.n, px.shape[1], dtype=torch.bool)
            for r, group in enumerate(self.groups):
                masks[r, group] = True
            return masks
        H, W = int(px.shape[-2]), int(px.shape[-1])
        patch = getattr(self.tower, "patch", None)
        if patch is not None and getattr(self.tower, "kind", "vit") == "vit":
            ph, pw = (patch, patch) if isinstance(patch, int) else (int(patch[0]), int(patch[1]))
            ys = [r * ph for r in range(rows)] + [H]
            xs = [c * pw for c in range(cols)] + [W]
        else:  # feature-map cells: proportional shares of the input
            ys = [round(r * H / rows) for r in range(rows + 1)]
            xs = [round(c * W / cols) for c in range(cols + 1)]
        masks = torch.zeros(self.n, H, W, dtype=torch.bool)
        for r, group in enumerate(self.groups):
            for k in group:
                i, j = divmod(k, cols)
                masks[r, ys[i] : ys[i + 1], xs[j] : xs[j + 1]] = True
        return masks

    def batch(self, present: Tensor) -> dict[str, Tensor]:
        """Model tensors of ``B`` masked images; ``present``: bool ``[B, n]``."""
        B = present.shape[0]
        data = {k: v.expand(B, *v.shape[1:]) for k, v in self.data.items()}
        flat = self.region_masks.flatten(1).to(torch.float32)
        keep = ((present.to(torch.float32) @ flat) > 0) | self.uncovered  # [B, mask numel]
        px = self.data[self.px_key]
        shape = (B, px.shape[1], 1) if px.dim() == 3 else (B, 1, *px.shape[-2:])
        data[self.px_key] = torch.where(keep.view(shape), px, self.ref_px)
        return data


def require_text_image(model: Any, what: str, fix: str = "") -> None:
    """Refuse a model whose towers are not text (a) and image (b): ``what`` masks a text
    against an image.

    Args:
        model: A :class:`dualex.DualEncoder`.
        what: Who asks, as the message's subject (``"PairGame"``, ``"method='banzhaf'"``).
        fix: Appended to the message (e.g. ``"; use method='dualex'"``).

    Raises:
        UnsupportedMethodError: naming the model's modalities and the image–text families.
    """
    ta, tb = model.tower_a, model.tower_b
    if ta.modality != "text" or tb.modality != "image":
        raise UnsupportedMethodError(
            f"{what} masks a text against an image; {model.name!r} is a "
            f"{ta.modality}–{tb.modality} model (image–text families: "
            f"{image_families_text()}){fix}"
        )
