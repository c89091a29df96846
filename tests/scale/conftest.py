"""Scale tests: one short scratch folder per module (Ray's sockets need short paths)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def short_dir():
    """A short folder under /tmp (Ray's Unix socket paths must stay under 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="dxs-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)
