"""The Explanation object: one pair's interaction matrix, its positions, and its completeness."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from dualex.data.types import Box
from dualex.engine.interactions import Completeness
from dualex.errors import FileFormatError, InvalidInputError
from dualex.towers.positions import ImagePositions, Positions, TextPositions, positions_from_json

FORMAT = "dualex.explanation/1"


@dataclass
class Explanation:
    """Second-order interactions of one pair of inputs.

    Attributes:
        matrix: ``[S_a, S_b]`` interactions over every position (special tokens, CLS included).
        a: Positions of side a (rows).
        b: Positions of side b (columns).
        completeness: Score, reference terms, attribution sum and errors.
        layers: Split layer per tower.
        model: Name of the model.
        raw_a: Original input of side a (text or PIL image), if kept.
        raw_b: Original input of side b, if kept.
        weights: Where the model's weights come from: ``"random"`` (not a trained model),
            ``"builtin"``, ``"pretrained"`` or ``"unknown"``; reports and figures flag random.
        projections: ``(P_a [E, S_a], P_b [E, S_b])``, the two sides' projections, when known
            (kept by :func:`dualex.explain`; needed by :meth:`concept_split`).
        factor: ``f`` with ``matrix = f · P_aᵀ P_b`` (``1/‖e_a‖‖e_b‖`` for the cosine, times the
            logit scale if any), when known.
    """

    matrix: Tensor
    a: Positions
    b: Positions
    completeness: Completeness
    layers: tuple[int, int] = (0, 0)
    model: str = ""
    raw_a: Any = field(default=None, repr=False)
    raw_b: Any = field(default=None, repr=False)
    weights: str = "unknown"
    projections: tuple[Tensor, Tensor] | None = field(default=None, repr=False)
    factor: float | None = None

    # -- convenient views ----------------------------------------------------------------------
    @property
    def score(self) -> float:
        """The model's similarity of the pair."""
        return self.completeness.score

    @property
    def tokens(self) -> list[str]:
        """Tokens of the (first) text side."""
        return self._text_side()[0].tokens

    @property
    def grid(self) -> tuple[int, int]:
        """``(rows, cols)`` of the image side's patch grid."""
        return self._image_side()[0].grid

    @property
    def image(self) -> Image.Image | None:
        """The original image, if kept."""
        _, side = self._image_side()
        return self.raw_b if side == "b" else self.raw_a

    def _text_side(self) -> tuple[TextPositions, str]:
        if isinstance(self.a, TextPositions):
            return self.a, "a"
        if isinstance(self.b, TextPositions):
            return self.b, "b"
        raise InvalidInputError("this explanation has no text side")

    def _image_side(self) -> tuple[ImagePositions, str]:
        if isinstance(self.b, ImagePositions):
            return self.b, "b"
        if isinstance(self.a, ImagePositions):
            return self.a, "a"
        raise InvalidInputError(
            "this explanation has no image side; for two texts use span_scores()"
        )

    @property
    def text_positions(self) -> TextPositions:
        """Positions of the (first) text side."""
        return self._text_side()[0]

    @property
    def image_positions(self) -> ImagePositions:
        """Positions of the image side."""
        return self._image_side()[0]

    def text_image(self) -> tuple[Tensor, TextPositions, ImagePositions]:
        """The matrix oriented as ``[S_text, S_image]``, with the text and image positions."""
        text, ts = self._text_side()
        image, _ = self._image_side()
        m = self.matrix if ts == "a" else self.matrix.T
        return m, text, image

    # -- slicing -------------------------------------------------------------------------------
    def image_map(self, span: Any = None) -> Tensor:
        """Heatmap of a caption span over the image patches.

        Args:
            span: A substring (first occurrence) or ``(substring, k)``, a ``(start, end)``
                character range, a slice or list of token indices; ``None``: every token.

        Returns:
            ``[rows, cols]``: the span's rows of the matrix summed, at each patch (CLS dropped).
        """
        m, text, image = self.text_image()
        rows = list(range(len(text))) if span is None else text.span_indices(span)
        values = m[rows].sum(0)[image.patch_slice]
        return values.reshape(image.grid)

    def text_scores(self, box: Box | None = None) -> Tensor:
        """Per-token interaction with the patches under a box.

        Args:
            box: ``(x0, y0, x1, y1)`` in ORIGINAL image pixels; ``None``: the whole image.

        Returns:
            ``[S_text]``: the columns of the covered patches summed, for every token.
        """
        m, _text, image = self.text_image()
        cols = (
            list(range(image.patch_slice.start, image.patch_slice.stop))
            if box is None
            else image.box_patches(box)
        )
        return m[:, cols].sum(1)

    def span_scores(self, span: Any, side: str = "a") -> Tensor:
        """For two texts (or any pair): the other side's scores for a span of ``side``.

        Returns:
            ``[S_other]``: the span's rows (side ``"a"``) or columns (side ``"b"``) summed.
        """
        pos = self.a if side == "a" else self.b
        if not isinstance(pos, TextPositions):
            raise InvalidInputError(f"side {side!r} is not text; use text_scores(box) for images")
        idx = pos.span_indices(span)
        return self.matrix[idx].sum(0) if side == "a" else self.matrix[:, idx].sum(1)

    def top_interactions(
        self, k: int = 10, include_special: bool = False
    ) -> list[tuple[str, str, float]]:
        """The ``k`` largest interactions as ``(label_a, label_b, value)``."""
        la, lb = _labels(self.a), _labels(self.b)
        m = self.matrix.double().clone()
        if not include_special:
            for side, pos in ((0, self.a), (1, self.b)):
                if isinstance(pos, TextPositions):
                    idx = [i for i, s in enumerate(pos.special) if s]
                else:
                    idx = list(range(pos.prefix))
                if idx:
                    if side == 0:
                        m[idx] = float("-inf")
                    else:
                        m[:, idx] = float("-inf")
        flat = m.flatten()
        k = min(k, int(torch.isfinite(flat).sum()))
        vals, ids = flat.topk(k)
        nb = m.shape[1]
        return [
            (la[i // nb], lb[i % nb], float(v)) for v, i in zip(vals, ids.tolist(), strict=True)
        ]

    def concept_split(self, concepts: Any) -> Any:
        """Split the matrix into per-concept matrices of a concept dictionary.

        Args:
            concepts: A :class:`dualex.Concepts` dictionary trained on this explanation's model.

        Returns:
            A :class:`dualex.concepts.ConceptSplit`: ``.matrices [K', S_a, S_b]``,
            ``.concepts``, ``.names``, ``.residual [S_a, S_b]``; matrices and residual sum to
            :attr:`matrix` (float64). See :mod:`dualex.engine.concepts` for the derivation.
        """
        return concepts.split(self)

    # -- IO ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, projections: bool = False) -> Path:
        """Write the explanation to a ``.safetensors`` file (atomically; no pickle).

        The matrix (and the original image(s), as uint8 arrays) are tensors; positions,
        completeness, layers and the model name are JSON in the file's metadata.

        Args:
            path: The file to write.
            projections: Also keep ``P_a`` and ``P_b`` (``E/S_b + E/S_a`` times the matrix's
                size), so that the loaded explanation can be split into concepts.
        """
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {"matrix": self.matrix.detach().cpu().contiguous()}
        if projections and self.projections is not None:
            for key, P in zip(("P_a", "P_b"), self.projections, strict=True):
                tensors[key] = P.detach().cpu().contiguous()
        for key, raw in (("image_a", self.raw_a), ("image_b", self.raw_b)):
            if isinstance(raw, Image.Image):
                tensors[key] = torch.from_numpy(np.asarray(raw.convert("RGB")).copy())
        meta = {
            "format": FORMAT,
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "completeness": self.completeness.to_json(),
            "layers": list(self.layers),
            "model": self.model,
            "weights": self.weights,
            "factor": self.factor,
        }
        from dualex.io import atomic_write

        atomic_write(
            path, lambda tmp: save_file(tensors, tmp, metadata={"dualex": json.dumps(meta)})
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Explanation:
        """Read an explanation written by :meth:`save`.

        Raises:
            FileFormatError: if the file is not a dualex explanation.
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileFormatError(
                f"{str(path)!r} does not exist; pass a file written by Explanation.save"
            )
        try:
            with safe_open(str(path), framework="pt") as f:
                meta_raw = (f.metadata() or {}).get("dualex")
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except Exception as err:  # safetensors raises its own error types
            raise FileFormatError(
                f"{str(path)!r} is not a safetensors file ({err}); pass a file written by "
                "Explanation.save"
            ) from err
        if not meta_raw:
            raise FileFormatError(f"{str(path)!r} has no dualex metadata; it is not an explanation")
        meta = json.loads(meta_raw)
        if meta.get("format") != FORMAT:
            raise FileFormatError(
                f"{str(path)!r} has format {meta.get('format')!r}, expected {FORMAT}"
            )
        raws = [
            Image.fromarray(tensors[k].numpy()) if k in tensors else None
            for k in ("image_a", "image_b")
        ]
        a, b = positions_from_json(meta["a"]), positions_from_json(meta["b"])
        return cls(
            matrix=tensors["matrix"],
            a=a,
            b=b,
            completeness=Completeness.from_json(meta["completeness"]),
            layers=tuple(meta["layers"]),
            model=meta["model"],
            raw_a=raws[0]
            if raws[0] is not None
            else (a.text if isinstance(a, TextPositions) else None),
            raw_b=raws[1]
            if raws[1] is not None
            else (b.text if isinstance(b, TextPositions) else None),
            weights=str(meta.get("weights", "unknown")),
            projections=(tensors["P_a"], tensors["P_b"]) if "P_a" in tensors else None,
            factor=None if meta.get("factor") is None else float(meta["factor"]),
        )

    def __repr__(self) -> str:
        c = self.completeness
        return (
            f"Explanation(model={self.model!r}, matrix={tuple(self.matrix.shape)}, "
            f"score={c.score:.6g}, relative_error={c.relative_error:.2e}, steps={c.steps}, "
            f"layers={self.layers})"
        )


def _labels(pos: Positions) -> list[str]:
    return pos.tokens if isinstance(pos, TextPositions) else pos.labels
