"""The Tower abstraction: one side of a dual encoder, split at a layer.

A tower turns a raw input (text, image) into a :class:`TowerInput` (model tensors plus position
metadata), and for a layer ``L`` gives

* ``hidden(inp, L)``: the hidden state entering block ``L`` (``L == num_layers``: the output of
  the last block), ``[S, D]``;
* ``suffix(inp, L)``: a function ``[B, S, D] -> [B, E]`` that runs the rest of the model from a
  hidden state to the embedding, with everything that depends on the input (pooling position,
  attention mask) fixed from ``inp``;
* ``reference_input(inp, spec)``: the reference input the path starts from.

:class:`HookTower` implements ``hidden``/``suffix`` for any ``nn.Module`` model by running the
family's own encode function with a hook on block ``L`` that captures or replaces its hidden
state; hooks live only inside context managers. :class:`FunctionTower` wraps two plain callables.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from dualex.engine.lastblock import LastBlock
from dualex.engine.projection import BatchSuffixFn
from dualex.errors import InvalidInputError, InvalidLayerError
from dualex.towers.positions import Positions
from dualex.towers.session import Action, ad_safe, gated, model_guard, unwrap


@dataclass(frozen=True)
class FastPath:
    """A tower's declaration that its split at the last block's input has the pooled-row
    structure (see :mod:`dualex.engine.lastblock`).

    Attributes:
        block: The last block's pieces and the head.
        rows: Pooled row of each input of the batch, ``[B]``.
        pad: ``[B, n, D] -> [B, S, D]``: the hidden states over every row the block sees (rows a
            tower drops, e.g. after a causal text's end token, appended and held fixed).
        keys: ``[B, S]``, false for rows the pooled query may not attend to (padding), or
            ``None``.
    """

    block: LastBlock
    rows: Tensor
    pad: Callable[[Tensor], Tensor] = lambda H: H
    keys: Tensor | None = None


@dataclass
class TowerInput:
    """One prepared input of a tower.

    Attributes:
        data: Model tensors with a batch dimension of 1 (``input_ids``, ``pixel_values``, ...).
        positions: What each position of the hidden state is.
        raw: The original input (text or PIL image), kept for display.
    """

    data: dict[str, Tensor]
    positions: Positions
    raw: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class Tower(ABC):
    """One side of a dual encoder, splittable at any layer ``0..num_layers``.

    Attributes:
        modality: ``"text"`` or ``"image"``.
        name: Human-readable name (e.g. ``"hf-clip-text"``).
    """

    modality: str = "text"
    name: str = "tower"
    tensor_inputs: bool = False
    """Whether :meth:`prepare` takes token-id / pixel tensors (and batches of them)."""

    @property
    @abstractmethod
    def num_layers(self) -> int:
        """Number of blocks; valid layers are ``0..num_layers``."""

    _default_layer: int | None = None

    @property
    def default_layer(self) -> int:
        """The layer used when none is given: the input of the last block unless set.

        Assign an int to change it for this tower (negative counts from the end, validated like
        ``layers=``), ``None`` to restore the input of the last block.
        """
        if self._default_layer is not None:
            return self._default_layer
        return self.natural_layer()

    def natural_layer(self) -> int:
        """The tower's own default split: the input of the last block. Towers read through an
        attention-pool head split at the head's input instead (``num_layers``), where the
        probe-query structure makes the projection cost about one block per node."""
        return max(self.num_layers - 1, 0)

    @default_layer.setter
    def default_layer(self, layer: int | None) -> None:
        if layer is not None:
            layer = self.check_layer(layer)  # raises before anything changes
        self._default_layer = layer

    def check_layer(self, layer: int | None) -> int:
        """Return a valid layer index (``None`` → default; negative counts from the end).

        Raises:
            InvalidLayerError: if the layer is out of range.
        """
        if layer is None:
            return self.default_layer
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise InvalidLayerError(f"layer must be an int, got {layer!r}")
        n = self.num_layers
        given = layer
        if layer < 0:
            layer += n + 1
        if not 0 <= layer <= n:
            raise InvalidLayerError(
                f"layer {given} is out of range for the {self.name} tower with {n} blocks; "
                f"use 0..{n} (0 = input of the first block, {n} = output of the last)"
            )
        return layer

    @abstractmethod
    def prepare(self, x: Any) -> TowerInput:
        """Turn a raw input into model tensors and position metadata."""

    @abstractmethod
    def reference_input(self, inp: TowerInput, spec: Any = None) -> TowerInput:
        """The reference input for ``inp`` (``spec=None``: the tower's default)."""

    @abstractmethod
    def hidden(self, inp: TowerInput, layer: int) -> Tensor:
        """Hidden state of ``inp`` at ``layer``, ``[S, D]``."""

    @abstractmethod
    def suffix(self, inp: TowerInput, layer: int) -> Callable[[Tensor], Tensor]:
        """Function ``[B, S, D] -> [B, E]`` from the hidden state at ``layer`` to the embedding."""

    def positions_at(self, inp: TowerInput, layer: int) -> Positions:
        """Positions of the hidden state at ``layer`` (default: those of ``prepare``).

        CNN towers override this: their positions are the cells of the feature map entering
        ``layer``, whose grid shrinks from stage to stage.
        """
        return inp.positions

    def embed(self, inp: TowerInput) -> Tensor:
        """Embedding of ``inp``, ``[E]`` (the full forward pass)."""
        layer = self.num_layers
        with self.session():
            return self.suffix(inp, layer)(self.hidden(inp, layer).unsqueeze(0))[0]

    # -- batches: B inputs of the same shape per pass ------------------------------------------
    def hidden_batch(self, inps: Sequence[TowerInput], layer: int) -> Tensor:
        """Hidden states ``[B, S, D]`` of inputs whose data have the same shapes."""
        return torch.stack([self.hidden(inp, layer) for inp in inps])

    def suffix_batch(self, inps: Sequence[TowerInput], layer: int) -> BatchSuffixFn:
        """Batch suffix ``(H: [len(items)·m, S, D], items) -> [len(items)·m, E]`` (rows item-major).

        The default runs each input's own :meth:`suffix` on its rows.
        """
        fns = [self.suffix(inp, layer) for inp in inps]

        def run(H: Tensor, items: Sequence[int]) -> Tensor:
            m = H.shape[0] // len(items)
            return torch.cat([fns[i](H[j * m : (j + 1) * m]) for j, i in enumerate(items)])

        return run

    def reference_hidden(self, inp: TowerInput, layer: int, spec: Any = None) -> Tensor:
        """Reference hidden state ``[S, D]``: a given hidden tensor, or that of the reference input."""
        return self.reference_hidden_batch([inp], layer, spec)[0]

    def reference_hidden_batch(
        self, inps: Sequence[TowerInput], layer: int, spec: Any = None
    ) -> Tensor:
        """Reference hidden states ``[B, S, D]`` of a batch (see :meth:`reference_hidden`)."""
        if isinstance(spec, Tensor) and spec.is_floating_point() and spec.dim() == 2:
            return torch.stack([self._given_reference(inp, layer, spec) for inp in inps])
        refs = [self.reference_input(inp, spec) for inp in inps]
        return self.hidden_batch(refs, layer)

    def _given_reference(self, inp: TowerInput, layer: int, spec: Tensor) -> Tensor:
        h = self.hidden(inp, layer)
        if spec.shape != h.shape:
            raise InvalidInputError(
                f"reference hidden state has shape {tuple(spec.shape)} but the input's hidden "
                f"state at layer {layer} is {tuple(h.shape)}; pass a tensor of that shape"
            )
        return spec.to(dtype=h.dtype, device=h.device)

    def reference_embedding_batch(
        self, inps: Sequence[TowerInput], layer: int, H_ref: Tensor, suffix: BatchSuffixFn
    ) -> Tensor:
        """``ē``: the suffix at the reference hidden states ``H_ref: [B, S, D]``, ``[B, E]``.

        ``suffix`` is :meth:`suffix_batch` of ``inps`` at ``layer``. Towers with weights cache it
        (:class:`HookTower`).
        """
        return suffix(H_ref, list(range(len(inps)))).detach()

    def suffix_key(self, inp: TowerInput, layer: int) -> tuple:
        """What the suffix at ``layer`` reads from the input besides the hidden state (pooled
        row, masks, rows held fixed): inputs with equal keys and equal reference hidden states
        share ``ē``. The default, the input's whole data, shares it only between equal inputs."""
        return data_key(inp.data)

    def batch_key(self, inp: TowerInput) -> tuple:
        """Inputs with equal keys can share a pass (same data shapes and number of positions)."""
        shapes = tuple((k, tuple(v.shape), str(v.dtype)) for k, v in sorted(inp.data.items()))
        return (shapes, len(inp.positions))

    def fast_path(self, inps: Sequence[TowerInput], layer: int) -> FastPath | None:
        """The last-block fast path for a split at ``layer``, or ``None`` (the generic AD path).

        Families whose last block is a pre-LayerNorm transformer block read at one pooled row
        declare its pieces here; only the input of the last block qualifies.
        """
        return None

    def session(self) -> contextlib.AbstractContextManager[None]:
        """Everything dualex changes while explaining, restored on exit (see ``towers.session``).

        Entered once per batch of projections; nested and concurrent entries are cheap and safe.
        """
        return ad_safe()

    def context(self) -> contextlib.AbstractContextManager[None]:
        """Settings under which forward- and reverse-mode AD work through this tower."""
        return self.session()


class _Captured(Exception):
    """Raised inside a capture action to stop the forward pass once the hidden state is known."""


def stack_data(datas: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Model tensors of several inputs (each with a batch dimension of 1) concatenated."""
    if len(datas) == 1:
        return dict(datas[0])
    return {k: torch.cat([d[k] for d in datas]) for k in datas[0]}


def rows_data(data: dict[str, Tensor], items: Sequence[int], m: int) -> dict[str, Tensor]:
    """Model tensors for ``len(items)·m`` rows: input ``items[j]``'s tensors repeated ``m`` times."""
    if len(items) == 1:
        i = items[0]
        return {k: v[i : i + 1].expand(m, *v.shape[1:]) for k, v in data.items()}
    idx = torch.as_tensor(list(items)).repeat_interleave(m)
    return {k: v[idx.to(v.device)] for k, v in data.items()}


class HookTower(Tower):
    """A tower over an ``nn.Module`` whose blocks are a list of modules.

    Subclasses give the blocks, the family's own encode function, and how a block's hidden-state
    argument is laid out (``"bsd"`` batch-first, ``"sbd"`` sequence-first, ``"bchw"`` a CNN
    feature map whose spatial cells are the positions). During a session each block is stood in
    for by a gate that captures, replaces or skips per thread (``towers.session``).
    """

    layout: str = "bsd"
    skip_prefix: bool = True
    """Whether blocks before the split may be skipped while the suffix runs (False for CNNs,
    whose stages change the hidden state's shape)."""

    reference_cache_size: int = 64
    """Reference hidden states kept per tower (input-independent ones are reused)."""

    @abstractmethod
    def blocks(self) -> list[nn.Module]:
        """The blocks in order; layer ``L`` is the input of ``blocks()[L]``."""

    @abstractmethod
    def encode(self, data: dict[str, Tensor]) -> Tensor:
        """The family's own forward from model tensors to embeddings ``[B, E]``."""

    def original_blocks(self) -> list[nn.Module]:
        """The blocks themselves (not the gates that stand in for them during a session)."""
        return [unwrap(b) for b in self.blocks()]

    @property
    def num_layers(self) -> int:
        return len(self.blocks())

    def root(self) -> nn.Module | None:
        """The module that contains the blocks (default: ``self.model``)."""
        return getattr(self, "model", None)

    def guarded(self) -> list[nn.Module]:
        """Modules whose mode and ``requires_grad`` flags the session owns (default: the root)."""
        root = self.root()
        return [root] if root is not None else []

    # -- layout between a block's argument and [B, S, D] rows ---------------------------------
    def _to_rows(self, x: Tensor) -> Tensor:
        if self.layout == "bsd":
            return x
        if self.layout == "sbd":
            return x.transpose(0, 1)
        if self.layout == "bchw":
            return x.flatten(2).transpose(1, 2)
        raise ValueError(f"unknown layout {self.layout}")

    def _from_rows(self, rows: Tensor, like: Tensor) -> Tensor:
        if self.layout == "bsd":
            return rows
        if self.layout == "sbd":
            return rows.transpose(0, 1)
        _b, c, hh, ww = like.shape
        return rows.transpose(1, 2).reshape(rows.shape[0], c, hh, ww)

    # -- the session ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _gates(self) -> Iterator[Any]:
        with (
            ad_safe(),
            model_guard(self.guarded()),
            gated(self.original_blocks(), self.root()) as d,
        ):
            yield d

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        with self._gates():
            yield

    @contextlib.contextmanager
    def _acting(self, action: Action) -> Iterator[None]:
        with self._gates() as dispatch, dispatch.acting(action):
            yield

    def _capture(self, data: dict[str, Tensor], layer: int) -> Tensor:
        box: dict[str, Tensor] = {}

        def capture(x: Tensor) -> Tensor:
            box["h"] = x
            raise _Captured

        with self._acting(Action(layer, capture)), contextlib.suppress(_Captured):
            self.encode(data)
        if "h" not in box:
            raise RuntimeError(f"block {layer} of the {self.name} tower was never called")
        return box["h"]

    def hidden(self, inp: TowerInput, layer: int) -> Tensor:
        return self.hidden_batch([inp], layer)[0]

    def on_device(self, data: dict[str, Tensor]) -> dict[str, Tensor]:
        """Model tensors moved to the device of the model's parameters (a model on a GPU takes
        inputs prepared on the CPU)."""
        root = self.root()
        param = next(root.parameters(), None) if root is not None else None
        if param is None:
            return data
        return {k: v.to(param.device) for k, v in data.items()}

    def hidden_batch(self, inps: Sequence[TowerInput], layer: int) -> Tensor:
        layer = self.check_layer(layer)
        h = self._capture(self.on_device(stack_data([i.data for i in inps])), layer)
        return self._to_rows(h).detach()

    def suffix(self, inp: TowerInput, layer: int) -> Callable[[Tensor], Tensor]:
        run = self.suffix_batch([inp], layer)
        return lambda H: run(H, [0])

    def suffix_batch(self, inps: Sequence[TowerInput], layer: int) -> BatchSuffixFn:
        layer = self.check_layer(layer)
        data = self.on_device(stack_data([i.data for i in inps]))
        skip = layer if self.skip_prefix else 0  # at num_layers the last block is skipped too

        def run(H: Tensor, items: Sequence[int]) -> Tensor:
            rows = rows_data(data, items, H.shape[0] // len(items))

            def replace(x: Tensor) -> Tensor:
                return self._from_rows(H.to(x.dtype), x)

            with self._acting(Action(layer, replace, skip)):
                return self.encode(rows)

        return run

    # -- cached reference hidden states ---------------------------------------------------------
    def _weights_token(self) -> tuple:
        root = self.root()
        if root is None:
            return ()
        return tuple((p.data_ptr(), p._version, p.dtype) for p in root.parameters())

    def reference_hidden_batch(
        self, inps: Sequence[TowerInput], layer: int, spec: Any = None
    ) -> Tensor:
        """Reference hidden states ``[B, S, D]``; equal reference inputs are computed once.

        Reference hidden states are cached per tower, keyed by the reference input's tensors, the
        layer and the weights (their storage and version counters), so the all-zero image or a
        text reference of one length is computed once per model until its weights change.
        """
        if isinstance(spec, Tensor) and spec.is_floating_point() and spec.dim() == 2:
            return super().reference_hidden_batch(inps, layer, spec)
        layer = self.check_layer(layer)
        refs = [self.reference_input(inp, spec) for inp in inps]
        token = self._weights_token()
        keys = [(layer, len(r.positions), data_key(r.data), token) for r in refs]
        cache = self.__dict__.setdefault("_ref_cache", OrderedDict())
        lock = self.__dict__.setdefault("_ref_lock", threading.Lock())
        found = _hits(cache, lock, keys)
        missing = {k: r for k, r in zip(keys, refs, strict=True) if k not in found}
        if missing:
            todo = list(missing.items())
            H = self.hidden_batch([r for _, r in todo], layer)
            found.update((k, h) for (k, _), h in zip(todo, H, strict=True))
            _store(cache, lock, dict(zip(missing, H, strict=True)), self.reference_cache_size)
        return torch.stack([found[k] for k in keys])

    def reference_embedding_batch(
        self, inps: Sequence[TowerInput], layer: int, H_ref: Tensor, suffix: BatchSuffixFn
    ) -> Tensor:
        """``ē`` of each input, cached per tower like the reference hidden states: keyed by the
        layer, the reference hidden state's bytes, :meth:`suffix_key` and the weights (storage
        and version counters), so the all-zero image's ``ē`` goes through the suffix once per
        model until its weights change."""
        if self.root() is None:  # no weights to key on
            return super().reference_embedding_batch(inps, layer, H_ref, suffix)
        token = self._weights_token()
        keys = [
            (layer, _tensor_digest(h), self.suffix_key(inp, layer), token)
            for inp, h in zip(inps, H_ref, strict=True)
        ]
        cache = self.__dict__.setdefault("_eref_cache", OrderedDict())
        lock = self.__dict__.setdefault("_ref_lock", threading.Lock())
        found = _hits(cache, lock, keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        if todo:
            # one suffix pass over the missing inputs (the batch suffix takes any items)
            E = suffix(H_ref[todo], todo).detach()
            new = {keys[i]: e for i, e in zip(todo, E, strict=True)}
            found.update(new)
            _store(cache, lock, new, self.reference_cache_size)
        return torch.stack([found[k] for k in keys])


def _hits(cache: OrderedDict, lock: threading.Lock, keys: list) -> dict:
    """The cached entries of ``keys``, taken now (storing the misses later may evict them),
    each marked as recently used."""
    with lock:
        found = {k: cache[k] for k in keys if k in cache}
        for k in found:
            cache.move_to_end(k)
    return found


def _store(cache: OrderedDict, lock: threading.Lock, new: dict, size: int) -> None:
    """Put ``new`` into the LRU ``cache`` (most recent last) and trim it to ``size`` entries."""
    with lock:
        for k, v in new.items():
            cache[k] = v
            cache.move_to_end(k)
        while len(cache) > size:
            cache.popitem(last=False)


def _tensor_digest(t: Tensor) -> tuple:
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return (tuple(t.shape), str(t.dtype), hashlib.blake2b(raw, digest_size=16).digest())


def data_key(data: dict[str, Tensor]) -> tuple:
    """A hashable key of model tensors' exact contents (shape, dtype and bytes)."""
    return tuple((k, *_tensor_digest(v)) for k, v in sorted(data.items()))


class FunctionTower(Tower):
    """A tower from plain callables, for custom models and tests.

    Args:
        prefix: ``(x, layer) -> [S, D]`` hidden state of a raw input at a layer.
        suffix: ``(x, layer) -> callable [B, S, D] -> [B, E]``.
        positions: ``x -> Positions`` metadata of a raw input.
        reference: ``(x, spec) -> raw reference input``.
        num_layers: Number of blocks (valid layers ``0..num_layers``).
        modality: ``"text"`` or ``"image"``.
        name: Display name.
    """

    def __init__(
        self,
        prefix: Callable[[Any, int], Tensor],
        suffix: Callable[[Any, int], Callable[[Tensor], Tensor]],
        positions: Callable[[Any], Positions],
        reference: Callable[[Any, Any], Any],
        num_layers: int,
        modality: str = "text",
        name: str = "custom",
    ) -> None:
        self._prefix, self._suffix = prefix, suffix
        self._positions, self._reference = positions, reference
        self._num_layers = num_layers
        self.modality, self.name = modality, name

    @property
    def num_layers(self) -> int:
        return self._num_layers

    def prepare(self, x: Any) -> TowerInput:
        if isinstance(x, TowerInput):
            return x
        return TowerInput(data={}, positions=self._positions(x), raw=x)

    def reference_input(self, inp: TowerInput, spec: Any = None) -> TowerInput:
        ref = self._reference(inp.raw, spec)
        return TowerInput(data={}, positions=inp.positions, raw=ref)

    def hidden(self, inp: TowerInput, layer: int) -> Tensor:
        return self._prefix(inp.raw, self.check_layer(layer))

    def suffix(self, inp: TowerInput, layer: int) -> Callable[[Tensor], Tensor]:
        return self._suffix(inp.raw, self.check_layer(layer))


LogitScale = float | Callable[[], float] | None
"""A fixed scale, a function that reads it from the model when called, or none."""


@dataclass(repr=False)
class DualEncoder:
    """Two towers whose embeddings are compared by a dot product or a cosine.

    Attributes:
        tower_a: The first tower (text for CLIP-like models).
        tower_b: The second tower (image for CLIP-like models; the same text tower for sentence
            transformers).
        similarity: ``"cosine"`` or ``"dot"``.
        logit_scale: The model's learnt scale of the similarity (used when ``scale=True``): a
            number, or a function that reads it from the model when called, so a model in
            training is explained with its current scale (see :meth:`current_logit_scale`).
        name: A display name (the spec string when loaded by spec).
        module: The underlying torch module, if any.
        weights: Where the weights come from: ``"pretrained"``, ``"builtin"``, ``"random"`` or
            ``"unknown"``.
        family: The registered :class:`dualex.towers.registry.Family` that made it (set by
            ``dualex.load`` / ``dualex.wrap``; ``None`` for one built from custom towers): what
            it opens for attention methods and how it is fine-tuned and saved.
    """

    tower_a: Tower
    tower_b: Tower
    similarity: str = "cosine"
    logit_scale: LogitScale = None
    name: str = "model"
    module: nn.Module | None = None
    weights: str = "unknown"
    family: Any = field(default=None, compare=False)

    def current_logit_scale(self) -> float | None:
        """The similarity's scale now (read from the model at each call when it is learnt)."""
        value = self.logit_scale
        if callable(value):
            return float(value())
        return None if value is None else float(value)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Both towers' split sessions (see :meth:`dualex.towers.base.Tower.session`)."""
        with self.tower_a.session(), self.tower_b.session():
            yield

    def __repr__(self) -> str:
        return (
            f"DualEncoder(name={self.name!r}, a={self.tower_a.name}, b={self.tower_b.name}, "
            f"similarity={self.similarity!r})"
        )


def read_scale(module: nn.Module, attribute: str = "logit_scale", *, inverse: bool = False) -> Any:
    """A function reading ``exp(module.<attribute>)`` (or ``1 / module.<attribute>``) when called.

    Returns ``None`` when the module has no such attribute.
    """
    if getattr(module, attribute, None) is None:
        return None

    def read() -> float:
        p = getattr(module, attribute).detach().reshape(-1)[0]
        return float(1.0 / p) if inverse else float(p.exp())

    return read
