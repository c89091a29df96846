"""Scale tests: one short scratch folder per module (Ray's sockets need short paths).

The runner knows no task but ``explain`` and ``index`` until a package registers its own; these
tests run evaluation jobs, so they import :mod:`dualex.evaluate.tasks`, which registers them.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

import dualex.evaluate.tasks  # noqa: F401  (registers the evaluation job kinds)


@pytest.fixture(scope="module")
def short_dir():
    """A short folder under /tmp (Ray's Unix socket paths must stay under 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="dxs-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)
