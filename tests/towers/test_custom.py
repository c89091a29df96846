"""A user-built dual encoder (plain torch modules, nn.TransformerEncoderLayer) through CustomTower."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dualex
from dualex.errors import InvalidInputError
from dualex.towers.custom import CustomTower
from dualex.towers.positions import Geometry, ImagePositions, TextPositions

WORDS = ["<pad>", "<cls>", "red", "blue", "circle", "star", "a", "and"]


class TinyDual(nn.Module):
    def __init__(self, d: int = 16, e: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.tok = nn.Embedding(len(WORDS), d)
        self.pos = nn.Parameter(torch.randn(12, d) * 0.1)
        layer = lambda: nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True)  # noqa: E731
        self.text_blocks = nn.ModuleList([layer(), layer()])
        self.patch = nn.Conv2d(3, d, 4, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, d))
        self.image_blocks = nn.ModuleList([layer(), layer()])
        self.tp, self.ip = nn.Linear(d, e), nn.Linear(d, e)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.tok(ids) + self.pos[: ids.shape[1]]
        for b in self.text_blocks:
            h = b(h)
        return self.tp(h.mean(1))

    def encode_image(self, px: torch.Tensor) -> torch.Tensor:
        h = self.patch(px).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], 1)
        for b in self.image_blocks:
            h = b(h)
        return self.ip(h[:, 0])


def _text(x: str):
    words = x.split()
    ids = torch.tensor([[1] + [WORDS.index(w) for w in words]])
    offsets, start = [None], 0
    for w in words:
        i = x.index(w, start)
        offsets.append((i, i + len(w)))
        start = i + len(w)
    pos = TextPositions(
        text=x, tokens=["<cls>", *words], offsets=offsets, special=[True] + [False] * len(words)
    )
    return {"ids": ids}, pos


def _image(x: torch.Tensor):
    geo = Geometry(original_size=(16, 16), input_size=(16, 16), scale=(1.0, 1.0))
    return {"px": x.unsqueeze(0)}, ImagePositions(grid=(4, 4), prefix=1, geometry=geo)


@pytest.fixture(scope="module")
def custom():
    m = TinyDual().double().eval()
    text = CustomTower(
        lambda d: m.encode_text(d["ids"]),
        m.text_blocks,
        _text,
        reference=lambda inp, spec: {"ids": torch.where(inp.data["ids"] == 1, 1, 0)},
        root=m,
        name="tiny-text",
    )
    image = CustomTower(
        lambda d: m.encode_image(d["px"]),
        m.image_blocks,
        _image,
        modality="image",
        root=m,
        name="tiny-image",
    )
    return dualex.DualEncoder(text, image, similarity="cosine", name="tiny-dual"), m


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_custom_towers_explain_exactly(custom, layer):
    model, m = custom
    px = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ex = dualex.explain(model, "a red circle and a blue star", px, layers=layer)
    assert ex.matrix.shape == (8, 17)  # <cls> + 7 words, CLS + 16 patches
    assert ex.completeness.relative_error <= 1e-3, ex.completeness
    with torch.no_grad():
        et = m.encode_text(_text("a red circle and a blue star")[0]["ids"])[0]
        ei = m.encode_image(px.unsqueeze(0))[0]
    assert ex.score == pytest.approx(float(torch.cosine_similarity(et, ei, dim=0)), abs=1e-12)
    rev = dualex.explain(
        model,
        "a red circle and a blue star",
        px,
        layers=layer,
        steps=ex.completeness.steps,
        rule=ex.completeness.rule,  # adaptive: the nested rule it stopped at
        mode="reverse",
    )
    assert torch.allclose(rev.matrix, ex.matrix, atol=1e-12, rtol=0)
    assert torch.backends.mha.get_fastpath_enabled(), "fast-path setting restored"


def test_blocks_are_put_back_after_a_suffix_call(custom):
    model, m = custom
    before = list(m.text_blocks)
    px = torch.zeros(3, 16, 16, dtype=torch.float64)
    dualex.explain(model, "a red circle", px, layers=2, steps=2)
    assert all(a is b for a, b in zip(before, m.text_blocks, strict=True))


def test_integer_inputs_need_a_reference():
    m = TinyDual()
    tower = CustomTower(lambda d: m.encode_text(d["ids"]), m.text_blocks, _text)
    with pytest.raises(InvalidInputError, match="reference"):
        tower.reference_input(tower.prepare("a red circle"))
