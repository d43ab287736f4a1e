"""Output paths: variant and report names, staging under a temporary name, publishing.

A model is written under a hidden temporary name in its final folder, verified there, and
only then renamed (``os.replace``, atomic on one file system) to its final name, so a failed
or interrupted export never leaves a file under the name a user or server would load.

:func:`publish` makes the model and the files that describe it (sidecar, verification report)
one step: everything is written and checked under temporary names first, the old
descriptions are removed, then the model and its descriptions are renamed into place. A kill
at any moment leaves each description either absent or describing the model beside it (both
carry its SHA-256), never a report of another file.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from export.errors import ExportError, write_failure
from runtime.files import stage_bytes, temp_prefix

__all__ = [
    "failed_report_path",
    "prepare_output",
    "publish",
    "report_path",
    "staging_path",
    "variant_path",
]


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


def publish(
    staged: Path, final: Path, documents: Mapping[Path, bytes], stale: Iterable[Path] = ()
) -> None:
    """Rename the verified ``staged`` model to ``final`` together with its ``documents``.

    Order: every document is written and size-checked under a temporary name; the old
    documents and the ``stale`` files (what described or was built from the old model) are
    removed; the model is renamed, then each document. A failure while the documents are
    written (a full disk) leaves the old model and its documents as they were.
    """
    written: list[tuple[Path, Path]] = []
    try:
        for target, data in documents.items():
            written.append((stage_bytes(target, data), target))
        for path in (*documents, *stale):
            path.unlink(missing_ok=True)
        os.replace(staged, final)
        for tmp, target in written:
            os.replace(tmp, target)
    finally:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
