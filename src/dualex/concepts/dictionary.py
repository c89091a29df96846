"""A concept dictionary shared by a dual encoder's two sides (VL-SAE style), trained on its
projections, and the exact split of an explanation into concepts.

Training data are the columns of the per-item projections ``P[:, s]`` (every token and patch,
in the embedding space), divided by the item's embedding norm as the cosine score divides them
("cosine-aligned": both modalities on the scale at which they meet in the score), plus each
item's total ``(e − ē)/‖e‖``. The dictionary (see :mod:`dualex.engine.concepts`) has one
distance-based encoder shared by both modalities, a signed top-k code, and one decoder per
modality. The loss is each modality's reconstruction error (relative to its mean square), plus an
alignment term ``1 − cos(c(total_a), c(total_b))`` on matching pairs, so a concept that a caption
carries is carried by its image too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualex.concepts.split import ConceptSplit
from dualex.engine.concepts import encode_topk, split_pair
from dualex.errors import (
    FileFormatError,
    InvalidInputError,
    ModelMismatchError,
    SettingError,
)

__all__ = ["ConceptExamples", "Concepts", "weights_fingerprint"]

FORMAT = "dualex.concepts/1"
TENSORS = "concepts.safetensors"
META = "concepts.json"
CHECKPOINTS = "checkpoints"
COLUMNS = "columns"

DEFAULT_CONCEPTS = 64
DEFAULT_TOPK = 8
DEFAULT_STEPS = 3000
PROJECTION_STEPS = 16
"""Gauss–Legendre nodes of the training projections (≈1 % tower error on the built-in model; the
dictionary needs the columns' directions, not exact completeness)."""

ALIGN_WEIGHT = 0.1
LEARNING_RATE = 2e-3
WARMUP = 100
BATCH = 2048
PAIR_BATCH = 256
CHUNK = 256
CROP = 32
PHRASE = 3
"""Tokens of the phrase a token's activation is credited to, for the labels (itself and the
ones before it)."""


# -- the model it belongs to --------------------------------------------------------------------
def weights_fingerprint(model: Any) -> str:
    """A short SHA-256 of a dual encoder's weights (names, shapes, dtypes and bytes).

    Models without a torch module (function towers) fingerprint their name.
    """
    module = getattr(model, "module", None)
    h = hashlib.sha256()
    if module is None:
        h.update(f"no-module:{getattr(model, 'name', '')}".encode())
        return h.hexdigest()[:16]
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


# -- data -----------------------------------------------------------------------------------------
@dataclass
class _Pair:
    a: Any
    b: Any


def _pairs(data: Any, model: Any, limit: int | None) -> tuple[list[_Pair], str]:
    """The training pairs and a description of where they come from."""
    from dualex.data.types import Sample

    text_first = model.tower_a.modality == "text"
    if isinstance(data, str):
        spec = data
        if spec.startswith("text:"):
            path = Path(spec[5:])
            if not path.is_file():
                raise FileFormatError(
                    f"{str(path)!r} does not exist; pass text:FILE with one sentence (or "
                    "'sentence<TAB>sentence' pair) per line"
                )
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
            items: list[Any] = [ln.split("\t", 1) if "\t" in ln else ln for ln in lines if ln]
        else:
            from dualex.data.sources import parse_data_spec

            items = parse_data_spec(spec).check().samples()
    else:
        spec = ""
        items = data
    out: list[_Pair] = []
    for x in items:
        if limit is not None and len(out) >= limit:
            break
        if isinstance(x, Sample):
            caption, image = x.caption, x.image
            out.append(_Pair(caption, image) if text_first else _Pair(image, caption))
        elif isinstance(x, str):
            out.append(_Pair(x, x))
        elif isinstance(x, list | tuple) and len(x) == 2:
            out.append(_Pair(x[0], x[1]))
        else:
            raise InvalidInputError(
                f"cannot train concepts on {type(x).__name__} items; pass a --data spec, "
                "Samples, (a, b) pairs or sentences"
            )
    if len(out) < 2:
        raise InvalidInputError(
            f"a concept dictionary needs at least 2 pairs, got {len(out)}; pass more data"
        )
    if not spec:
        h = hashlib.sha256()
        for p in out:
            for x in (p.a, p.b):
                h.update(x.encode() if isinstance(x, str) else repr(getattr(x, "size", x)).encode())
        spec = f"in-memory:{len(out)}:{h.hexdigest()[:12]}"
    return out, spec


def _side_columns(projs: list[Any], first: int) -> dict[str, Any]:
    from dualex.towers.positions import TextPositions

    X, item, pos, content, T, positions = [], [], [], [], [], []
    for i, p in enumerate(projs):
        norm = p.embedding.double().norm().clamp_min(1e-30)
        X.append((p.P.double() / norm).T.float())
        S = p.P.shape[1]
        item.append(torch.full((S,), first + i, dtype=torch.int64))
        pos.append(torch.arange(S))
        pp = p.positions
        if isinstance(pp, TextPositions):
            mask = torch.tensor([not s for s in pp.special])
        else:
            mask = torch.zeros(S, dtype=torch.bool)
            mask[pp.patch_slice] = True
        content.append(mask)
        T.append(((p.embedding.double() - p.reference_embedding.double()) / norm).float())
        positions.append(pp.to_json())
    return {
        "X": torch.cat(X),
        "item": torch.cat(item),
        "pos": torch.cat(pos),
        "content": torch.cat(content),
        "T": torch.stack(T),
        "positions": positions,
    }


def _collect(
    model: Any, pairs: list[_Pair], folder: Path, progress: Callable[[str, int, int], None]
) -> dict[str, dict[str, Any]]:
    """Project every pair (``PROJECTION_STEPS`` nodes) into cached parts; resumable by part."""
    from safetensors.torch import load_file, save_file

    from dualex.explainer import project
    from dualex.io import atomic_write

    n_parts = (len(pairs) + CHUNK - 1) // CHUNK
    for k in range(n_parts):
        path = folder / f"part-{k:05d}.safetensors"
        progress("projecting", k, n_parts)
        if path.is_file():
            continue
        chunk = pairs[k * CHUNK : (k + 1) * CHUNK]
        proj = project(
            model,
            a=[p.a for p in chunk],
            b=[p.b for p in chunk],
            steps=PROJECTION_STEPS,
            batch_size=64,
            progress=False,
        )
        tensors: dict[str, Tensor] = {}
        meta: dict[str, Any] = {}
        for side, projs in (("a", proj.a), ("b", proj.b)):
            cols = _side_columns(projs, k * CHUNK)
            meta[side] = cols.pop("positions")
            tensors.update({f"{side}_{key}": v.contiguous() for key, v in cols.items()})
        atomic_write(
            path, lambda tmp, t=tensors, m=meta: save_file(t, tmp, metadata={"m": json.dumps(m)})
        )
    progress("projecting", n_parts, n_parts)
    from safetensors import safe_open

    sides: dict[str, dict[str, Any]] = {"a": {}, "b": {}}
    for k in range(n_parts):
        path = folder / f"part-{k:05d}.safetensors"
        t = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["m"])
        for side in ("a", "b"):
            d = sides[side]
            for key in ("X", "item", "pos", "content", "T"):
                d.setdefault(key, []).append(t[f"{side}_{key}"])
            d.setdefault("positions", []).extend(meta[side])
    for d in sides.values():
        for key in ("X", "item", "pos", "content", "T"):
            d[key] = torch.cat(d[key])
    return sides


# -- the dictionary ---------------------------------------------------------------------------
@dataclass
class ConceptExamples:
    """What activates one concept most.

    Attributes:
        concept: Its index.
        name: Its label.
        texts: ``(text, activation)`` of the top captions (or sentences), best first.
        crops: Image crops around its top patches (PIL images; empty for text–text models).
        crop_activations: Activation of each crop's centre patch.
    """

    concept: int
    name: str
    texts: list[tuple[str, float]]
    crops: list[Any]
    crop_activations: list[float]


class Concepts:
    """A concept dictionary of one dual encoder: a shared sparse code, one decoder per modality.

    Build one with :meth:`train`, read one with :meth:`load`; split an explanation with
    ``ex.concept_split(concepts)``.

    Attributes:
        encoder: ``[K, E]`` unit encoder directions (shared by both modalities).
        decoders: ``{"a": [E, K], "b": [E, K]}`` decoders of the two sides (the same tensor
            when both sides have one modality, e.g. a sentence transformer).
        topk: Active concepts per vector.
        meta: JSON metadata: the model (name, weights fingerprint, embedding size, modalities),
            the training settings, the labels and the top captions.
    """

    def __init__(
        self,
        encoder: Tensor,
        decoders: dict[str, Tensor],
        topk: int,
        meta: dict[str, Any],
        crops: Tensor | None = None,
    ) -> None:
        self.encoder = encoder
        self.decoders = decoders
        self.topk = int(topk)
        self.meta = meta
        self._crops = crops

    @classmethod
    def from_directions(
        cls,
        model: Any,
        encoder: Tensor,
        decoder_a: Tensor,
        decoder_b: Tensor | None = None,
        topk: int = DEFAULT_TOPK,
        names: list[str] | None = None,
    ) -> Concepts:
        """A dictionary from given directions (e.g. known concepts of a planted model).

        Args:
            model: The dual encoder it belongs to.
            encoder: ``[K, E]`` encoder directions (normalised to unit rows).
            decoder_a: ``[E, K]`` decoder of side a.
            decoder_b: ``[E, K]`` decoder of side b (default: ``decoder_a``).
            topk: Active concepts per vector.
            names: Labels (default ``"concept k"``).
        """
        K, E = encoder.shape
        if decoder_a.shape != (E, K) or (decoder_b is not None and decoder_b.shape != (E, K)):
            raise SettingError(f"decoders must be [E, K] = [{E}, {K}] for a [{K}, {E}] encoder")
        if not 1 <= topk <= K:
            raise SettingError(f"topk must be in 1..{K}, got {topk}")
        meta = {
            "format": FORMAT,
            "model": {
                "name": model.name,
                "fingerprint": weights_fingerprint(model),
                "modalities": [model.tower_a.modality, model.tower_b.modality],
                "embed_dim": int(E),
            },
            "topk": int(topk),
            "train": {"data": "given directions", "pairs": 0, "seed": 0, "steps": 0},
            "names": names or [f"concept {k}" for k in range(K)],
        }
        W = encoder / encoder.norm(dim=1, keepdim=True)
        dec_b = decoder_a if decoder_b is None else decoder_b
        return cls(W, {"a": decoder_a, "b": dec_b}, topk, meta)

    # -- views -------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """``K``: the number of concepts."""
        return int(self.encoder.shape[0])

    @property
    def names(self) -> list[str]:
        """Each concept's label: the caption word(s) that activate it most on the training data.

        A token's activation is credited to the words of its phrase (itself and the two content
        tokens before it: in context, "red circle" may fire at "circle"); a word's score is its
        mean credit over its occurrences (at least 3); the label is the best word, and the
        second joins (``"red / circle"``) when it reaches 60 % of the first. ``"(unused)"``:
        the concept never fired on a caption word."""
        return list(self.meta.get("names") or [f"concept {k}" for k in range(self.size)])

    @property
    def model(self) -> dict[str, Any]:
        """The model the dictionary belongs to: ``name``, ``fingerprint``, ``embed_dim``,
        ``modalities``."""
        return dict(self.meta["model"])

    def examples(self, k: int = 5) -> list[ConceptExamples]:
        """The top ``k`` captions and image crops of every concept (as many as were kept)."""
        from PIL import Image

        ex = self.meta.get("examples") or {}
        out = []
        for c in range(self.size):
            texts = [(t, float(v)) for t, v in (ex.get("texts") or [[]] * self.size)[c][:k]]
            acts = [float(v) for v in (ex.get("crop_activations") or [[]] * self.size)[c][:k]]
            crops = []
            if self._crops is not None:
                crops = [Image.fromarray(self._crops[c, i].numpy()) for i in range(len(acts))]
            out.append(ConceptExamples(c, self.names[c], texts, crops, acts))
        return out

    def encode(self, X: Tensor) -> Tensor:
        """Codes ``[N, K]`` of embedding-space vectors ``X: [N, E]`` (signed top-k)."""
        return encode_topk(X.double(), self.encoder.double(), self.topk)

    # -- checks --------------------------------------------------------------------------------
    def check(self, model: Any, weights: bool = True) -> None:
        """Refuse a model other than the one the dictionary was trained on.

        Args:
            model: The dual encoder.
            weights: Compare the weights' fingerprint. ``False`` checks only the embeddings'
                kinds and size (a model fine-tuned from the dictionary's model passes).

        Raises:
            ModelMismatchError: if the weights' fingerprint (or the embeddings) differ.
        """
        want = self.meta["model"]
        kinds = [model.tower_a.modality, model.tower_b.modality]
        if kinds != list(want["modalities"]):
            raise ModelMismatchError(
                f"this concept dictionary is for {want['modalities']} embeddings, the model "
                f"{getattr(model, 'name', '?')!r} has {kinds}; train one for this model with "
                "`dualex concepts train --model SPEC --data SPEC --out DIR`"
            )
        if not weights:
            return
        got = weights_fingerprint(model)
        if got != want["fingerprint"]:
            raise ModelMismatchError(
                f"this concept dictionary belongs to model {want['name']!r} (weights "
                f"{want['fingerprint']}), not to {getattr(model, 'name', '?')!r} (weights {got}); "
                "train one for this model with `dualex concepts train --model SPEC --data SPEC "
                "--out DIR`"
            )

    def _check_explanation(self, ex: Any) -> None:
        want = self.meta["model"]
        if ex.projections is None or ex.factor is None:
            raise InvalidInputError(
                "this explanation has no projections (it was loaded from a file saved without "
                "them); explain the pair again, or save it with projections=True"
            )
        E = ex.projections[0].shape[0]
        kinds = [getattr(ex.a, "kind", "?"), getattr(ex.b, "kind", "?")]
        if ex.model and want["name"] and ex.model != want["name"]:
            raise ModelMismatchError(
                f"this concept dictionary belongs to model {want['name']!r}, but the explanation "
                f"is of {ex.model!r}; use a dictionary trained on {ex.model!r}"
            )
        if want["embed_dim"] != E or kinds != list(want["modalities"]):
            raise ModelMismatchError(
                f"this concept dictionary is for {want['modalities']} embeddings of size "
                f"{want['embed_dim']}, the explanation has {kinds} of size {E}; use a "
                "dictionary trained on the explanation's model"
            )

    # -- the split -----------------------------------------------------------------------------
    def split(self, ex: Any) -> ConceptSplit:
        """Split an explanation's matrix into per-concept matrices (see
        :meth:`dualex.Explanation.concept_split` and :mod:`dualex.engine.concepts`).

        Raises:
            ModelMismatchError: if the explanation is of another model.
            InvalidInputError: if the explanation kept no projections.
        """
        self._check_explanation(ex)
        P_a, P_b = ex.projections
        f = float(ex.factor)
        mats, active, residual = split_pair(
            P_a, P_b, f, self.encoder, self.decoders["a"], self.decoders["b"], self.topk
        )
        # the stored matrix may be rounded (float32 models): that rounding joins the residual
        residual = residual + (ex.matrix.double() - f * (P_a.double().T @ P_b.double()))
        order = torch.argsort(mats.sum(dim=(1, 2)).abs(), descending=True)
        names = self.names
        active = active[order]
        return ConceptSplit(
            matrices=mats[order],
            concepts=active,
            names=[names[int(i)] for i in active],
            residual=residual,
        )

    # -- IO --------------------------------------------------------------------------------------
    def save(self, out: str | os.PathLike) -> Path:
        """Write ``concepts.safetensors`` + ``concepts.json`` into the folder ``out`` (atomically)."""
        from safetensors.torch import save_file

        from dualex.io import atomic_write

        folder = Path(out)
        tensors = {
            "encoder": self.encoder.contiguous(),
            "decoder_a": self.decoders["a"].contiguous(),
        }
        if self.decoders["b"] is not self.decoders["a"]:
            tensors["decoder_b"] = self.decoders["b"].contiguous()
        if self._crops is not None:
            tensors["crops"] = self._crops.contiguous()
        atomic_write(folder / TENSORS, lambda tmp: save_file(tensors, tmp))
        atomic_write(folder / META, json.dumps(self.meta, indent=1, ensure_ascii=False))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Concepts:
        """Read a dictionary written by :meth:`train` / :meth:`save`.

        Raises:
            FileFormatError: if the folder holds no (finished) dictionary.
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        meta_path, tensor_path = folder / META, folder / TENSORS
        if not meta_path.is_file() or not tensor_path.is_file():
            what = "is not a folder" if not folder.is_dir() else "holds no finished dictionary"
            raise FileFormatError(
                f"{str(folder)!r} {what}; pass the --out folder of `dualex concepts train` "
                "(rerun it to finish an interrupted training)"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            t = load_file(str(tensor_path))
        except Exception as err:  # json / safetensors raise their own types
            raise FileFormatError(
                f"{str(folder)!r} holds a damaged dictionary ({err}); train it again"
            ) from err
        if meta.get("format") != FORMAT:
            raise FileFormatError(
                f"{str(meta_path)!r} has format {meta.get('format')!r}, expected {FORMAT}"
            )
        dec_a = t["decoder_a"]
        dec_b = t.get("decoder_b", dec_a)
        return cls(t["encoder"], {"a": dec_a, "b": dec_b}, meta["topk"], meta, t.get("crops"))

    def __repr__(self) -> str:
        return (
            f"Concepts(K={self.size}, topk={self.topk}, model={self.meta['model']['name']!r}, "
            f"steps={self.meta['train']['steps']})"
        )

    # -- training ------------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        model: Any,
        data: Any,
        concepts: int = DEFAULT_CONCEPTS,
        steps: int = DEFAULT_STEPS,
        seed: int = 0,
        out: str | os.PathLike | None = None,
        *,
        topk: int = DEFAULT_TOPK,
        pairs: int | None = None,
        checkpoint_every: int = 250,
        progress: bool | None = None,
        keep_columns: bool = False,
    ) -> Concepts:
        """Train a concept dictionary on a model's projections of a dataset.

        Resumable: rerunning with the same arguments continues from the last checkpoint in
        ``out`` and ends bit-identical to an uninterrupted run; more ``steps`` continue a
        finished run (the learning rate is constant after warm-up).

        Args:
            model: A :class:`dualex.DualEncoder` or a spec string (``"builtin"``, ``"st:..."``).
            data: A ``--data`` spec (``"synthetic:seed=0,n=5000"``; ``"text:FILE"`` for
                sentences), or Samples, ``(a, b)`` pairs or sentences.
            concepts: ``K``, the number of concepts.
            steps: Optimiser steps.
            seed: Seed of the initialisation and of every batch (batch ``t`` depends only on
                ``(seed, t)``).
            out: Folder for the dictionary, its checkpoint and the cached projections; ``None``
                keeps everything in memory (no resume).
            topk: Active concepts per vector.
            pairs: Use at most this many pairs of ``data``.
            checkpoint_every: Steps between checkpoints.
            progress: Show progress on stderr (``None``: when it is a terminal).
            keep_columns: Keep the cached projection columns after training.

        Returns:
            The trained :class:`Concepts` (also written to ``out``).

        Raises:
            SettingError: on a bad K, topk or steps, or when ``out`` holds a run of other
                settings.
        """
        from dualex.model import load

        if isinstance(model, str):
            spec = model
            model = load(spec)
        if not 1 <= topk <= concepts:
            raise SettingError(f"topk must be in 1..concepts ({concepts}), got {topk}")
        if concepts < 2 or concepts > 65536:
            raise SettingError(f"concepts must be in 2..65536, got {concepts}")
        if steps < 1 or checkpoint_every < 1:
            raise SettingError(f"steps and checkpoint_every must be ≥ 1, got {steps}")
        items, source = _pairs(data, model, pairs)
        mods = [model.tower_a.modality, model.tower_b.modality]
        identity = {
            "model": {
                "name": model.name,
                "fingerprint": weights_fingerprint(model),
                "modalities": mods,
            },
            "data": source,
            "pairs": len(items),
            "concepts": concepts,
            "topk": topk,
            "seed": seed,
            "projection_steps": PROJECTION_STEPS,
        }
        folder = Path(out) if out is not None else None
        show = _progress_printer(progress)
        if folder is not None:
            _check_folder(folder, identity)
            if (folder / META).is_file() and (folder / TENSORS).is_file():
                done = cls.load(folder)
                if done.meta["train"]["steps"] == steps:
                    return done  # finished with these settings: nothing to redo
            from dualex.io import atomic_write

            atomic_write(folder / "run.json", json.dumps(identity, indent=1))
            cols_dir = folder / COLUMNS
        else:
            import tempfile

            cols_dir = Path(tempfile.mkdtemp(prefix="dualex-concepts-"))
        try:
            sides = _collect(model, items, cols_dir, show)
            tied = mods[0] == mods[1]
            state = _train_loop(sides, identity, steps, tied, folder, checkpoint_every, show)
            identity["model"]["embed_dim"] = int(state["W"].shape[1])
            result = _finish(state, sides, items, identity, steps, tied)
        finally:
            if folder is None:
                shutil.rmtree(cols_dir, ignore_errors=True)
        if folder is not None:
            result.save(folder)
            if not keep_columns:
                shutil.rmtree(cols_dir, ignore_errors=True)
        return result


def _progress_printer(progress: bool | None) -> Callable[[str, int, int], None]:
    import sys

    on = sys.stderr.isatty() if progress is None else progress
    last: dict[str, int] = {}

    def show(what: str, i: int, n: int) -> None:
        if not on:
            return
        pct = 100 * i // max(n, 1)
        if last.get(what) != pct:
            last[what] = pct
            print(f"\r{what}: {i}/{n}", end="\n" if i >= n else "", file=sys.stderr, flush=True)

    return show


def _check_folder(folder: Path, identity: dict[str, Any]) -> None:
    run = folder / "run.json"
    if folder.exists() and not folder.is_dir():
        raise SettingError(f"--out {str(folder)!r} is a file; pass a folder")
    if run.is_file():
        old = json.loads(run.read_text(encoding="utf-8"))
        if old != identity:
            diff = sorted(k for k in identity if old.get(k) != identity[k])
            raise SettingError(
                f"{str(folder)!r} holds a concept run with other settings ({', '.join(diff)}); "
                "pass a new --out folder, or delete it to start over"
            )
    elif folder.is_dir() and any(folder.iterdir()):
        raise SettingError(
            f"{str(folder)!r} is not empty and holds no concept run; pass a new --out folder"
        )


def _batch_indices(seed: int, step: int, n: int, size: int) -> Tensor:
    """``size`` indices in ``0..n-1`` that depend only on ``(seed, step, n)``."""
    rng = np.random.default_rng([seed, step, n])
    return torch.from_numpy(rng.integers(0, n, size=size))


def _spread_init(Va: Tensor, Vb: Tensor, K: int, seed: int) -> Tensor:
    """``[K, E]`` unit starting directions spread over the data (k-means++ on ``1 − |cos|``,
    from a seeded sample of both sides), so no concept starts on another's direction."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.cat(
        [
            Va[torch.randint(0, len(Va), (min(len(Va), 4096),), generator=g)],
            Vb[torch.randint(0, len(Vb), (min(len(Vb), 4096),), generator=g)],
        ]
    ).double()
    pool = pool[pool.norm(dim=1) > 0]
    U = pool / pool.norm(dim=1, keepdim=True)
    chosen = [int(torch.randint(0, len(U), (1,), generator=g))]
    dist = 1 - (U @ U[chosen[0]]).abs()
    for _ in range(K - 1):
        w = dist.clamp_min(0) ** 2
        i = (
            int(torch.multinomial(w / w.sum(), 1, generator=g))
            if w.sum() > 0
            else int(torch.randint(0, len(U), (1,), generator=g))
        )
        chosen.append(i)
        dist = torch.minimum(dist, 1 - (U @ U[i]).abs())
    return U[chosen].float()


def _train_loop(
    sides: dict[str, dict[str, Any]],
    identity: dict[str, Any],
    steps: int,
    tied: bool,
    folder: Path | None,
    checkpoint_every: int,
    show: Callable[[str, int, int], None],
) -> dict[str, Tensor]:
    from dualex.trainer import latest_checkpoint, load_checkpoint, save_checkpoint

    K, k, seed = identity["concepts"], identity["topk"], identity["seed"]
    Xa, Xb = sides["a"]["X"], sides["b"]["X"]
    Ta, Tb = sides["a"]["T"], sides["b"]["T"]
    # the dictionary reconstructs the columns (what the split decomposes); the totals (sums
    # of many concepts) only enter the alignment term
    Va, Vb = Xa, Xb
    scale_a, scale_b = Va.pow(2).sum(1).mean(), Vb.pow(2).sum(1).mean()
    names = ["W", "D_a"] if tied else ["W", "D_a", "D_b"]
    root = folder / CHECKPOINTS if folder is not None else None
    last = latest_checkpoint(root) if root is not None else None
    W0 = _spread_init(Va, Vb, K, seed) if last is None else torch.zeros(K, Va.shape[1])
    params = torch.nn.ParameterDict(
        {n: (W0 if n == "W" else W0.T).contiguous().clone() for n in names}
    )
    opt = torch.optim.Adam(list(params.values()), lr=LEARNING_RATE)
    # batches are drawn from (seed, step), never from the global RNG: nothing to restore there
    start = int(load_checkpoint(last, params, opt, rng=False)["step"]) if last else 0

    def save(step: int) -> None:
        if root is not None:
            save_checkpoint(root, step, params, opt, {}, rng=False)

    for step in range(start, steps):
        for group in opt.param_groups:
            group["lr"] = LEARNING_RATE * min(1.0, (step + 1) / WARMUP)
        ia = _batch_indices(seed, 3 * step, len(Va), min(BATCH, len(Va)))
        ib = _batch_indices(seed, 3 * step + 1, len(Vb), min(BATCH, len(Vb)))
        ip = _batch_indices(seed, 3 * step + 2, len(Ta), min(PAIR_BATCH, len(Ta)))
        W = params["W"] / params["W"].norm(dim=1, keepdim=True)
        Da = params["D_a"]
        Db = Da if tied else params["D_b"]
        xa, xb = Va[ia], Vb[ib]
        loss = ((encode_topk(xa, W, k) @ Da.T - xa).pow(2).sum(1).mean()) / scale_a
        loss = loss + ((encode_topk(xb, W, k) @ Db.T - xb).pow(2).sum(1).mean()) / scale_b
        za, zb = encode_topk(Ta[ip], W, k), encode_topk(Tb[ip], W, k)
        align = 1 - torch.nn.functional.cosine_similarity(za, zb, dim=1, eps=1e-12).mean()
        loss = loss + ALIGN_WEIGHT * align
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        if done % checkpoint_every == 0 or done == steps:
            save(done)
        show("training", done, steps)
    with torch.no_grad():
        W = params["W"] / params["W"].norm(dim=1, keepdim=True)
        Da = params["D_a"].detach().clone()
        Db = Da if tied else params["D_b"].detach().clone()
    return {"W": W.detach().clone(), "D_a": Da, "D_b": Db}


def _finish(
    state: dict[str, Tensor],
    sides: dict[str, dict[str, Any]],
    items: list[_Pair],
    identity: dict[str, Any],
    steps: int,
    tied: bool,
) -> Concepts:
    """Labels, top examples and usage statistics of a trained dictionary."""
    from dualex.towers.positions import positions_from_json

    W, k, K = state["W"], identity["topk"], identity["concepts"]
    mods = identity["model"]["modalities"]
    words: dict[str, int] = {}
    acts: dict[str, Tensor] = {}
    for side in ("a", "b"):
        d = sides[side]
        acts[side] = encode_topk(d["X"].double(), W.double(), k).float()
    # labels from the text side(s): mean positive activation per word
    sums, counts = [], []
    texts: list[list[tuple[float, str]]] = [[] for _ in range(K)]
    for side, mod in zip(("a", "b"), mods, strict=True):
        if mod != "text" or (side == "b" and tied):
            continue
        d = sides[side]
        sel = d["content"].nonzero().flatten()
        word_ids = []
        for i in sel.tolist():
            pos = d["positions"][int(d["item"][i])]
            tok = pos["tokens"][int(d["pos"][i])].strip().lower()
            word_ids.append(words.setdefault(tok, len(words)))
        wid = torch.tensor(word_ids, dtype=torch.int64)
        a = acts[side][sel].clamp_min(0).double()  # [N, K]
        item_of = d["item"][sel]
        # a token's activation is credited to the words of its phrase: itself and the
        # PHRASE - 1 content tokens before it (in context, "red circle" may fire at "circle")
        s = torch.zeros(len(words), K, dtype=torch.float64)
        c = torch.zeros(len(words), dtype=torch.float64)
        for o in range(PHRASE):
            same = item_of[o:] == item_of[: len(item_of) - o]
            src = torch.arange(o, len(wid))[same]
            s.index_add_(0, wid[src - o], a[src])
            c.index_add_(0, wid[src - o], torch.ones(len(src), dtype=torch.float64))
        sums.append(s)
        counts.append(c)
        # top captions: the caption's largest token activation
        item = d["item"][sel]
        best = torch.full((len(items), K), 0.0, dtype=torch.float64)
        best.scatter_reduce_(0, item[:, None].expand(-1, K), a, reduce="amax")
        top = best.topk(min(5, len(items)), dim=0)
        for c_ in range(K):
            for v, i in zip(top.values[:, c_].tolist(), top.indices[:, c_].tolist(), strict=True):
                if v > 0:
                    texts[c_].append((v, d["positions"][i]["text"]))
    vocab = sorted(words, key=words.get)
    names = []
    if sums:
        n_words = len(words)
        S = sum(torch.nn.functional.pad(s, (0, 0, 0, n_words - s.shape[0])) for s in sums)
        C = sum(torch.nn.functional.pad(c, (0, n_words - c.shape[0])) for c in counts)
        mean = torch.where(C[:, None] >= 3, S / C.clamp_min(1)[:, None], 0.0)  # [V, K]
        for c_ in range(K):
            col = mean[:, c_]
            order = torch.argsort(col, descending=True)[:2].tolist()
            if not order or col[order[0]] <= 0:
                names.append("(unused)")
                continue
            label = vocab[order[0]]
            if len(order) > 1 and col[order[1]] >= 0.6 * col[order[0]]:
                label += " / " + vocab[order[1]]
            names.append(label)
    else:
        names = [f"concept {c}" for c in range(K)]
    # top patches (image sides) → crops
    crops = None
    crop_acts: list[list[float]] = [[] for _ in range(K)]
    for side, mod in zip(("a", "b"), mods, strict=True):
        if mod != "image":
            continue
        d = sides[side]
        sel = d["content"].nonzero().flatten()
        a = acts[side][sel]
        crops = torch.zeros(K, 5, CROP, CROP, 3, dtype=torch.uint8)
        for c_ in range(K):
            order = torch.argsort(a[:, c_], descending=True).tolist()
            seen: set[int] = set()
            for j in order:
                if a[j, c_] <= 0 or len(seen) == 5:
                    break
                i = int(d["item"][sel[j]])
                if i in seen:
                    continue
                raw = items[i].a if side == "a" else items[i].b
                pos = positions_from_json(d["positions"][i])
                crops[c_, len(seen)] = _crop(raw, pos, int(d["pos"][sel[j]]))
                crop_acts[c_].append(float(a[j, c_]))
                seen.add(i)
    usage = {
        side: ((acts[side][sides[side]["content"]] != 0).float().mean(0)).tolist()
        for side in ("a", "b")
    }
    meta = {
        "format": FORMAT,
        "model": identity["model"],
        "topk": k,
        "train": {**{key: identity[key] for key in ("data", "pairs", "seed")}, "steps": steps},
        "names": names,
        "usage": usage,
        "examples": {
            "texts": [[[t, v] for v, t in sorted(x, reverse=True)[:5]] for x in texts],
            "crop_activations": crop_acts,
        },
    }
    return Concepts(W, {"a": state["D_a"], "b": state["D_b"]}, k, meta, crops)


def _crop(raw: Any, pos: Any, index: int) -> Tensor:
    """A ``CROP × CROP`` RGB crop around patch ``index`` (one patch of context on each side)."""
    from PIL import Image

    image = raw if isinstance(raw, Image.Image) else None
    if image is None:
        with contextlib.suppress(Exception):
            image = Image.open(raw)
    if image is None:
        return torch.zeros(CROP, CROP, 3, dtype=torch.uint8)
    x0, y0, x1, y1 = pos.patch_boxes()[index - pos.prefix]
    w, h = x1 - x0, y1 - y0
    box = (int(x0 - w), int(y0 - h), int(x1 + w), int(y1 + h))
    crop = image.convert("RGB").crop(box).resize((CROP, CROP), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(crop).copy())
