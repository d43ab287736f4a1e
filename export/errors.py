"""Errors of ``export``: input problems (exit code 2) and failed verification (exit code 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["ExportError", "VerificationError"]


class ExportError(ValueError):
    """A problem with the input or output the user gave; the message names the path."""


class VerificationError(RuntimeError):
    """The exported graph does not reproduce PyTorch; nothing was left under the final name.

    Attributes:
        report: The verification report (also written next to where the model would be).
        report_path: Where the report was written, if it could be.
    """

    def __init__(self, message: str, report: dict[str, Any], report_path: Path | None) -> None:
        super().__init__(message)
        self.report = report
        self.report_path = report_path
