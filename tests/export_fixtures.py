"""Run folders for the export tests (plain functions; the fixtures in test_export use them)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

__all__ = ["write_run"]


def write_run(
    runs_dir: Path,
    name: str,
    checkpoint: Path,
    dataset: Path | None = None,
    mtime: float | None = None,
) -> Path:
    """A run folder as ``python -m finetune`` leaves it: ``best/`` and ``metrics.json``.

    Args:
        runs_dir: Parent folder of the runs.
        name: The run's folder name.
        checkpoint: Checkpoint folder copied to ``best/``.
        dataset: Dataset root recorded in ``metrics.json`` (no ``metrics.json`` when None).
        mtime: Modification time given to ``best/`` (``latest_run`` orders runs by it).
    """
    run = runs_dir / name
    shutil.copytree(checkpoint, run / "best")
    if dataset is not None:
        (run / "metrics.json").write_text(json.dumps({"dataset": str(dataset)}))
    if mtime is not None:
        os.utime(run / "best", (mtime, mtime))
    return run
