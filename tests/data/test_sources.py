"""--data specs."""

from __future__ import annotations

import pytest

from dualex.data.sources import parse_data_spec
from dualex.errors import SettingError


def test_specs():
    s = parse_data_spec("synthetic:seed=3,n=2,domain=textured")
    assert s.kind == "synthetic" and s.options == {"seed": 3, "n": 2, "domain": "textured"}
    samples = list(s.samples())
    assert len(samples) == 2 and samples[0].meta["domain"] == "textured"
    assert parse_data_spec("coco:/img,/ann").args == ("/img", "/ann")
    assert parse_data_spec("flickr30k:/root,test").args == ("/root", "test")


@pytest.mark.parametrize("spec", ["nope:x", "coco:/only-one", "hnc", "synthetic:seed"])
def test_bad_specs(spec):
    with pytest.raises(SettingError):
        parse_data_spec(spec)
