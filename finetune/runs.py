"""Run folders: naming, finding the newest one, and atomic writes inside them."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from runtime.files import atomic_write_json, publish_mode

__all__ = [
    "BEST_DIR",
    "RunNotFoundError",
    "atomic_write_dir",
    "atomic_write_json",
    "best_checkpoint",
    "latest_run",
    "new_run_dir",
]

BEST_DIR = "best"


class RunNotFoundError(FileNotFoundError):
    """No finished run (with a best checkpoint) where one was expected."""


def new_run_dir(runs_dir: str | Path, name: str | None = None) -> Path:
    """``runs/<name>``, or ``runs/<YYYYmmdd-HHMMSS>`` made unique."""
    root = Path(runs_dir)
    base = name or datetime.now().strftime("%Y%m%d-%H%M%S")
    path, k = root / base, 2
    while name is None and path.exists():
        path, k = root / f"{base}-{k}", k + 1
    return path


def best_checkpoint(run_dir: str | Path) -> Path:
    """The best checkpoint of a run, recovering from a swap interrupted half-way."""
    run = Path(run_dir)
    for candidate in (run / BEST_DIR, run / f"{BEST_DIR}.prev"):
        if (candidate / "config.json").is_file():
            return candidate
    raise RunNotFoundError(f"{run}: no best checkpoint (expected {run / BEST_DIR}/config.json)")


def latest_run(runs_dir: str | Path = "runs") -> Path:
    """The run folder whose best checkpoint was written last."""
    root = Path(runs_dir)
    runs = []
    for child in root.iterdir() if root.is_dir() else []:
        try:
            runs.append((best_checkpoint(child).stat().st_mtime, child))
        except RunNotFoundError:
            continue
    if not runs:
        raise RunNotFoundError(
            f"no runs with a best checkpoint under {root.resolve()}; train one with "
            "`python -m finetune` or pass --checkpoint DIR"
        )
    return max(runs)[1]


def atomic_write_dir(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Fill a temporary folder with ``write(tmp)`` then swap it in for ``path``.

    The old folder is renamed to ``<path>.prev`` for the instant of the swap, so a crash at
    any moment leaves a complete old or new folder (``best_checkpoint`` looks at both).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    prev = path.with_name(f"{path.name}.prev")
    try:
        write(tmp)
        publish_mode(tmp, 0o777)
        if path.exists():
            if prev.exists():
                shutil.rmtree(prev)
            os.replace(path, prev)
        os.replace(tmp, path)
        shutil.rmtree(prev, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path
