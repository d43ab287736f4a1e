"""Run folders: naming, finding the newest one, atomic writes inside them, and resuming."""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from runtime.files import (
    IncompleteWriteError,
    atomic_write_json,
    atomic_write_text,
    publish_mode,
    temp_prefix,
)

__all__ = [
    "BEST_DIR",
    "BEST_SCORE_FILE",
    "ResumeError",
    "RunNotFoundError",
    "atomic_write_dir",
    "atomic_write_json",
    "atomic_write_text",
    "best_checkpoint",
    "checkpoint_problems",
    "checkpoints",
    "last_complete_checkpoint",
    "latest_run",
    "new_run_dir",
    "recorded_best",
    "remove_incomplete_checkpoints",
    "remove_stale_temp",
    "resolve_resume",
    "temp_prefix",
]

logger = logging.getLogger("finetune")

BEST_DIR = "best"
# Written inside best/ together with the weights (one atomic swap), so the score that a resume
# must beat is always the score of the weights that are actually there.
BEST_SCORE_FILE = "best_score.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


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


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where that is not available (other systems, old kernels or C libraries,
    file systems without it): the caller then falls back to two renames.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _check_written(folder: Path) -> None:
    """Read back what a library wrote into ``folder`` before it is published: every JSON file
    parses and every safetensors file is as long as its header says. A writer that returned
    after a short write (see runtime.files) raises :class:`IncompleteWriteError` here."""
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".json":
            try:
                json.loads(path.read_bytes())
            except ValueError:
                raise IncompleteWriteError(path, "not complete JSON") from None
        elif path.suffix == ".safetensors" and _safetensors_truncated(path):
            raise IncompleteWriteError(path, "shorter than its header says")


def atomic_write_dir(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Fill a temporary folder with ``write(tmp)`` then swap it in for ``path``.

    What ``write`` left is read back first (:func:`_check_written`). On Linux the two folders
    are exchanged in one step (``renameat2``), so ``path`` is never
    absent, and a crash at any moment leaves the complete old or new folder there (plus a
    hidden ``.<name>.<pid>.*`` folder that the next run removes). Elsewhere the old folder is
    renamed to ``<path>.prev`` for the instant of the swap (``best_checkpoint`` looks at both).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), dir=path.parent))
    prev = path.with_name(f"{path.name}.prev")
    try:
        write(tmp)
        _check_written(tmp)
        publish_mode(tmp, 0o777)
        if path.exists() and _exchange(tmp, path):
            pass  # tmp now holds the old folder: removed below
        else:
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


# ``.<name>.<pid>.<8 random>`` and, for files written by a library, the final suffix again
# (``runtime.files.atomic_write_file``).
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[a-z0-9_]{8}(?:\.[A-Za-z0-9]{1,8})?$")
# Written by versions before the PID was in the name (run folders: ``.best.*``,
# ``.metrics.json.*``; the dataset cache: ``.shapes-*``): removed once they are an hour old.
_LEGACY_TEMP_RE = re.compile(
    r"^\.(?P<name>best|metrics\.json|shapes|pretrain|roboflow-.+)[.-][a-z0-9_]{8}$"
)
LEGACY_TEMP_AGE_S = 3600.0


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else (EPERM)
    return True


def remove_stale_temp(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove what interrupted atomic writes of earlier processes left in ``folder``.

    A ``.<name>.<pid>.<random>`` entry is removed only when no process ``pid`` is alive, so
    a write in progress (this process or another) is never touched; a reused PID only keeps
    a leftover longer. ``best.prev`` is removed when ``best/`` is complete beside it (a swap
    interrupted after its new folder was in place). ``name`` restricts this to the temporary
    files of that one name. One log line per removal; returns the removed paths.
    """
    folder = Path(folder)
    removed = []
    now = time.time()
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = _TEMP_RE.match(child.name)
        if match:
            if (name is not None and match.group("name") != name) or _alive(
                int(match.group("pid"))
            ):
                continue
            why = f"process {match.group('pid')} is gone"
        elif (legacy := _LEGACY_TEMP_RE.match(child.name)) and name in (
            None,
            legacy.group("name"),
        ):
            try:
                age = now - child.lstat().st_mtime
            except OSError:
                continue
            if age < LEGACY_TEMP_AGE_S:
                continue
            why = f"untouched for {age / 3600:.1f} h"
        elif (
            name is None
            and child.name == f"{BEST_DIR}.prev"
            and (folder / BEST_DIR / "config.json").is_file()
        ):
            why = f"{BEST_DIR}/ is complete"
        else:
            continue
        logger.info("removing %s, left by an interrupted write (%s)", child, why)
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
        removed.append(child)
    return removed


def recorded_best(run_dir: str | Path) -> dict[str, Any] | None:
    """The score record of the run's best checkpoint (``{"map": ..., "step": ...}``), or None.

    Read from ``best/best_score.json`` (written in the same swap as the weights); runs made
    before that file existed fall back to ``metrics.json``'s ``best``. None when the run has
    no best checkpoint, or no readable score for it.
    """
    run = Path(run_dir)
    try:
        best = best_checkpoint(run)
    except RunNotFoundError:
        return None
    for path, key in ((best / BEST_SCORE_FILE, None), (run / "metrics.json", "best")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        record = data.get(key) if key and isinstance(data, dict) else data
        if isinstance(record, dict) and isinstance(record.get("map"), (int, float)):
            return record
    return None


class ResumeError(ValueError):
    """``--resume_from_checkpoint`` names nothing that can be resumed; the message says why."""


def checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """The Trainer's ``checkpoint-N`` folders of a run, by step (complete or not)."""
    run = Path(run_dir)
    found = []
    for child in run.iterdir() if run.is_dir() else []:
        match = CHECKPOINT_RE.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def _safetensors_truncated(path: Path) -> bool:
    """True when a safetensors file is shorter than its own header says (an interrupted write)."""
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        size = path.stat().st_size
    except (OSError, ValueError, struct.error):
        return True
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return size < 8 + length + max(ends, default=0)


def checkpoint_problems(folder: str | Path) -> list[str]:
    """What a Trainer checkpoint folder lacks to be resumed from (empty: complete).

    The Trainer writes the weights first and ``trainer_state.json`` last, so a save that a
    kill or a full disk interrupted lacks the state file, or has truncated weights.
    """
    folder = Path(folder)
    problems = []
    if not (folder / "config.json").is_file():
        problems.append("config.json")
    weights = folder / "model.safetensors"
    if weights.is_file():
        if _safetensors_truncated(weights):
            problems.append("a complete model.safetensors (truncated)")
    elif not any(
        (folder / name).is_file() for name in ("model.safetensors.index.json", "pytorch_model.bin")
    ):
        problems.append("model.safetensors")
    state = folder / "trainer_state.json"
    if not state.is_file():
        problems.append("trainer_state.json")
    else:
        try:
            ok = "global_step" in json.loads(state.read_text())
        except (OSError, ValueError, TypeError):
            ok = False
        if not ok:
            problems.append("a complete trainer_state.json (truncated)")
    return problems


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` of ``run_dir`` that has every file a resume needs."""
    complete = [path for _, path in checkpoints(run_dir) if not checkpoint_problems(path)]
    return complete[-1] if complete else None


def resolve_resume(value: str, output_dir: str | Path | None) -> tuple[Path, Path]:
    """``(run folder, checkpoint folder)`` for ``--resume_from_checkpoint VALUE``.

    ``VALUE`` is a ``checkpoint-N`` folder (used as given; its parent is the run folder unless
    ``output_dir`` says otherwise), a run folder, or ``true`` (the run folder is
    ``output_dir``). For a run folder or ``true`` the newest *complete* checkpoint is used and
    any newer incomplete one is named in the log.

    Raises:
        ResumeError: the folder does not exist, is an incomplete checkpoint (the message
            names what is missing and the complete checkpoint to use instead, if any), or the
            run has no complete checkpoint.
    """
    out = Path(output_dir) if output_dir is not None else None
    if value.strip().lower() == "true":
        if out is None:
            raise ResumeError(
                "--resume_from_checkpoint true resumes the run in --output_dir: pass "
                "--output_dir runs/<name>, or pass the run folder or its checkpoint-N folder "
                "to --resume_from_checkpoint"
            )
        source = out
    else:
        source = Path(value)
    if not source.is_dir():
        raise ResumeError(f"cannot resume from {source}: no such folder")

    is_checkpoint = CHECKPOINT_RE.match(source.name) or any(
        (source / name).is_file() for name in ("config.json", "trainer_state.json")
    )
    if is_checkpoint:
        run_dir = out if out is not None else source.parent
        problems = checkpoint_problems(source)
        if problems:
            instead = last_complete_checkpoint(source.parent)
            hint = (
                f"resume from {instead} instead (the last complete checkpoint)"
                if instead is not None
                else f"{source.parent} has no complete checkpoint: start a new run"
            )
            raise ResumeError(
                f"checkpoint {source} is incomplete (missing {', '.join(problems)}: its save "
                f"was interrupted); {hint}"
            )
        return run_dir, source

    found = checkpoints(source)
    if not found:
        raise ResumeError(f"cannot resume from {source}: it has no checkpoint-N folder")
    chosen = last_complete_checkpoint(source)
    if chosen is None:
        raise ResumeError(
            f"cannot resume from {source}: none of its checkpoints is complete "
            f"({', '.join(p.name for _, p in found)}: saves interrupted); start a new run"
        )
    newest = found[-1][1]
    if newest != chosen:
        logger.warning(
            "%s is incomplete (missing %s): resuming from %s, the last complete checkpoint",
            newest,
            ", ".join(checkpoint_problems(newest)),
            chosen,
        )
    else:
        logger.info("resuming from %s, the last checkpoint of %s", chosen, source)
    return (out if out is not None else source), chosen


def remove_incomplete_checkpoints(run_dir: str | Path, after_step: int) -> list[Path]:
    """Delete incomplete ``checkpoint-N`` folders with ``N > after_step``; one log line each.

    A resume from step ``after_step`` rewrites them anyway, and left in place they would rank
    as the newest checkpoint in the Trainer's rotation (which would then delete the fresh
    ones).
    """
    removed = []
    for step, path in checkpoints(run_dir):
        if step > after_step and (problems := checkpoint_problems(path)):
            logger.info("removing incomplete %s (missing %s)", path, ", ".join(problems))
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
