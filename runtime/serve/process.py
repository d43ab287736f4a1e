"""Run ``python -m runtime.serve`` as a child process on a free 127.0.0.1 port, bounded in time.

For the tests, the benchmark and notebooks: :func:`server_process` starts the server, waits
until ``/v2/health/ready`` answers (or the process dies, or ``start_s`` passes: then the log
tail is in the error), yields a :class:`ServerProcess`, and on exit stops it with SIGTERM (the
graceful path), killing it only if it has not exited after ``stop_s``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServerProcess", "free_port", "server_process"]

MODULE_COMMAND = (sys.executable, "-m", "runtime.serve")


@dataclass
class ServerProcess:
    """A running server: its process, port and log file."""

    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        """``host:port``, as tritonclient takes it."""
        return f"127.0.0.1:{self.port}"

    def ready(self) -> bool:
        """Whether ``/v2/health/ready`` answers 200 now."""
        try:
            with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def server_process(
    model: str | Path,
    log: str | Path,
    flags: Sequence[str] = (),
    *,
    env: dict[str, str] | None = None,
    command: Sequence[str] = MODULE_COMMAND,
    start_s: float = 90.0,
    stop_s: float = 30.0,
) -> Iterator[ServerProcess]:
    """Start the server on a free port, wait until ready, yield it, stop it.

    Args:
        model: the ``.onnx`` file to serve.
        log: file that receives the server's stdout and stderr.
        flags: more ``python -m runtime.serve`` flags (``--port`` is chosen here).
        env: the child's environment (default: this one).
        command: what runs the server (default ``python -m runtime.serve``).
        start_s: how long it may take to become ready.
        stop_s: how long it may take to exit after SIGTERM.

    Raises:
        RuntimeError: the server exited or was not ready in ``start_s``.
    """
    port, log = free_port(), Path(log)
    argv = [*command, str(model), "--port", str(port), *flags]
    with open(log, "w") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env or dict(os.environ)
        )
    server = ServerProcess(process, port, log)
    try:
        deadline = time.monotonic() + start_s
        while not server.ready():
            if process.poll() is not None or time.monotonic() > deadline:
                state = f"exited {process.returncode}" if process.poll() is not None else (
                    f"not ready in {start_s:g} s")  # fmt: skip
                raise RuntimeError(f"server {state}:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(stop_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
