"""Tasks know no method by name: what a method needs (its settings, its text input, seeded
noise) is declared on the method, and a planted method gets exactly that."""

from __future__ import annotations

import pytest

from dualex.data.sources import parse_data_spec
from dualex.evaluate.methods import METHODS, Method
from dualex.evaluate.tasks import EvalSettings, common
from dualex.evaluate.tasks.common import base_row, mention_attributions, variants


@pytest.fixture
def planted(monkeypatch):
    """A first-order method that explains each phrase alone, takes the seed and the masking of
    the run, draws seeded noise, and records what it was asked."""
    calls: list[dict] = []

    def run(model, image, texts, **options):
        calls.append({"texts": list(texts), **options})
        return [f"attribution of {t}" for t in texts]

    method = Method(
        "planted",
        1,
        "a planted method",
        run=run,
        text_input="span",
        settings=("seed", "text_absent"),
        seeded=True,
    )
    real = common.get
    monkeypatch.setitem(METHODS, "planted", "random_map")  # a known name for the settings
    monkeypatch.setattr(common, "get", lambda name: method if name == "planted" else real(name))
    return calls


def test_options_and_variants_come_from_the_declarations(planted):
    s = EvalSettings(methods=("planted", "ig"), text="both", seed=4, protocol="fixlip")
    assert s.options("planted") == {"seed": 4, "text_absent": "attention"}
    assert s.options("ig") == {}
    assert s.options("dualex") == {"layers": None, "steps": None}
    got = [(v.label, v.text_input) for v in variants(s)]
    assert got == [("planted", "span"), ("ig", "caption"), ("ig-span", "span")]
    assert "budget" in s.unused(), "no chosen method takes a budget: the job does not record it"


def test_a_seeded_method_gets_one_key_per_mention(planted):
    sample = next(iter(parse_data_spec("synthetic:seed=901,n=1").samples()))
    s = EvalSettings(methods=("planted",), seed=2)
    (variant,) = variants(s)
    found = mention_attributions(None, [(0, sample)], variant, s)
    sid = base_row(sample, 0)["sample_id"]
    phrases = [sample.caption[slice(*m.span)] for m in sample.mentions]
    assert planted == [
        {
            "texts": phrases,
            "seed": 2,
            "text_absent": "reference",
            "seeds": [f"{sid}/{k}" for k in range(len(phrases))],
        }
    ]
    assert [a for a, _ in found.values()] == [f"attribution of {p}" for p in phrases]
