"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Used for every file the toolkit publishes (sidecars, ``detections.json``, reports, metrics,
pictures, annotated images and video): written to a hidden temporary file in the same folder,
checked to be complete, flushed to disk, given ordinary permissions, then renamed over the
final name (atomic on one file system).

"Checked to be complete" is not a formality: a library that writes from C may return after a
short write. Measured with Pillow 13 under ``RLIMIT_FSIZE`` 4 KiB (the way a full disk fails a
write): ``Image.save("a.jpg")`` of a 42 KB JPEG returns normally and leaves 4096 bytes, while
PNG raises (it goes through Python's buffered writer). OpenCV's video writer reports no write
error at all. So encoded files are made in memory and written with a size check
(:func:`atomic_write_encoded`, :func:`atomic_write_bytes`), and files only a library can write
are read back by a ``check`` before the rename (:func:`atomic_path`).
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "EXIT_CANNOT_WRITE",
    "IncompleteWriteError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_encoded",
    "atomic_write_figure",
    "atomic_write_file",
    "atomic_write_json",
    "atomic_write_text",
    "cannot_write",
    "cannot_write_message",
    "json_bytes",
    "publish_mode",
    "stage_bytes",
    "staged_path",
    "temp_prefix",
    "write_checked",
]

# Exit status of every command (finetune, export, runtime) when the disk is full or a folder
# is not writable: the user's fix is space or permissions, not other input (2) and not a
# failed verification (1).
EXIT_CANNOT_WRITE = 3
_WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}
)


class IncompleteWriteError(OSError):
    """A file came out shorter or unreadable although its writer reported success.

    An ``OSError`` with ``errno.ENOSPC``: the usual cause is a full disk or a file-size limit,
    so the commands report it like one (exit status 3) and publish nothing under the name.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(errno.ENOSPC, f"incomplete write ({problem})", str(path))


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
def staged_path(path: str | Path, check: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``, made ready to be renamed to it.

    On success the file has been checked (``check(tmp)`` must raise an ``OSError``, e.g.
    :class:`IncompleteWriteError`, if it is not complete: that is how a writer that hides its
    write errors is kept from publishing a truncated file), flushed to disk and given ordinary
    permissions, but not renamed: :func:`atomic_path` renames one file, ``export.files``
    several files as one step. The temporary name ends with ``path``'s suffix, so a library's
    format detection by extension still works. An exception removes the file (and names
    ``path`` in an ``OSError`` that names none); a killed process leaves it for the next run's
    ``finetune.runs.remove_stale_temp`` (the PID is in its name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if check is not None:
            check(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        publish_mode(tmp, 0o666)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write() names no file: name the one we wrote
        raise


@contextmanager
def atomic_path(path: str | Path, check: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path (see :func:`staged_path`); on success it is renamed to ``path``.

    For files only a library can write (a video writer, ``save_pretrained``). An exception
    (or an interrupted generator) leaves the old ``path`` untouched.
    """
    with staged_path(path, check) as tmp:
        yield tmp
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_file(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Let ``write(tmp)`` fill a temporary file, then rename it to ``path`` (see
    :func:`atomic_path`, which also takes a read-back ``check``). Prefer
    :func:`atomic_write_encoded` where the writer can write to a file object."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_checked(tmp: Path, data: bytes, path: str | Path | None = None) -> None:
    """Write ``data`` to ``tmp`` and check that all of it reached the file (no rename, no
    fsync: for files inside a folder that is itself published atomically). ``path``: the
    name to give in the error, default ``tmp``."""
    path = tmp if path is None else path
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        size = os.fstat(f.fileno()).st_size
    if size != len(data):
        raise IncompleteWriteError(path, f"{size} of {len(data)} bytes written")


def stage_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path`` (size checked, flushed) and return
    it, not renamed: for publishing several files as one step."""
    with staged_path(path) as tmp:
        write_checked(tmp, data, path)
    return tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; the file's size is checked before the rename."""
    with atomic_path(path) as tmp:
        write_checked(tmp, data, path)
    return Path(path)


def atomic_write_encoded(path: str | Path, encode: Callable[[io.BytesIO], None]) -> Path:
    """Let ``encode(buffer)`` write the whole file into memory, then publish it with
    :func:`atomic_write_bytes`: for Pillow's ``save`` and Matplotlib's ``savefig`` (pass the
    format explicitly, a buffer has no suffix)."""
    buffer = io.BytesIO()
    encode(buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_write_figure(path: str | Path, figure: Any, dpi: float | None = None) -> Path:
    """Publish a Matplotlib ``figure`` rendered in memory, in the format of ``path``'s suffix
    (no Matplotlib import here: the figure brings its own ``savefig``)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    return atomic_write_encoded(path, lambda buffer: figure.savefig(buffer, format=fmt, dpi=dpi))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (creating the folder)."""
    atomic_write_bytes(path, text.encode())


def json_bytes(data: Any) -> bytes:
    """The toolkit's JSON files: indented, one trailing newline, UTF-8."""
    return (json.dumps(data, indent=2) + "\n").encode()


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, json_bytes(data))
