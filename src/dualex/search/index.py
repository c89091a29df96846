"""A search index of projections: every hit of every query explained by one matrix product.

An explanation factors per input (``M = P_aᵀ P_b``), so :meth:`Index.build` projects each gallery
item once (through the dataset job runner of :mod:`dualex.scale`: sharded, resumable, local or
Ray) and stores its projection; :meth:`Index.search` projects the query once, ranks the gallery
by the model's own score from the stored embeddings (exact search: one matrix product), and
explains each of the k hits from the stored projections. Each hit's explanation equals
:func:`dualex.explain` of that pair.

An index folder holds ``index.json`` (model, fingerprint of its weights, layers, steps, storage
dtype and its measured error), ``items.parquet`` (one row per item: kind, id, path, caption, the
file and key of its projection), ``projections/shard-NNNNNN.safetensors``
(:mod:`dualex.projection_store`) and the job runner's ``job.json`` and ``parts/``; images given
in memory are saved under ``images/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dualex.encoder import DualEncoder
from dualex.engine.interactions import Completeness
from dualex.errors import FileFormatError, InvalidInputError, SettingError
from dualex.explainer import (
    Projection,
    Projections,
    check_layers,
    combine_projections,
    project_one,
)
from dualex.explanation import Explanation
from dualex.towers.positions import ImagePositions, TextPositions

__all__ = ["FORMAT", "FusedExplanation", "Hit", "Index", "model_fingerprint"]

FORMAT = "dualex.index/1"
META = "index.json"
ITEMS = "items.parquet"
KINDS = ("image", "text")


def model_fingerprint(model: DualEncoder) -> str:
    """A short digest of a model's weights (names, shapes, a strided sample and the sum of every
    tensor) and similarity: equal for the same model loaded twice, different for another one."""
    h = hashlib.sha256(model.similarity.encode())
    module = model.module
    if module is None:
        h.update(model.name.encode())
    else:
        with torch.no_grad():
            for name, t in sorted(module.state_dict().items()):
                flat = t.detach().reshape(-1)
                h.update(f"{name}{tuple(t.shape)}".encode())
                if flat.numel():
                    step = max(1, flat.numel() // 1024)
                    sample = flat[::step][:1024].double().cpu()
                    h.update(sample.numpy().tobytes())
                    h.update(repr(round(float(flat.double().sum()), 6)).encode())
    return h.hexdigest()[:16]


@dataclass
class FusedExplanation:
    """The explanation of a fused query (text + image, a weighted sum of normalised embeddings)
    against one hit: each query part's own explanation, weighted.

    The hit's score is ``Σ_i w_i · score_i`` (score fusion, as UniIR's CLIP-SF), so the stacked
    matrix plus the weighted reference terms add up to it, exactly as each part's does.

    Attributes:
        parts: Each query part's own :class:`Explanation` against the hit (unweighted; the
            text part equals ``dualex.explain(model, text, hit)``).
        weights: The part weights.
        query_sides: Per part, which side of its explanation is the query (``"a"`` or ``"b"``).
    """

    parts: list[Explanation]
    weights: list[float]
    query_sides: list[str]

    def part_matrix(self, i: int) -> Tensor:
        """Part ``i`` weighted and oriented ``[S_query_i, S_hit]``."""
        m = self.parts[i].matrix
        return self.weights[i] * (m if self.query_sides[i] == "a" else m.T)

    @property
    def matrix(self) -> Tensor:
        """``[Σ_i S_query_i, S_hit]``: every query part's positions (text tokens, then query
        image positions) against the hit's positions, weighted."""
        return torch.cat([self.part_matrix(i) for i in range(len(self.parts))])

    @property
    def score(self) -> float:
        """The fused score ``Σ_i w_i · score_i``."""
        return self.completeness.score

    @property
    def completeness(self) -> Completeness:
        """Completeness of the fused score: weighted sums of the parts' terms."""
        cs = [p.completeness for p in self.parts]
        w = self.weights
        score = sum(wi * c.score for wi, c in zip(w, cs, strict=True))
        refs = tuple(
            sum(wi * c.reference_terms[j] for wi, c in zip(w, cs, strict=True)) for j in range(3)
        )
        total = float(self.matrix.double().sum())
        abs_err = abs(score - total - sum(refs))
        # relative to the parts' weighted interaction sums (the parts' own bounds are not kept)
        bound = sum(abs(wi) * abs(c.attribution_sum) for wi, c in zip(w, cs, strict=True))
        return Completeness(
            score=score,
            reference_terms=refs,  # type: ignore[arg-type]
            attribution_sum=total,
            absolute_error=abs_err,
            relative_error=abs_err / bound if bound > 0 else abs_err,
            tower_errors=(max(c.tower_errors[0] for c in cs), max(c.tower_errors[1] for c in cs)),
            steps=cs[0].steps,
            rule=cs[0].rule,
        )


@dataclass
class Hit:
    """One search result.

    Attributes:
        rank: 1 for the best hit.
        id: The item's id: its position in the list given to :meth:`Index.build`, or the
            dataset's image / caption id.
        score: The model's score of (query, item) (the fused score for a fused query).
        explanation: The pair's :class:`~dualex.Explanation` (a :class:`FusedExplanation` for a
            fused query).
        kind: ``"image"`` or ``"text"``.
        path: The image's path (``""`` for none).
        caption: The caption of a text item (``""`` for an image).
        query_side: Which side of a one-part explanation is the query (``"a"``, or ``"b"``
            for an image query against captions: ``explain(caption, image)``'s order).
    """

    rank: int
    id: int | str
    score: float
    explanation: Explanation | FusedExplanation = field(repr=False)
    kind: str = "image"
    path: str = ""
    caption: str = ""
    query_side: str = "a"

    def words(self, k: int = 3) -> list[dict[str, Any]]:
        """The ``k`` query (or caption) words that add most to the score, and where.

        Returns:
            Dicts ``{"word", "score", "box", "where"}``: a word's row sum of the text–image
            matrix (its share of the score), the box, in original image pixels, of the patch
            where it matched most, and that box's place in words (``top left``...). Empty for a
            pair without a text and an image side.
        """
        ex = self.explanation
        if isinstance(ex, FusedExplanation):
            found = [i for i, p in enumerate(ex.parts) if _has_text_and_image(p)]
            if not found:
                return []
            ex, weight = ex.parts[found[0]], ex.weights[found[0]]
        else:
            weight = 1.0
            if not _has_text_and_image(ex):
                return []
        m, text, image = ex.text_image()
        m = m.double() * weight
        totals = m.sum(1)
        idx = [i for i, s in enumerate(text.special) if not s] or list(range(len(text)))
        idx.sort(key=lambda i: -float(totals[i]))
        boxes = image.patch_boxes()
        size = image.geometry.original_size
        out = []
        for i in idx[:k]:
            patches = m[i, image.patch_slice]
            best = int(patches.argmax())
            out.append(
                {
                    "word": text.tokens[i],
                    "score": float(totals[i]),
                    "box": [round(float(v), 1) for v in boxes[best]],
                    "where": _region(boxes[best], size),
                }
            )
        return out

    def to_json(self) -> dict[str, Any]:
        """``{rank, id, score, kind, path, caption, words, completeness}`` as plain JSON."""
        c = self.explanation.completeness
        return {
            "rank": self.rank,
            "id": self.id,
            "score": self.score,
            "kind": self.kind,
            "path": self.path,
            "caption": self.caption,
            "words": self.words(),
            "completeness": {
                "reference_terms": list(c.reference_terms),
                "attribution_sum": c.attribution_sum,
                "absolute_error": c.absolute_error,
                "relative_error": c.relative_error,
            },
        }


def _region(box: Any, size: tuple[int, int]) -> str:
    """Where a box lies in an image, in words: ``top left`` ... ``centre`` ... ``bottom right``."""
    cx = (box[0] + box[2]) / 2 / max(size[0], 1)
    cy = (box[1] + box[3]) / 2 / max(size[1], 1)
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    return " ".join(w for w in (row, col) if w) or "centre"


def _has_text_and_image(ex: Explanation) -> bool:
    kinds = {type(ex.a), type(ex.b)}
    return kinds == {TextPositions, ImagePositions}


@dataclass
class _Part:
    """One query part: its projection and the tower (``"a"``/``"b"``) it went through."""

    projection: Projection
    tower: str
    weight: float


def _gallery_samples(
    out: Path, images: Sequence[Any] | None, texts: Sequence[Any] | None
) -> list[Any]:
    """Samples of in-process lists: each image or text is one item; in-memory images are saved
    (by content) under ``out/images/`` so the index is self-contained and Ray can read them."""
    from dualex.data.types import ImageRef, Sample
    from dualex.io import atomic_write
    from dualex.towers.inputs import load_image

    samples = []
    for i, x in enumerate(images or []):
        if isinstance(x, str | os.PathLike):
            p = Path(x)
            if not p.is_file():
                raise InvalidInputError(
                    f"image {i} ({str(x)!r}) is not a file; pass image paths, PIL images or arrays"
                )
            path = str(p.absolute())
        else:
            im = load_image(x)
            digest = hashlib.sha256(im.tobytes() + repr(im.size).encode()).hexdigest()[:20]
            target = out / "images" / f"{digest}.png"
            if not target.is_file():
                atomic_write(target, lambda tmp, im=im: im.save(tmp, format="PNG"))
            path = str(target)
        ref = ImageRef(path)
        meta = {"exif": True, "item": "image"}
        samples.append(Sample(image=ref, image_id=f"i{i}", meta=meta))
    placeholder = ImageRef(str(out / "no-image"))
    for i, t in enumerate(texts or []):
        if not isinstance(t, str):
            raise InvalidInputError(f"text {i} is a {type(t).__name__}; pass strings")
        meta = {"item": "text"}
        samples.append(
            Sample(image=placeholder, caption=t, image_id=f"t{i}", caption_id=f"t{i}", meta=meta)
        )
    return samples


class Index:
    """A gallery's projections on disk; search it and get every hit explained.

    Build one with :meth:`build` (or ``dualex index``), open one with :meth:`load`.

    Example:
        >>> idx = Index.build(model, images=["a.jpg", "b.jpg"], out="gallery.idx")  # doctest: +SKIP
        >>> for hit in idx.search("a red circle", k=2):  # doctest: +SKIP
        ...     print(hit.id, hit.score, hit.explanation.image_map("red"))
    """

    def __init__(self, root: Path, meta: dict[str, Any], model: DualEncoder) -> None:
        import pyarrow.parquet as pq

        self.root = root
        self.meta = meta
        self.model = model
        rows = [r for r in pq.read_table(root / ITEMS).to_pylist() if r.get("file")]
        self.items: dict[str, list[dict[str, Any]]] = {
            kind: [r for r in rows if r["kind"] == kind] for kind in KINDS
        }
        self._embeddings: dict[str, Tensor] = {}
        self._file_meta: dict[str, Any] = {}  # parsed metadata of projection files, by file
        self._tmp: Any = None

    # -- building and loading ------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        model: DualEncoder | str,
        out: str | os.PathLike[str] | None = None,
        *,
        images: Sequence[Any] | None = None,
        texts: Sequence[str] | None = None,
        data: str | None = None,
        captions: bool = False,
        layers: int | tuple[int, int] | None = None,
        steps: int | None = None,
        rule: str | None = None,
        dtype: str = "float32",
        shard_size: int = 32,
        limit: int | None = None,
        backend: str = "local",
        workers: int = 1,
        threads: int | None = None,
        progress: bool = False,
    ) -> Index:
        """Project a gallery once and store it (resumable: the same call again finishes it).

        Args:
            model: A :class:`~dualex.DualEncoder`, or a model spec (``builtin``, ``hf:PATH``,
                ``random-clip:SEED``...; needed for the Ray backend).
            out: The index folder (``None``: a temporary folder that lives as long as the index).
            images: Gallery images: paths, PIL images or ``[H, W, 3]`` arrays; a hit's ``id`` is
                its position in this list.
            texts: Gallery texts (for image → text search); ``id`` = position in this list.
            data: A ``--data`` spec instead of lists (``synthetic:seed=1,n=16``, ``coco:...``);
                its images are indexed, and its captions too with ``captions=True``.
            captions: Index the captions of ``data``.
            layers: Split layer(s), as in :func:`dualex.explain`.
            steps: Quadrature nodes (``None``: adaptive, as ``explain``).
            rule: Quadrature rule.
            dtype: Storage of the projections: ``float32`` (the model's own dtype: hits equal
                ``explain`` exactly) or ``float16`` (half the size; ``index.json`` records the
                measured relative error, ``float16_error``).
            shard_size: Fewest samples per shard.
            limit: Most samples of ``data`` to read.
            backend: ``local``, ``ray`` or ``ray:ADDRESS`` (the dataset job runner's).
            workers: Ray actors.
            threads: torch threads per Ray actor.
            progress: Show a progress bar.

        Returns:
            The index.

        Raises:
            InvalidInputError: on no gallery, a missing image file or an item that failed.
            JobError: if ``out`` holds an index of another model, gallery or settings.
        """
        from dualex.model import load, wrap
        from dualex.projection_store import check_dtype
        from dualex.scale import Job, raise_on_failures, run_job
        from dualex.scale.settings import to_settings
        from dualex.scale.tasks import IndexSettings

        check_dtype(dtype)
        if data is None and not images and not texts:
            raise InvalidInputError("nothing to index; pass images=[...], texts=[...] or data=SPEC")
        if data is not None and (images or texts):
            raise InvalidInputError("pass data=SPEC or images/texts lists, not both")
        spec = model if isinstance(model, str) else None
        encoder = load(model) if isinstance(model, str) else wrap(model)
        if backend != "local" and spec is None:
            raise SettingError(
                "the Ray backend builds the model in each worker from its spec; pass the model "
                "as a spec string (e.g. 'builtin'), or use backend='local'"
            )
        tmp = None
        if out is None:
            tmp = tempfile.TemporaryDirectory(prefix="dualex-index-")
            out = tmp.name
        root = Path(out).absolute()
        root.mkdir(parents=True, exist_ok=True)
        la, lb = check_layers(encoder, layers)
        text_tower = "b" if encoder.tower_b.modality == "text" else "a"
        if images and encoder.tower_b.modality != "image":
            raise InvalidInputError(f"{encoder.name} has no image tower; index texts=[...]")
        fingerprint = model_fingerprint(encoder)
        settings = IndexSettings(
            layers=(la, lb),
            steps=steps,
            rule=rule,
            dtype=dtype,
            images=data is not None or bool(images),
            texts=bool(texts) or (data is not None and captions),
            text_tower=text_tower,
            shard_size=shard_size,
            limit=limit,
            fingerprint=fingerprint,
        )
        if data is not None:
            from dualex.data.sources import parse_data_spec

            parse_data_spec(data).check()
            samples = None
            label = data
        else:
            samples = _gallery_samples(root, images, texts)
            label = f"lists:images={len(images or [])},texts={len(texts or [])}"
        job = Job(
            model=spec or encoder.name, data=label, task="index", settings=to_settings(settings)
        )
        result = run_job(
            job,
            root,
            samples=samples,
            model=encoder,
            backend=backend,
            workers=workers,
            threads=threads,
            progress=progress,
        )
        raise_on_failures(result)
        import pyarrow.parquet as pq

        rows = pq.read_table(root / ITEMS).to_pylist()
        bad = [r for r in rows if r.get("error")]
        if bad and data is None:
            raise InvalidInputError(f"{bad[0]['kind']} {bad[0]['id']} failed: {bad[0]['error']}")
        meta = {
            "format": FORMAT,
            "model": spec or encoder.name,
            "spec": spec is not None,
            "fingerprint": fingerprint,
            "weights": encoder.weights,
            "similarity": encoder.similarity,
            "layers": [la, lb],
            "steps": steps,
            "rule": rule,
            "dtype": dtype,
            "float16_error": max((float(r["p_error"]) for r in rows if r.get("file")), default=0.0)
            if dtype == "float16"
            else 0.0,
            "text_tower": text_tower,
            "ids": "dataset" if data is not None else "position",
            "data": label,
            "counts": {k: sum(1 for r in rows if r["kind"] == k and r.get("file")) for k in KINDS},
            "failed": len(bad),
            "built_with": "dualex.scale job runner (task 'index')",
        }
        from dualex.io import atomic_write

        atomic_write(root / META, json.dumps(meta, indent=1, sort_keys=True) + "\n")
        idx = cls(root, meta, encoder)
        idx._tmp = tmp
        return idx

    @classmethod
    def load(cls, root: str | os.PathLike[str], model: DualEncoder | Any | None = None) -> Index:
        """Open an index folder.

        Args:
            root: The folder written by :meth:`build` / ``dualex index``.
            model: The model to search with (``None``: load the recorded spec). It must be the
                model the index was built with.

        Raises:
            FileFormatError: if the folder is not a finished index.
            SettingError: if ``model`` is another model than the index's.
        """
        root = Path(root)
        path = root / META
        if not path.is_file():
            hint = (
                "its build did not finish: run the same `dualex index` command again to resume"
                if (root / "job.json").is_file()
                else "build one with `dualex index`"
            )
            raise FileFormatError(f"{str(root)!r} is not a dualex index ({META} missing); {hint}")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise FileFormatError(f"cannot read {str(path)!r} ({err}); rebuild the index") from err
        if meta.get("format") != FORMAT:
            raise FileFormatError(f"{str(path)!r} has format {meta.get('format')!r}, not {FORMAT}")
        if model is None:
            if not meta.get("spec"):
                raise SettingError(
                    f"the index was built with the in-process model {meta['model']!r}; pass that "
                    "model: Index.load(path, model=...)"
                )
            from dualex.model import load

            model = load(meta["model"])
        else:
            from dualex.model import wrap

            model = wrap(model)
        cls.check_model(meta, model)
        return cls(root, meta, model)

    @staticmethod
    def check_model(meta: dict[str, Any], model: DualEncoder) -> None:
        """Refuse a model other than the index's.

        Raises:
            SettingError: naming both models.
        """
        got = model_fingerprint(model)
        if got != meta["fingerprint"]:
            raise SettingError(
                f"the index was built with model {meta['model']!r} (weights {meta['fingerprint']})"
                f" but the query's model is {model.name!r} (weights {got}); search with the "
                "index's model, or build an index with this one"
            )

    # -- the gallery ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(len(v) for v in self.items.values())

    def _tower(self, kind: str) -> str:
        return "b" if kind == "image" else self.meta["text_tower"]

    def _item_id(self, row: dict[str, Any]) -> int | str:
        if self.meta["ids"] == "position":
            return int(row["id"][1:]) if row["id"][:1] in "it" else row["id"]
        return row["id"]

    def embeddings(self, kind: str) -> Tensor:
        """The stored embeddings of every ``kind`` item, ``[N, E]`` (read once)."""
        from dualex.projection_store import read_embeddings

        if kind not in self._embeddings:
            rows = self.items[kind]
            by_file: dict[str, list[int]] = {}
            for i, r in enumerate(rows):
                by_file.setdefault(r["file"], []).append(i)
            parts: list[Tensor | None] = [None] * len(rows)
            for file, ids in by_file.items():
                got = read_embeddings(self.root / file, [rows[i]["key"] for i in ids])
                for j, i in enumerate(ids):
                    parts[i] = got[j]
            self._embeddings[kind] = (
                torch.stack(parts) if parts else torch.empty(0, 0)  # type: ignore[arg-type]
            )
        return self._embeddings[kind]

    def projection(self, kind: str, pos: int) -> Projection:
        """The stored projection of item ``pos`` of ``kind`` (with its image or caption)."""
        return self.projections(kind, [pos])[0]

    def projections(self, kind: str, positions: Sequence[int]) -> list[Projection]:
        """The stored projections of items ``positions`` of ``kind``, each file opened once."""
        from dualex.projection_store import read_projections

        rows = [self.items[kind][pos] for pos in positions]
        by_file: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_file.setdefault(row["file"], []).append(row)
        found: dict[str, Projection] = {}
        for file, group in by_file.items():
            raw = {r["key"]: r["caption"] if kind == "text" else self._open_image(r) for r in group}
            got, meta = read_projections(
                self.root / file, list(raw), raw, meta=self._file_meta.get(file)
            )
            self._file_meta[file] = meta
            found.update(got)
        return [found[row["key"]] for row in rows]

    def _open_image(self, row: dict[str, Any]) -> Any:
        from dualex.data.types import ImageRef
        from dualex.towers.inputs import load_image

        if not row.get("path"):
            return None
        try:
            if self.meta["ids"] == "position":
                return load_image(row["path"])
            return ImageRef(row["path"]).open()
        except InvalidInputError:
            return None  # the explanation stands without its picture

    # -- searching -----------------------------------------------------------------------------
    def _project_query(self, x: Any, tower: str, **opts: Any) -> Projection:
        m = self.model
        t = m.tower_a if tower == "a" else m.tower_b
        layer = self.meta["layers"][0 if tower == "a" else 1]
        return project_one(
            t, x, layer=layer, steps=self.meta["steps"], rule=self.meta["rule"], **opts
        )

    def query_parts(
        self, query: str | None, image: Any = None, weights: Sequence[float] | None = None
    ) -> list[_Part]:
        """Project a query's parts (text through tower a, image through the image tower)."""
        text = query.strip() if isinstance(query, str) else query
        if query is not None and not isinstance(query, str):
            raise InvalidInputError(f"the query must be a string, got {type(query).__name__}")
        if not text and image is None:
            raise InvalidInputError("the query is empty; pass a text, an image, or both")
        n = int(bool(text)) + int(image is not None)
        if weights is None:
            w = [1.0] * n
        else:
            w = [float(v) for v in weights]
            if len(w) != n or not all(math.isfinite(v) for v in w) or not any(w):
                raise SettingError(
                    f"weights {list(weights)!r} do not fit a query of {n} part(s); pass one "
                    "finite weight per part (text first), not all zero"
                )
        parts = []
        with self.model.session():
            if text:
                parts.append(_Part(self._project_query(query, "a"), "a", w[0]))
            if image is not None:
                if self.model.tower_b.modality != "image":
                    raise InvalidInputError(f"{self.model.name} has no image tower")
                parts.append(_Part(self._project_query(image, "b"), "b", w[-1]))
        return parts

    def search(
        self,
        query: str | None = None,
        k: int = 10,
        *,
        image: Any = None,
        weights: Sequence[float] | None = None,
        target: str | None = None,
    ) -> list[Hit]:
        """The ``k`` best items for a query, each explained.

        Args:
            query: The query text (``None`` or empty with an ``image``: an image query).
            k: Number of hits (at most the gallery's size).
            image: A query image (path, PIL image or array); with a text: a fused query.
            weights: Weights of the query parts (text first), default 1 each: the fused score
                is ``Σ_i w_i · cos(query_i, item)`` (a weighted sum of normalised embeddings).
            target: ``"image"`` or ``"text"`` items (default: images for a text or fused query,
                captions for an image query when the index has them).

        Returns:
            Hits in the model's score order (best first). A one-part query's hit has the
            :class:`~dualex.Explanation` that ``dualex.explain`` gives for the pair; a fused
            query's a :class:`FusedExplanation`.

        Raises:
            InvalidInputError: on an empty query or an unreadable image.
            SettingError: on a bad ``k``, ``weights`` or ``target``.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise SettingError(f"k must be a positive integer, got {k!r}")
        parts = self.query_parts(query, image, weights)
        kind = target or self._default_target(parts)
        if kind not in KINDS or not self.items[kind]:
            have = [x for x in KINDS if self.items[x]]
            raise SettingError(
                f"this index has no {kind} items; search its {' or '.join(have)} items"
            )
        scores = self.scores(parts, kind)
        top = torch.topk(scores, min(k, scores.numel())).indices.tolist()
        stored = self.projections(kind, top)
        hits = [self._hit(parts, kind, pos, g) for pos, g in zip(top, stored, strict=True)]
        for r, h in enumerate(hits, 1):
            h.rank = r
        return hits

    def _default_target(self, parts: list[_Part]) -> str:
        only_image = len(parts) == 1 and parts[0].tower == "b"
        if only_image and self.items["text"]:
            return "text"
        return "image" if self.items["image"] else "text"

    def scores(self, parts: list[_Part], kind: str) -> Tensor:
        """The model's score of the query with every ``kind`` item, ``[N]`` (float64)."""
        E = self.embeddings(kind).double()
        total = torch.zeros(E.shape[0], dtype=torch.float64)
        for p in parts:
            q = p.projection.embedding.double()
            s = E @ q
            if self.model.similarity == "cosine":
                s = s / (E.norm(dim=1) * q.norm())
            total += p.weight * s
        return total

    def _hit(self, parts: list[_Part], kind: str, pos: int, g: Projection) -> Hit:
        gt = self._tower(kind)
        exps, sides = [], []
        for p in parts:
            ex, side = self._pair(p.projection, p.tower, g, gt)
            exps.append(ex)
            sides.append(side)
        row = self.items[kind][pos]
        if len(parts) == 1 and parts[0].weight == 1.0:
            explanation: Any = exps[0]
        else:
            explanation = FusedExplanation(exps, [p.weight for p in parts], sides)
        return Hit(
            rank=0,
            id=self._item_id(row),
            score=float(explanation.score),
            explanation=explanation,
            kind=kind,
            path=row.get("path") or "",
            caption=row.get("caption") or "",
            query_side=sides[0],
        )

    def _pair(self, q: Projection, qt: str, g: Projection, gt: str) -> tuple[Explanation, str]:
        """The explanation of (query part, gallery item), and which side is the query."""
        m = self.model
        if (qt, gt) == ("a", "b"):
            return Projections(m, [q], [g]).explanation(0, 0), "a"
        if (qt, gt) == ("b", "a"):
            return Projections(m, [g], [q]).explanation(0, 0), "b"
        return combine_projections(m, q, g, None), "a"


def check_index_folder(root: str | os.PathLike[str]) -> Path:
    """``root`` as a path if it holds an index.

    Raises:
        FileFormatError: otherwise.
    """
    p = Path(root)
    if not (p / META).is_file():
        raise FileFormatError(f"{str(p)!r} is not a dualex index; build one with `dualex index`")
    return p
