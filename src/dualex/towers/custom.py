"""Towers for any differentiable model: give the encode function, the blocks and a preprocessor.

tower = dualex.towers.custom.CustomTower(
    encode=lambda data: my_model.encode_text(data["ids"]),      # -> [B, E]
    blocks=list(my_model.text_blocks),                          # layer L = input of block L
    preprocess=my_preprocess,                                   # x -> (data, positions)
    reference=lambda inp, spec: {"ids": torch.zeros_like(inp.data["ids"])},
)
model = dualex.DualEncoder(text_tower, image_tower, similarity="cosine")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from dualex.errors import InvalidInputError
from dualex.towers.base import HookTower, TowerInput
from dualex.towers.positions import Positions


class CustomTower(HookTower):
    """A :class:`HookTower` from user callables.

    Args:
        encode: The model's own forward, ``data -> [B, E]`` (``data`` values have a batch dim).
        blocks: The blocks in order; the hidden state entering ``blocks[L]`` is layer ``L``.
        preprocess: ``x -> (data, positions)`` for one raw input (batch of 1).
        reference: ``(inp, spec) -> data`` of the reference input; default: all-zero tensors of
            the same shapes (suitable for float inputs such as pixels; give one for token ids).
        modality: ``"text"`` or ``"image"``.
        layout: How a block's hidden-state argument is laid out: ``"bsd"``, ``"sbd"`` or ``"bchw"``.
        root: Module containing the blocks (lets dualex skip blocks before the split layer).
        name: Display name.
    """

    def __init__(
        self,
        encode: Callable[[dict[str, Tensor]], Tensor],
        blocks: Sequence[nn.Module],
        preprocess: Callable[[Any], tuple[dict[str, Tensor], Positions]],
        reference: Callable[[TowerInput, Any], dict[str, Tensor]] | None = None,
        *,
        modality: str = "text",
        layout: str = "bsd",
        root: nn.Module | None = None,
        name: str = "custom",
    ) -> None:
        if not blocks:
            raise InvalidInputError("a custom tower needs at least one block to split at")
        self._encode, self._blocks = encode, list(blocks)
        self._preprocess, self._reference = preprocess, reference
        self.modality, self.layout, self.name = modality, layout, name
        self._root = root

    def blocks(self) -> list[nn.Module]:
        return self._blocks

    def root(self) -> nn.Module | None:
        return self._root

    def encode(self, data: dict[str, Tensor]) -> Tensor:
        return self._encode(data)

    def prepare(self, x: Any) -> TowerInput:
        if isinstance(x, TowerInput):
            return x
        data, positions = self._preprocess(x)
        return TowerInput(data=data, positions=positions, raw=x)

    def reference_input(self, inp: TowerInput, spec: Any = None) -> TowerInput:
        if self._reference is not None:
            data = self._reference(inp, spec)
        elif all(v.is_floating_point() for v in inp.data.values()):
            data = {k: v.new_zeros(v.shape) for k, v in inp.data.items()}
        else:
            raise InvalidInputError(
                f"the {self.name} tower has integer inputs; pass reference=(inp, spec) -> data "
                "to CustomTower (e.g. pad-token ids)"
            )
        return TowerInput(data=data, positions=inp.positions, raw=None)
