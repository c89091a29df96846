"""The output boundary: atomic writes, nothing left behind, errors that name the user's path."""

from __future__ import annotations

import os
import stat
import tempfile

import pytest

from dualex.errors import OutputError
from dualex.io import atomic_folder, atomic_write, remove_partial


def test_bytes_text_and_callback_land_whole(tmp_path):
    a = atomic_write(tmp_path / "sub" / "a.bin", b"\x00\x01")
    b = atomic_write(tmp_path / "b.txt", "héllo", encoding="utf-8")
    seen: list[str] = []

    def write(tmp: str) -> None:
        seen.append(tmp)
        with open(tmp, "w") as f:
            f.write("from callback")

    c = atomic_write(str(tmp_path / "c.json"), write)
    assert a.read_bytes() == b"\x00\x01"
    assert b.read_bytes() == "héllo".encode()
    assert c.read_text() == "from callback"
    assert seen[0].endswith(".json") and os.path.dirname(seen[0]) == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt", "c.json", "sub"]


def test_file_gets_the_usual_mode_not_0600(tmp_path):
    umask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "m.txt", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_failing_callback_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")

    def boom(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_unwritable_folder_names_the_given_path(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".out.html.abc.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(OutputError) as info:
        atomic_write(tmp_path / "out.html", "x")
    msg = str(info.value)
    assert repr(str(tmp_path / "out.html")) in msg and "Permission denied" in msg
    assert ".tmp" not in msg


def test_a_file_in_the_way_of_the_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=r"cannot write '.*file/deep/out\.png'.*cannot create"):
        atomic_write(str(blocker / "deep" / "out.png"), b"png")
    with pytest.raises(OutputError, match="it is a folder"):
        atomic_write(tmp_path, b"x")


def test_write_failure_is_an_output_error_and_cleans_up(tmp_path):
    def full(tmp: str) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match=r"out\.parquet.*No space left"):
        atomic_write(tmp_path / "out.parquet", full)
    assert list(tmp_path.iterdir()) == []


def test_remove_partial_clears_only_the_named_targets_leftovers(tmp_path, monkeypatch):
    # a write killed outright: the callback never returns, so its temporary file stays
    seen = []

    class Killed(BaseException):
        pass

    def killed(tmp):
        seen.append(tmp)
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise Killed

    monkeypatch.setattr("pathlib.Path.unlink", lambda self, missing_ok=False: None)  # no cleanup
    for name in ["shard-000001.parquet", "shard-000002.parquet"]:
        with pytest.raises(Killed):
            atomic_write(tmp_path / name, killed)
    monkeypatch.undo()
    (tmp_path / "shard-000001.parquet").write_bytes(b"done")  # a committed file is kept
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == sorted(
        os.path.basename(t) for t in seen
    )
    removed = remove_partial(tmp_path, "shard-000001.*")
    assert [p.name for p in removed] == [os.path.basename(seen[0])]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([os.path.basename(seen[1]), "shard-000001.parquet"])
    assert remove_partial(tmp_path / "missing", "x") == []


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "final"

    def fill(folder, text):
        (folder / "a.txt").write_text(text)
        (folder / "b.txt").write_text(text)

    assert atomic_folder(target, lambda f: fill(f, "one")) == target
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "b.txt"]

    def broken(folder):
        (folder / "a.txt").write_text("two")
        raise KeyboardInterrupt  # interrupted half-way

    with pytest.raises(KeyboardInterrupt):
        atomic_folder(target, broken)
    assert (target / "a.txt").read_text() == "one"  # the previous folder is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]  # no temporary folder left
    atomic_folder(target, lambda f: (f / "c.txt").write_text("three"))
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]  # replaced, not merged
