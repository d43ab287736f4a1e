"""The runtime's exceptions and warnings; every message names the file it is about.

``ModelLoadError``, ``MetadataError`` and ``ImageError`` are ``ValueError`` subclasses (bad
input), ``ProviderError`` is a ``RuntimeError`` (the machine cannot do what was asked).
"""

from __future__ import annotations

from runtime.images import ImageError
from runtime.metadata import MetadataError

__all__ = ["ImageError", "MetadataError", "ModelLoadError", "ProviderError", "ProviderWarning"]


class ModelLoadError(ValueError):
    """A file that onnxruntime cannot load, or a graph that breaks the exported contract."""


class ProviderError(RuntimeError):
    """``strict=True`` and a requested execution provider is not the one in use."""


class ProviderWarning(RuntimeWarning):
    """A requested execution provider is not in use: onnxruntime fell back to another one."""
