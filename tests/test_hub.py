"""Downloads from an unreachable host fail at once with dualex's message, not after retries."""

from __future__ import annotations

import socket

import pytest

import dualex
from dualex import hub
from dualex.errors import UnknownModelError


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def test_reachable_answers_for_open_and_closed_ports():
    hub.reachable.cache_clear()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        assert hub.reachable("127.0.0.1", server.getsockname()[1])
    finally:
        server.close()
    assert not hub.reachable("127.0.0.1", _closed_port())
    assert hub.reachable(None)  # no known host: left to the library


def test_local_only_follows_offline_switch_and_reachability(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.local_only()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub, "reachable", lambda host, port=443: False)
    assert hub.local_only()
    monkeypatch.setattr(hub, "reachable", lambda host, port=443: True)
    assert not hub.local_only()


def test_openclip_tag_without_weights_fails_before_any_download(monkeypatch, tmp_path):
    pytest.importorskip("open_clip")
    import open_clip

    import dualex.towers.openclip as oc

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(oc, "reachable", lambda host, port=443: False)

    def no_download(*args, **kwargs):
        raise AssertionError("open_clip was asked to download")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", no_download)
    with pytest.raises(UnknownModelError, match=r"not available locally.*cannot be reached"):
        dualex.load("openclip:ViT-B-32/laion2b_s34b_b79k", cache_dir=str(tmp_path))


def test_hf_loads_local_only_when_the_hub_is_unreachable(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "reachable", lambda host, port=443: False)
    seen = {}

    import transformers

    def config(source, local_files_only=False, **kw):
        seen["hf"] = local_files_only
        raise OSError("not cached")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", config)
    with pytest.raises(UnknownModelError, match="cannot load 'hf:org/none'"):
        dualex.load("hf:org/none")
    assert seen["hf"] is True
