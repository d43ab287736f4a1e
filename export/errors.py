"""Errors of ``export``: input problems (exit code 2), failed verification (exit code 1), and
a full disk or missing permission while writing (exit code 3)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from runtime.files import cannot_write

if TYPE_CHECKING:
    from export.report import VerificationReport

__all__ = ["CannotWriteError", "ExportError", "VerificationError", "write_failure"]


class ExportError(ValueError):
    """A problem with the input or output the user gave; the message names the path."""


class CannotWriteError(ExportError):
    """Writing failed for lack of space or permission (exit code 3); nothing good was lost."""


def write_failure(message: str, exc: OSError) -> ExportError:
    """The error to raise for ``exc`` while writing: CannotWriteError if space or permissions
    are the cause, else ExportError. ``message`` already names the path and the reason."""
    return CannotWriteError(message) if cannot_write(exc) else ExportError(message)


class VerificationError(RuntimeError):
    """The exported graph does not reproduce PyTorch; nothing was left under the final name.

    Attributes:
        report: The verification report (also written next to where the model would be).
        report_path: Where the report was written, if it could be.
    """

    def __init__(self, message: str, report: VerificationReport, report_path: Path | None) -> None:
        super().__init__(message)
        self.report = report
        self.report_path = report_path
