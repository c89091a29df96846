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
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from dualex.errors import InvalidInputError, InvalidLayerError
from dualex.towers.positions import Positions


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
        if layer < 0:
            layer += n + 1
        if not 0 <= layer <= n:
            raise InvalidLayerError(
                f"layer {layer} is out of range for the {self.name} tower with {n} blocks; "
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
        return self.suffix(inp, layer)(self.hidden(inp, layer).unsqueeze(0))[0]

    def reference_hidden(self, inp: TowerInput, layer: int, spec: Any = None) -> Tensor:
        """Reference hidden state ``[S, D]``: a given hidden tensor, or that of the reference input."""
        if isinstance(spec, Tensor) and spec.is_floating_point() and spec.dim() == 2:
            h = self.hidden(inp, layer)
            if spec.shape != h.shape:
                raise InvalidInputError(
                    f"reference hidden state has shape {tuple(spec.shape)} but the input's hidden "
                    f"state at layer {layer} is {tuple(h.shape)}; pass a tensor of that shape"
                )
            return spec.to(dtype=h.dtype, device=h.device)
        return self.hidden(self.reference_input(inp, spec), layer)

    def context(self) -> contextlib.AbstractContextManager[None]:
        """Settings under which forward- and reverse-mode AD work through this tower."""
        return ad_safe()


@contextlib.contextmanager
def ad_safe() -> Iterator[None]:
    """Math SDPA backend and no fused MultiheadAttention fast path, restored on exit.

    CPU flash attention and ``nn.MultiheadAttention``'s fast path have no forward-mode AD.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


class _Captured(Exception):
    """Raised inside a capture hook to stop the forward pass once the hidden state is known."""


class HookTower(Tower):
    """A tower over an ``nn.Module`` whose blocks are a list of modules.

    Subclasses give the blocks, the family's own encode function, and how a block's hidden-state
    argument is laid out (``"bsd"`` batch-first, ``"sbd"`` sequence-first, ``"bchw"`` a CNN
    feature map whose spatial cells are the positions).
    """

    layout: str = "bsd"

    @abstractmethod
    def blocks(self) -> list[nn.Module]:
        """The blocks in order; layer ``L`` is the input of ``blocks()[L]``."""

    @abstractmethod
    def encode(self, data: dict[str, Tensor]) -> Tensor:
        """The family's own forward from model tensors to embeddings ``[B, E]``."""

    @property
    def num_layers(self) -> int:
        return len(self.blocks())

    def batch_data(self, data: dict[str, Tensor], batch: int) -> dict[str, Tensor]:
        """Model tensors repeated to a batch of ``batch``."""
        return {k: v.expand(batch, *v.shape[1:]) for k, v in data.items()}

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

    @contextlib.contextmanager
    def _hook(self, layer: int, fn: Callable[[Tensor], Tensor]) -> Iterator[None]:
        """Apply ``fn`` to the hidden state at ``layer`` during forward passes in this context."""
        blocks = self.blocks()
        if layer < len(blocks):

            def pre(module, args, kwargs):
                if args:
                    return (fn(args[0]), *args[1:]), kwargs
                key = next(iter(kwargs))
                return args, {**kwargs, key: fn(kwargs[key])}

            handle = blocks[layer].register_forward_pre_hook(pre, with_kwargs=True)
        else:

            def post(module, args, output):
                if isinstance(output, tuple):
                    return (fn(output[0]), *output[1:])
                return fn(output)

            handle = blocks[-1].register_forward_hook(post)
        try:
            yield
        finally:
            handle.remove()

    def hidden(self, inp: TowerInput, layer: int) -> Tensor:
        layer = self.check_layer(layer)
        box: dict[str, Tensor] = {}

        def capture(x: Tensor) -> Tensor:
            box["h"] = x
            raise _Captured

        with self.context(), self._hook(layer, capture), contextlib.suppress(_Captured):
            self.encode(inp.data)
        if "h" not in box:
            raise RuntimeError(f"block {layer} of the {self.name} tower was never called")
        h = box["h"]
        box["shape"] = h.shape
        self._last_shape = tuple(h.shape)
        return self._to_rows(h)[0].detach()

    def suffix(self, inp: TowerInput, layer: int) -> Callable[[Tensor], Tensor]:
        layer = self.check_layer(layer)

        def run(H: Tensor) -> Tensor:
            data = self.batch_data(inp.data, H.shape[0])

            def replace(x: Tensor) -> Tensor:
                return self._from_rows(H.to(x.dtype), x)

            with self.context(), self._skip_before(layer), self._hook(layer, replace):
                return self.encode(data)

        return run

    def root(self) -> nn.Module | None:
        """The module that contains the blocks (default: ``self.model``), used to skip blocks."""
        return getattr(self, "model", None)

    @contextlib.contextmanager
    def _skip_before(self, layer: int) -> Iterator[None]:
        """Swap the blocks before ``layer`` for pass-throughs while the suffix runs.

        Their output is replaced by the hook at ``layer`` anyway, so running them would only
        cost time (N full prefixes per call). The originals are always put back.
        """
        root = self.root()
        blocks = self.blocks()
        todo = blocks[: min(layer, len(blocks) - 1)]
        if root is None or not todo:
            yield
            return
        wanted = {id(b) for b in todo}
        places = [
            (parent, key, child)
            for parent in root.modules()
            for key, child in parent._modules.items()
            if child is not None and id(child) in wanted
        ]
        try:
            for parent, key, child in places:
                parent._modules[key] = _PassThrough(child)
            yield
        finally:
            for parent, key, child in places:
                parent._modules[key] = child


class _PassThrough(nn.Module):
    """Stands in for a skipped block: returns its hidden-state argument unchanged.

    Attribute look-ups fall through to the original block (some encoders read e.g. the first
    block's weight dtype).
    """

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_original", original)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return args[0] if args else next(iter(kwargs.values()))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_original"), name)


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
