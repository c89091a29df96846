"""The output boundary: every file dualex writes goes through :func:`atomic_write`.

The data is written to a temporary file next to the target and renamed over it, so a reader (or a
resumed run) never sees a half-written file, and a failure leaves nothing behind. A folder that
cannot be written gives an :class:`~dualex.errors.OutputError` that names the path the caller
gave, not the temporary file. Only a process killed outright (SIGKILL, power loss) can leave a
temporary file behind; :func:`remove_partial` clears those before the work is done again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from dualex.errors import OutputError

__all__ = ["atomic_folder", "atomic_write", "remove_partial"]

Writer = bytes | str | Callable[[str], object]


def _file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives: ``0o666`` minus the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _unwritable(path: str, err: OSError, where: str) -> OutputError:
    reason = err.strerror or type(err).__name__
    return OutputError(
        f"cannot write {path!r}: {where} ({reason}); pass a path in a folder you can write to"
    )


def atomic_write(path: str | os.PathLike[str], data: Writer, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, then a rename.

    Args:
        path: The file to write; missing parent folders are created.
        data: ``bytes``; ``str`` (encoded with ``encoding``); or a callback ``write(tmp_path)``
            that writes the whole file to the temporary path it is given (the temporary name ends
            with the target's suffix, so format-by-suffix writers work).
        encoding: Encoding of ``str`` data.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputError: if the folder cannot be created or written, ``path`` is a folder, or the
            write fails for lack of space; the message names ``path`` as given.
        Exception: whatever the callback raises (nothing is left behind either way).
    """
    shown = os.fspath(path)
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"cannot write {shown!r}: it is a folder; pass a file name")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _unwritable(shown, err, f"cannot create the folder {str(parent)!r}") from err
    if not parent.is_dir():
        raise OutputError(f"cannot write {shown!r}: {str(parent)!r} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(
            dir=parent, prefix=f".{target.name}.", suffix=_tmp_suffix(target)
        )
    except OSError as err:
        raise _unwritable(shown, err, f"the folder {str(parent)!r} is not writable") from err
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            raw = data.encode(encoding) if isinstance(data, str) else bytes(data)
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
        os.chmod(tmp, _file_mode())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise _unwritable(shown, err, "writing failed") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_folder(path: str | os.PathLike[str], fill: Callable[[Path], object]) -> Path:
    """Write a whole folder atomically: ``fill(tmp)`` fills ``.NAME.tmp`` beside it, which then
    replaces ``path``.

    A failure (or an interrupt) inside ``fill`` leaves ``path`` as it was and removes the
    temporary folder; a previous ``path`` is kept until the new one is complete.

    Args:
        path: The folder to write.
        fill: Writes the folder's contents into the (existing, empty) temporary folder it is
            given.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    tmp = target.parent / f".{target.name}{_TMP}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


_TMP = ".tmp"
"""Marks a temporary file: ``.NAME.RANDOM.tmp.SUFFIX`` beside the target ``NAME``."""


def _tmp_suffix(target: Path) -> str:
    # the temporary name keeps the target's suffix, so format-by-suffix writers work
    return f"{_TMP}{target.suffix}"


def remove_partial(folder: str | os.PathLike[str], name: str) -> list[Path]:
    """Remove the temporary files that killed :func:`atomic_write` calls left in ``folder``.

    Call it only for files that no other live process is writing (e.g. the files of a shard this
    process is about to compute again).

    Args:
        folder: The folder the targets live in (a missing folder holds nothing).
        name: The targets' file name, or a glob of names (``shard-000003.*``).

    Returns:
        The removed paths.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    for path in root.glob(f".{name}.*{_TMP}*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
