"""The Explanation object: one pair's interaction matrix, its positions, and its completeness."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
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
"""Format of a file of one explanation (:meth:`Explanation.save`)."""

MANY_FORMAT = "dualex.explanations/1"
"""Format of a file of many explanations (:meth:`Explanation.save_many`; dataset shards)."""


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
        method: ``"dualex"`` (the paper's integrated-Jacobian interactions, which add up to the
            score with the three reference terms) or ``"banzhaf"`` (sampled weighted Banzhaf
            interactions of the masking game, :mod:`dualex.faithful`). For ``"banzhaf"`` the
            completeness describes the coalition prediction at the full pair:
            ``reference_terms`` = (order-0 constant, Σ first-order terms of side a, of side b),
            ``absolute_error`` = |score − that prediction| (``relative_error`` divides by
            |score|), ``tower_errors`` = each side's relative sampling error, ``steps`` = the
            coalitions of each side and ``rule`` = ``"banzhaf"``.
        settings: The method's settings and figures (JSON values); for ``"banzhaf"``:
            ``budget``, ``p``, ``masking``, ``estimator``, ``seed``, ``grid``,
            ``sampling_error`` (relative standard error of the matrix, from split halves),
            ``empty_value`` (``v(∅)``), ``predicted_value``, ``coalitions``, ``exact``.
        first_order_a: ``[S_a]`` first-order terms kept by a ``"banzhaf"`` explanation (a
            position's share of its player's term), or ``None``.
        first_order_b: ``[S_b]`` likewise for side b.
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
    method: str = "dualex"
    settings: dict[str, Any] = field(default_factory=dict)
    first_order_a: Tensor | None = field(default=None, repr=False)
    first_order_b: Tensor | None = field(default=None, repr=False)

    @property
    def sampling_error(self) -> float | None:
        """Relative sampling error of a ``"banzhaf"`` matrix (split halves); ``None`` for
        ``"dualex"``, whose matrix is not sampled."""
        v = self.settings.get("sampling_error")
        return None if v is None else float(v)

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
        """The ``k`` largest interactions as ``(label_a, label_b, value)``.

        Unknown tokens (:attr:`TextPositions.unknown`) are never ranked: the model read each as
        the same generic token, whatever the word shown.
        """
        la, lb = _labels(self.a), _labels(self.b)
        m = self.matrix.double().clone()
        for side, pos in ((0, self.a), (1, self.b)):
            idx = list(getattr(pos, "unknown", ()))
            if not include_special:
                if isinstance(pos, TextPositions):
                    idx += [i for i, s in enumerate(pos.special) if s]
                else:
                    idx += list(range(pos.prefix))
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

    @property
    def unknown_tokens(self) -> tuple[int, ...]:
        """Positions of the (first) text side whose token is the vocabulary's unknown token
        (see :attr:`TextPositions.unknown`); ``()`` when every word is known."""
        return self._text_side()[0].unknown

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
    def _metadata(self) -> dict[str, Any]:
        """Everything but the tensors, as JSON values (one pair's entry in a file)."""
        return {
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "completeness": self.completeness.to_json(),
            "layers": list(self.layers),
            "model": self.model,
            "weights": self.weights,
            "method": self.method,
            "settings": self.settings,
            "factor": self.factor,
        }

    def _extra_tensors(self, prefix: str = "", projections: bool = False) -> dict[str, Tensor]:
        """The tensors kept beside the matrix, by name: the first-order terms a method keeps
        (banzhaf) and, with ``projections``, ``P_a`` / ``P_b``."""
        named = [("first_order_a", self.first_order_a), ("first_order_b", self.first_order_b)]
        if projections and self.projections is not None:
            named += list(zip(("P_a", "P_b"), self.projections, strict=True))
        return {f"{prefix}{n}": t.detach().cpu().contiguous() for n, t in named if t is not None}

    @classmethod
    def _from_metadata(
        cls,
        meta: dict[str, Any],
        matrix: Tensor,
        raw_a: Any = None,
        raw_b: Any = None,
        extra: dict[str, Tensor] | None = None,
    ) -> Explanation:
        a, b = positions_from_json(meta["a"]), positions_from_json(meta["b"])
        extra = extra or {}
        return cls(
            matrix=matrix,
            a=a,
            b=b,
            completeness=Completeness.from_json(meta["completeness"]),
            layers=tuple(meta["layers"]),
            model=meta["model"],
            raw_a=raw_a
            if raw_a is not None
            else (a.text if isinstance(a, TextPositions) else None),
            raw_b=raw_b
            if raw_b is not None
            else (b.text if isinstance(b, TextPositions) else None),
            weights=str(meta.get("weights", "unknown")),  # absent in files before it
            method=str(meta.get("method", "dualex")),  # files written before methods: dualex
            settings=dict(meta.get("settings") or {}),
            first_order_a=extra.get("first_order_a"),
            first_order_b=extra.get("first_order_b"),
            projections=(extra["P_a"], extra["P_b"]) if "P_a" in extra else None,
            factor=None if meta.get("factor") is None else float(meta["factor"]),
        )

    def save(self, path: str | os.PathLike, *, projections: bool = False) -> Path:
        """Write the explanation to a ``.safetensors`` file (atomically; no pickle).

        The matrix, the first-order terms a method keeps (and the original image(s), as uint8
        arrays) are tensors; positions, completeness, layers, the model name, the weights'
        origin, the method and its settings are JSON in the file's metadata.

        Args:
            path: The file to write.
            projections: Also keep ``P_a`` and ``P_b`` (``E/S_b + E/S_a`` times the matrix's
                size), so that the loaded explanation can be split into concepts.
        """
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {
            "matrix": self.matrix.detach().cpu().contiguous(),
            **self._extra_tensors(projections=projections),
        }
        for key, raw in (("image_a", self.raw_a), ("image_b", self.raw_b)):
            if isinstance(raw, Image.Image):
                tensors[key] = torch.from_numpy(np.asarray(raw.convert("RGB")).copy())
        meta = {"format": FORMAT, **self._metadata()}
        from dualex.io import atomic_write

        atomic_write(
            path, lambda tmp: save_file(tensors, tmp, metadata={"dualex": json.dumps(meta)})
        )
        return path

    @staticmethod
    def save_many(explanations: Mapping[str, Explanation], path: str | os.PathLike) -> Path:
        """Write many explanations to one ``.safetensors`` file (atomically), keyed by name.

        Each explanation is stored as :meth:`save` stores one (its matrix, and the same JSON
        metadata: positions with their unknown tokens, completeness, layers, model, weights),
        without the original images; read them back with :meth:`load` (``key=``) or
        :meth:`load_many`. Dataset runs (``dualex explain --data``) write their shards this way.

        Args:
            explanations: Name → explanation (names are any strings, e.g. pair ids).
            path: The file to write.

        Raises:
            InvalidInputError: if there is no explanation to write.
        """
        from safetensors.torch import save_file

        from dualex.io import atomic_write

        if not explanations:
            raise InvalidInputError("save_many needs at least one explanation")
        tensors = {}
        for k, ex in explanations.items():
            tensors[k] = ex.matrix.detach().cpu().contiguous()
            tensors.update(ex._extra_tensors(f"{k}/"))
        pairs = {k: ex._metadata() for k, ex in explanations.items()}
        # one metadata entry: safetensors keeps metadata in a hash map, whose order (and so the
        # file's bytes) would otherwise change from process to process
        meta = {"dualex": json.dumps({"format": MANY_FORMAT, "pairs": pairs})}
        return atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))

    @classmethod
    def load(cls, path: str | os.PathLike, key: str | None = None) -> Explanation:
        """Read an explanation written by :meth:`save`, or the one named ``key`` in a file
        written by :meth:`save_many` (only its matrix is read).

        Raises:
            FileFormatError: if the file is not a dualex explanation, or holds many and ``key``
                is missing or not among them.
        """
        meta, read = _open(path)
        if meta.get("format") == MANY_FORMAT:
            pairs = meta.get("pairs") or {}
            if key is None or key not in pairs:
                some = ", ".join(repr(k) for k in list(pairs)[:3])
                what = "pass key=NAME" if key is None else f"it has no {key!r}"
                raise FileFormatError(
                    f"{str(path)!r} holds {len(pairs)} explanations ({some}, ...); {what}, or "
                    "read them all with Explanation.load_many"
                )
            fo = [n for n in _tensor_names(path) if n.startswith(f"{key}/")]
            tensors = read([key, *fo])
            return cls._from_metadata(pairs[key], tensors[key], extra=_extra(tensors, key))
        if key is not None:
            raise FileFormatError(f"{str(path)!r} holds one explanation; call load without key")
        tensors = read(None)
        raws = [
            Image.fromarray(tensors[k].numpy()) if k in tensors else None
            for k in ("image_a", "image_b")
        ]
        return cls._from_metadata(meta, tensors["matrix"], raws[0], raws[1], _extra(tensors))

    @classmethod
    def load_many(cls, path: str | os.PathLike) -> dict[str, Explanation]:
        """Every explanation of a file written by :meth:`save_many` (or :meth:`save`: one,
        named ``""``), by name, in the order they were written.

        Raises:
            FileFormatError: if the file is not a dualex explanation.
        """
        meta, read = _open(path)
        if meta.get("format") != MANY_FORMAT:
            return {"": cls.load(path)}
        pairs = meta.get("pairs") or {}
        tensors = read(None)
        return {
            k: cls._from_metadata(m, tensors[k], extra=_extra(tensors, k)) for k, m in pairs.items()
        }

    def __repr__(self) -> str:
        c = self.completeness
        if self.method != "dualex":
            st = self.settings
            return (
                f"Explanation(method={self.method!r}, model={self.model!r}, "
                f"matrix={tuple(self.matrix.shape)}, score={c.score:.6g}, "
                f"sampling_error={st.get('sampling_error', float('nan')):.2e}, "
                f"budget={st.get('budget')}, p={st.get('p')}, estimator={st.get('estimator')!r})"
            )
        return (
            f"Explanation(model={self.model!r}, matrix={tuple(self.matrix.shape)}, "
            f"score={c.score:.6g}, relative_error={c.relative_error:.2e}, steps={c.steps}, "
            f"layers={self.layers})"
        )


def _labels(pos: Positions) -> list[str]:
    return pos.tokens if isinstance(pos, TextPositions) else pos.labels


def _extra(tensors: Mapping[str, Tensor], key: str | None = None) -> dict[str, Tensor]:
    """The tensors kept beside one explanation's matrix (first-order terms, projections) among a
    file's tensors (``key``: its name in a file of many)."""
    prefix = "" if key is None else f"{key}/"
    names = ("first_order_a", "first_order_b", "P_a", "P_b")
    return {n: tensors[prefix + n] for n in names if prefix + n in tensors}


def _tensor_names(path: str | os.PathLike) -> set[str]:
    """The names of the tensors in a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


def _open(path: str | os.PathLike) -> tuple[dict[str, Any], Any]:
    """The ``dualex`` metadata of an explanation file and ``read(keys)`` → its tensors (all of
    them when ``keys`` is None).

    Raises:
        FileFormatError: if the file is missing, not safetensors, or not an explanation.
    """
    from safetensors import safe_open

    shown = str(path)
    if not Path(path).is_file():
        raise FileFormatError(f"{shown!r} does not exist; pass a file written by Explanation.save")

    def read(keys: list[str] | None) -> dict[str, Tensor]:
        try:
            with safe_open(shown, framework="pt") as f:
                return {k: f.get_tensor(k) for k in (f.keys() if keys is None else keys)}
        except Exception as err:  # safetensors raises its own error types
            raise FileFormatError(f"cannot read the tensors of {shown!r} ({err})") from err

    try:
        with safe_open(shown, framework="pt") as f:
            meta_raw = (f.metadata() or {}).get("dualex")
    except Exception as err:  # safetensors raises its own error types
        raise FileFormatError(
            f"{shown!r} is not a safetensors file ({err}); pass a file written by Explanation.save"
        ) from err
    if not meta_raw:
        raise FileFormatError(f"{shown!r} has no dualex metadata; it is not an explanation")
    meta = json.loads(meta_raw)
    if meta.get("format") not in (FORMAT, MANY_FORMAT):
        raise FileFormatError(
            f"{shown!r} has format {meta.get('format')!r}, expected {FORMAT} or {MANY_FORMAT}"
        )
    return meta, read
