"""Whether model downloads can work from here, decided once and fast.

The hub clients retry an unreachable host for about a minute before they give up; dualex asks
the network once (a TCP connection with a short timeout, answer cached per host) and loads with
``local_files_only`` when the host cannot be reached, so a missing model fails in seconds with
dualex's own message.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

__all__ = ["hf_host", "local_only", "reachable"]

TIMEOUT_S = 3.0
"""Seconds to wait for a TCP connection to the download host."""


@functools.lru_cache(maxsize=16)
def reachable(host: str | None, port: int = 443) -> bool:
    """Whether a TCP connection to ``host:port`` opens within :data:`TIMEOUT_S`.

    ``None`` (no known host) counts as reachable: the download is left to the library.
    """
    if host is None:
        return True
    try:
        socket.create_connection((host, port), timeout=TIMEOUT_S).close()
    except OSError:
        return False
    return True


def hf_host() -> str | None:
    """Host of the Hugging Face endpoint (``HF_ENDPOINT`` or huggingface.co)."""
    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname


def local_only() -> bool:
    """True when Hugging Face downloads cannot work: ``HF_HUB_OFFLINE=1`` or the hub unreachable."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return True
    return not reachable(hf_host())
