"""The runtime's exceptions and warnings; every message names the file it is about.

``ModelLoadError``, ``MetadataError`` and ``ImageError`` are ``ValueError`` subclasses (bad
input), ``ProviderError`` is a ``RuntimeError`` (the machine cannot do what was asked).
"""

from __future__ import annotations

from runtime.images import ImageError
from runtime.metadata import MetadataError

__all__ = [
    "ImageError",
    "MetadataError",
    "ModelLoadError",
    "ProviderError",
    "ProviderWarning",
    "first_line",
]


def first_line(exc: BaseException, *, with_type: bool = False) -> str:
    """The first non-blank line of ``exc``'s message, for one-line errors.

    Library messages can be empty or start with a blank line (indexing ``splitlines()[0]``
    then raised an IndexError in place of the message): the type name stands in for an empty
    one. ``with_type`` prefixes it (``"ValueError: bad shape"``).
    """
    line = next((text.strip() for text in str(exc).splitlines() if text.strip()), "")
    name = type(exc).__name__
    if not line:
        return name
    return f"{name}: {line}" if with_type else line


class ModelLoadError(ValueError):
    """A file that onnxruntime cannot load, or a graph that breaks the exported contract."""


class ProviderError(RuntimeError):
    """``strict=True`` and a requested execution provider is not the one in use."""


class ProviderWarning(RuntimeWarning):
    """A requested execution provider is not in use: onnxruntime fell back to another one."""
