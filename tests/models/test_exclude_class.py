"""The recipe's --exclude-class: a world without one shape or colour."""

from __future__ import annotations

import re

import pytest

from dualex.data.synthetic import generate
from dualex.errors import SettingError
from dualex.models.train_builtin import TrainConfig, main, world_config


@pytest.mark.parametrize(("name", "field"), [("star", "shapes"), ("blue", "colours")])
def test_excluded_class_is_never_shown_or_named(name, field):
    cfg = world_config(name)
    assert (
        name not in getattr(cfg, field)
        and len(getattr(cfg, field)) == len(getattr(world_config(), field)) - 1
    )
    for s in generate(40, seed=3, config=cfg):
        texts = [s.caption] + [n.caption for n in s.negatives]
        assert not any(re.search(rf"\b{name}", t) for t in texts)
        key = "shape" if field == "shapes" else "colour"
        assert all(o[key] != name for o in s.meta["objects"])


def test_unknown_exclusion_is_refused():
    with pytest.raises(SettingError, match="cannot exclude 'pink'"):
        world_config("pink")
    assert TrainConfig().exclude_class == ""


def test_cli_flag_reaches_the_config(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr("dualex.models.train_builtin.train",
                        lambda out, tc, resume=False, **_: seen.setdefault("tc", tc))  # fmt: skip
    main(["--out", str(tmp_path), "--exclude-class", "heart"])
    assert seen["tc"].exclude_class == "heart"
