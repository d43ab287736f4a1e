"""Choose onnxruntime execution providers and check which ones are really in use.

``onnxruntime-gpu`` lists ``TensorrtExecutionProvider`` and ``CUDAExecutionProvider`` in
``get_available_providers()`` even on a machine without a GPU (or without the CUDA/TensorRT
libraries), then silently runs on the CPU. Only ``InferenceSession.get_providers()`` tells the
truth, so :func:`check_providers` compares the request with it after the session exists.

Example:
    >>> from runtime.providers import normalize_provider
    >>> normalize_provider("cuda")
    'CUDAExecutionProvider'
"""

from __future__ import annotations

import ctypes
import logging
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

from runtime.errors import ProviderError, ProviderWarning

__all__ = [
    "DEFAULT_PREFERENCE",
    "ProviderPlan",
    "ProviderSpec",
    "check_providers",
    "normalize_provider",
    "nvidia_driver_present",
    "plan_providers",
]

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
DEFAULT_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU)
ProviderSpec = str | tuple[str, dict[str, Any]]

_NEEDS_NVIDIA_DRIVER = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_ALIASES = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "dml": "DmlExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "qnn": "QNNExecutionProvider",
}


def nvidia_driver_present() -> bool:
    """Whether the NVIDIA driver library loads; without it CUDA and TensorRT cannot work.

    Only used to keep them out of the *default* preference on machines without a GPU (where
    onnxruntime-gpu would print a page of errors before falling back); explicit requests
    always go to onnxruntime and are checked against ``session.get_providers()``.
    """
    library = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def normalize_provider(name: str) -> str:
    """Map a short alias (``cpu``, ``cuda``, ``tensorrt``...) or any-case name to ORT's name.

    Raises:
        ValueError: the name is no execution provider onnxruntime knows of.
    """
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    for known in ort.get_all_providers():
        if known.lower() in (key, key + "executionprovider"):
            return known
    raise ValueError(
        f"unknown execution provider {name!r}; expected a short alias "
        f"({', '.join(sorted(_ALIASES))}) or one of onnxruntime's names "
        f"({', '.join(ort.get_all_providers())})"
    )


@dataclass(frozen=True)
class ProviderPlan:
    """What to ask onnxruntime for, and what to check afterwards.

    Attributes:
        requested: normalised names, in preference order, that should end up in use.
        session_providers: the ``providers`` argument for ``InferenceSession``.
        explicit: the caller named the providers (``False``: the default preference).
    """

    requested: tuple[str, ...]
    session_providers: list[ProviderSpec]
    explicit: bool


def plan_providers(providers: Sequence[ProviderSpec] | None) -> ProviderPlan:
    """Resolve ``providers`` (``None``: TensorRT > CUDA > CPU) into a :class:`ProviderPlan`.

    The default preference keeps the providers this onnxruntime build offers, less TensorRT
    and CUDA when no NVIDIA driver is installed.

    Providers that this onnxruntime build does not offer at all are not passed to the session
    (it would only print an error and fall back); they stay in ``requested`` so that the check
    reports them.
    """
    available = ort.get_available_providers()
    if providers is None:
        names = [p for p in DEFAULT_PREFERENCE if p in available]
        if not nvidia_driver_present():
            names = [p for p in names if p not in _NEEDS_NVIDIA_DRIVER]
        return ProviderPlan(tuple(names), list(names), explicit=False)
    if isinstance(providers, str):
        providers = [providers]
    requested: list[str] = []
    session: list[ProviderSpec] = []
    for spec in providers:
        if isinstance(spec, tuple):
            name, options = normalize_provider(spec[0]), dict(spec[1])
            entry: ProviderSpec = (name, options)
        elif isinstance(spec, str):
            name = normalize_provider(spec)
            entry = name
        else:
            raise ValueError(
                "expected provider names (str) or (name, options) tuples, "
                f"got {type(spec).__name__}"
            )
        if name in requested:
            continue
        requested.append(name)
        if name in available:
            session.append(entry)
    return ProviderPlan(tuple(requested), session or [CPU], explicit=True)


def check_providers(plan: ProviderPlan, used: Sequence[str], *, strict: bool, source: str) -> None:
    """Compare the plan with ``session.get_providers()``; warn, log or raise on a mismatch.

    Explicit request, provider not in use: ``warnings.warn`` (:class:`ProviderWarning`) and a
    log warning, or :class:`ProviderError` with ``strict``. Default preference: a log warning,
    or :class:`ProviderError` with ``strict`` (every provider of the default preference, see
    :func:`plan_providers`, must then be in use: a GPU machine whose CUDA libraries do not
    match fails instead of running on the CPU).
    """
    missing = [p for p in plan.requested if p not in used]
    if not missing:
        logger.info("%s: running on %s", source, ", ".join(used))
        return
    accelerators = [p for p in missing if p != CPU]
    hint = (
        " onnxruntime's own log above says why; usually no GPU is visible, or the CUDA/cuDNN"
        " (and TensorRT) libraries do not match this onnxruntime-gpu build."
        if accelerators
        else ""
    )
    message = (
        f"{source}: execution provider(s) {', '.join(missing)} requested but not in use; "
        f"onnxruntime runs this model on {', '.join(used)}.{hint}"
    )
    if strict:
        raise ProviderError(message + " (strict=True)")
    if plan.explicit:
        warnings.warn(message, ProviderWarning, stacklevel=4)
        logger.warning(message)
    else:
        logger.warning(
            "%s Pass providers=['cpu'] to choose the CPU explicitly and silence this.", message
        )
