"""Real write faults for subprocess tests: a file-size limit makes every large write fail.

``RLIMIT_FSIZE`` applies to root too (chmod does not stop root from writing, and tests often
run as root), and a write past it fails with EFBIG "File too large", the same code path as a
full disk (ENOSPC) in our error handling. SIGXFSZ is ignored so the write returns the error
instead of killing the process.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["file_size_limit", "run_python"]

ROOT = Path(__file__).resolve().parents[1]


def file_size_limit(max_bytes: int) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.run``: no file may grow past ``max_bytes``."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


def run_python(
    args: Sequence[str], *, limit: int | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in a real process in the repository root, output captured; with
    ``limit``, no file it writes may grow past ``limit`` bytes (:func:`file_size_limit`)."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        preexec_fn=file_size_limit(limit) if limit else None,
    )
