"""The concept row of the figure: the whole map, then the top concepts' maps on one range."""

from __future__ import annotations

import torch

from dualex import Concepts
from dualex.viz.concepts import concept_figure
from dualex.viz.figure import save_figure


def test_concept_row(tiny_ex, tmp_path):
    E = tiny_ex.projections[0].shape[0]
    g = torch.Generator().manual_seed(0)
    model = type("M", (), {})()  # the dictionary only needs the model's name and modalities
    model.name, model.module = tiny_ex.model, None
    model.tower_a = type("T", (), {"modality": "text"})()
    model.tower_b = type("T", (), {"modality": "image"})()
    names = ["red", "circle", "blue", "square", "and"]
    c = Concepts.from_directions(
        model, torch.randn(5, E, generator=g), torch.randn(E, 5, generator=g), topk=2, names=names
    )
    split = tiny_ex.concept_split(c)
    fig = concept_figure(tiny_ex, c, n=3)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 4 and titles[0].startswith("all concepts")
    for k, t in enumerate(titles[1:]):
        assert t.startswith(f"#{int(split.concepts[k])} {split.names[k]}")
        assert f"{float(split.shares[k]):+.3g}" in t
    path = save_figure(fig, tmp_path / "row.png")
    assert path.stat().st_size > 1000
