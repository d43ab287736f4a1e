"""Output paths: variant and report names, staging under a temporary name, publishing.

A model is written under a hidden temporary name in its final folder, verified there, and
only then renamed (``os.replace``, atomic on one file system) to its final name, so a failed
or interrupted export never leaves a file under the name a user or server would load.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from export.errors import ExportError, write_failure
from runtime.files import temp_prefix

__all__ = ["failed_report_path", "prepare_output", "report_path", "staging_path", "variant_path"]


def variant_path(output: Path, tag: str) -> Path:
    """``model.onnx`` -> ``model.<tag>.onnx``."""
    return output.with_name(f"{output.stem}.{tag}{output.suffix or '.onnx'}")


def report_path(model: Path) -> Path:
    """``model.onnx`` -> ``model.verify.json`` (written when verification passed)."""
    return model.with_name(f"{model.stem}.verify.json")


def failed_report_path(model: Path) -> Path:
    """``model.onnx`` -> ``model.verify.failed.json`` (written when verification failed)."""
    return model.with_name(f"{model.stem}.verify.failed.json")


def prepare_output(output: str | Path) -> Path:
    """Resolve ``--output`` (a file, or an existing folder) and prove it can be written.

    Raises:
        ExportError: The folder cannot be created or written to, or ``output`` is a folder
            that is not meant as one.
    """
    path = Path(output)
    if path.is_dir():
        path = path / "model.onnx"
    if path.suffix != ".onnx":
        raise ExportError(f"output {path} must end in .onnx (or be an existing folder)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(
            prefix=temp_prefix(path.name), suffix=".probe", dir=path.parent
        )
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise write_failure(
            f"cannot write the model to {path}: {exc.strerror or exc}. "
            "Choose a writable location with --output PATH.",
            exc,
        ) from None
    return path


def staging_path(final: Path) -> Path:
    """A fresh hidden file in ``final``'s folder to write and verify before renaming.

    Created with mode 0o666 minus the umask (``mkstemp`` would make it 0o600, and the
    published model would then be unreadable to a server running as another user).
    """
    while True:
        # .<name>.<pid>.<8 hex>: finetune.runs.remove_stale_temp recognises a killed writer's
        tmp = final.parent / f"{temp_prefix(final.name)}{secrets.token_hex(4)}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
