"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Used for every file the toolkit publishes (sidecars, ``detections.json``, reports, metrics):
written to a hidden temporary file in the same folder, flushed to disk, given ordinary
permissions, then renamed over the final name (atomic on one file system).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "EXIT_CANNOT_WRITE",
    "atomic_path",
    "atomic_write_file",
    "atomic_write_json",
    "atomic_write_text",
    "cannot_write",
    "cannot_write_message",
    "publish_mode",
    "temp_prefix",
]

# Exit status of every command (finetune, export, runtime) when the disk is full or a folder
# is not writable: the user's fix is space or permissions, not other input (2) and not a
# failed verification (1).
EXIT_CANNOT_WRITE = 3
_WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}
)


def publish_mode(path: Path, mode: int) -> None:
    """mkstemp/mkdtemp create 0600/0700; give ``path`` ordinary permissions (umask applied)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, mode & ~mask)


def temp_prefix(name: str) -> str:
    """``.<name>.<pid>.``: the hidden temporary names of this process's writes of ``name``.

    The writer's PID in the name is what lets a later run tell the leftovers of a killed
    process (PID no longer alive) from a write in progress
    (``finetune.runs.remove_stale_temp``).
    """
    return f".{name}.{os.getpid()}."


def cannot_write(exc: BaseException) -> bool:
    """True for the OSErrors whose fix is disk space or permissions (exit status 3)."""
    return isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS


def cannot_write_message(exc: OSError, folder: Path | None = None) -> str:
    """One line for a full disk or a permission error: the folder, the reason, the fix.

    The folder is the failed file's; ``folder`` stands in when the error names no file.
    """
    where = Path(exc.filename).parent if exc.filename else folder
    fix = (
        "free disk space"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        else "make the folder writable or choose another output"
    )
    place = f" in {where}" if where is not None else ""
    return f"cannot write{place}: {exc.strerror or exc}; {fix} (exit status {EXIT_CANNOT_WRITE})"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``; on success it is renamed to ``path``.

    For files written by a library (Matplotlib's ``savefig``, Pillow's ``save``, a video
    writer): the temporary name ends with ``path``'s suffix, so format detection by extension
    still works. An exception (or an interrupted generator) leaves the old ``path`` untouched
    and removes the temporary file; a killed process leaves it for the next run's
    ``finetune.runs.remove_stale_temp`` (the PID is in its name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        publish_mode(tmp, 0o666)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write() names no file: name the one we wrote
        raise


def atomic_write_file(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Let ``write(tmp)`` fill a temporary file, then rename it to ``path`` (see atomic_path)."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (creating the folder)."""
    atomic_write_file(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
