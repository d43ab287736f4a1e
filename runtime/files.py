"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Used for every file the toolkit publishes (sidecars, ``detections.json``, reports, metrics):
written to a hidden temporary file in the same folder, flushed to disk, given ordinary
permissions, then renamed over the final name (atomic on one file system).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_json", "atomic_write_text", "publish_mode", "temp_prefix"]


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


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        publish_mode(Path(tmp), 0o666)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
