"""A model family planted from this one file: a tiny text–image dual encoder that dualex has
never heard of, registered through the public ``dualex.towers.register_family``.

Everything dualex needs to explain it, evaluate it and fine-tune it is declared here: the spec
form ``planted[:FOLDER]``, loading and wrapping, its two towers, where its weights come from, and
its training adapter (forward, saving a folder that ``planted:FOLDER`` reloads). Importing the
module registers the family.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import dualex.towers
from dualex.errors import UnknownModelError
from dualex.towers.base import DualEncoder
from dualex.towers.custom import CustomTower
from dualex.towers.inputs import load_image
from dualex.towers.positions import Geometry, ImagePositions, TextPositions
from dualex.towers.registry import Family
from dualex.towers.trainable import Trainable

WORDS = ["<pad>", "<cls>", "<unk>", "a", "an", "the", "of", "and", "left", "right", "above",
         "below", "red", "green", "blue", "yellow", "circle", "square", "triangle", "star"]  # fmt: skip
"""The vocabulary (ids in order); any other word is ``<unk>``."""

SIDE, PATCH = 16, 4
"""Images are resized to ``SIDE × SIDE`` pixels and cut into ``PATCH × PATCH`` patches."""


class PlantedDual(nn.Module):
    """Two small transformers: words → masked mean; 4 × 4 patches + CLS → CLS row."""

    def __init__(self, d: int = 16, e: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        layer = lambda: nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True)  # noqa: E731
        self.tok = nn.Embedding(len(WORDS), d)
        self.pos = nn.Parameter(torch.randn(32, d) * 0.1)
        self.text_blocks = nn.ModuleList([layer(), layer()])
        self.patch = nn.Conv2d(3, d, PATCH, PATCH)
        self.cls = nn.Parameter(torch.randn(1, 1, d))
        self.image_blocks = nn.ModuleList([layer(), layer()])
        self.text_proj, self.image_proj = nn.Linear(d, e), nn.Linear(d, e)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def encode_text(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = torch.ones_like(ids) if mask is None else mask
        h = self.tok(ids) + self.pos[: ids.shape[1]]
        for block in self.text_blocks:
            h = block(h)
        w = mask.unsqueeze(-1).to(h.dtype)
        return self.text_proj((h * w).sum(1) / w.sum(1))

    def encode_image(self, pixel_values: Tensor) -> Tensor:
        h = self.patch(pixel_values).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1).to(h.dtype), h], 1)
        for block in self.image_blocks:
            h = block(h)
        return self.image_proj(h[:, 0])


def tokenize(text: str) -> tuple[Tensor, TextPositions]:
    """``<cls>`` then one id per word, with each word's character span."""
    words = [(m.group(), m.span()) for m in re.finditer(r"\w+", text)]
    ids = [1] + [WORDS.index(w.lower()) if w.lower() in WORDS else 2 for w, _ in words]
    positions = TextPositions(
        text=text,
        tokens=["<cls>", *(w for w, _ in words)],
        offsets=[None, *(span for _, span in words)],
        special=[True] + [False] * len(words),
    )
    return torch.tensor([ids]), positions


def pixels(image: Any) -> tuple[Tensor, ImagePositions]:
    """``[1, 3, SIDE, SIDE]`` in ``[0, 1]`` and the patch grid (plain resize)."""
    im = load_image(image).convert("RGB")
    geometry = Geometry.resize(im.size, (SIDE, SIDE))
    small = im.resize((SIDE, SIDE))
    x = torch.tensor(list(small.getdata()), dtype=torch.float32).reshape(SIDE, SIDE, 3)
    positions = ImagePositions(grid=(SIDE // PATCH,) * 2, prefix=1, geometry=geometry)
    return (x.permute(2, 0, 1) / 255).unsqueeze(0), positions


def wrap_planted(model: PlantedDual, *, name: str = "planted", weights: str = "unknown",
                 **_: Any) -> DualEncoder:  # fmt: skip
    """The two towers of a :class:`PlantedDual` (the model is not changed)."""
    dtype = lambda: next(model.parameters()).dtype  # noqa: E731

    def text_in(x: Any) -> tuple[dict[str, Tensor], TextPositions]:
        ids, pos = tokenize(x)
        return {"ids": ids}, pos

    def image_in(x: Any) -> tuple[dict[str, Tensor], ImagePositions]:
        px, pos = pixels(x)
        return {"pixel_values": px.to(dtype())}, pos

    text = CustomTower(
        lambda d: model.encode_text(d["ids"]),
        model.text_blocks,
        text_in,
        reference=lambda inp, spec: {"ids": torch.where(inp.data["ids"] == 1, 1, 0)},
        root=model,
        name="planted-text",
    )
    image = CustomTower(
        lambda d: model.encode_image(d["pixel_values"]),
        model.image_blocks,
        image_in,
        modality="image",
        root=model,
        name="planted-image",
    )
    image.patch = PATCH  # pixel-level methods (ig) pool their maps per patch
    return DualEncoder(text, image, similarity="cosine", logit_scale=lambda: float(
        model.logit_scale.detach().exp()), name=name, module=model, weights=weights)  # fmt: skip


class PlantedTrainable(Trainable):
    """Fine-tuning a :class:`PlantedDual` through its own forward."""

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        rows = [tokenize(t)[0][0] for t in texts]
        n = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), n, dtype=torch.long)
        mask = torch.zeros(len(rows), n, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = r, 1
        return ids, mask

    def pixels(self, images: list[Any]) -> Tensor:
        return torch.cat([pixels(im)[0] for im in images])

    def encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.model.encode_text(ids, mask)

    def encode_image(self, pixels: Tensor) -> Tensor:
        return self.model.encode_image(pixels)

    def save(self, folder: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        return folder

    def rewrap(self) -> DualEncoder:
        return wrap_planted(self.model, name=self.name, weights=self.weights)


def load(rest: str, **_: Any) -> DualEncoder:
    """``planted`` (fresh random weights) or ``planted:FOLDER`` (a saved fine-tuned copy)."""
    model = PlantedDual()
    if rest == "planted":
        return wrap_planted(model, name="planted", weights="random")
    path = Path(rest) / "model.safetensors"
    if not path.is_file():
        raise UnknownModelError(f"{path} does not exist; pass a folder written by finetune")
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))
    return wrap_planted(model.eval(), name=f"planted:{rest}", weights="pretrained")


FAMILY = dualex.towers.register_family(
    Family(
        name="planted",
        summary="a tiny dual encoder planted by the tests",
        prefixes=("planted",),
        spec_forms={"planted[:FOLDER]": "the tests' planted dual encoder (FOLDER: fine-tuned)"},
        can_wrap=lambda obj: isinstance(obj, PlantedDual),
        wrap=lambda obj, parts, name=None, **kw: wrap_planted(obj, name=name or "planted"),
        load=load,
        requires=("torch",),
        weights_of=lambda rest: "random" if rest == "planted" else "pretrained",
        trainable=lambda encoder, module, name: PlantedTrainable(
            module, None, None, name, weights=str(encoder.weights)
        ),
    )
)
