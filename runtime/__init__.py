"""rtdetr-deploy runtime: run an exported RT-DETR ONNX model with onnxruntime, no torch.

``Detector(path, backend="openvino")`` runs the same file in OpenVINO (the ``[openvino]``
extra) through the one session seam, :mod:`runtime.engines`.

Needs numpy, onnxruntime and Pillow only; supervision is imported when detections are
converted to ``sv.Detections``. Names are imported lazily, so ``import runtime`` (or
``runtime.metadata``, which ``export`` uses) does not load onnxruntime.

Example:
    >>> from runtime import Detector
    >>> detector = Detector("runs/exp/model.onnx")  # doctest: +SKIP
    >>> detections = detector("image.jpg")  # doctest: +SKIP
    >>> detector.providers  # doctest: +SKIP
    ['CPUExecutionProvider']
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.detections import RawDetections
    from runtime.detector import Detector
    from runtime.engines import BACKENDS
    from runtime.errors import (
        ImageError,
        MetadataError,
        ModelLoadError,
        ProviderError,
        ProviderWarning,
    )
    from runtime.metadata import ModelMetadata, Preprocessing
    from runtime.preprocessing import preprocess

__all__ = [
    "BACKENDS",
    "Detector",
    "ImageError",
    "MetadataError",
    "ModelLoadError",
    "ModelMetadata",
    "Preprocessing",
    "ProviderError",
    "ProviderWarning",
    "RawDetections",
    "preprocess",
]

_MODULES = {
    "BACKENDS": "runtime.engines",
    "Detector": "runtime.detector",
    "RawDetections": "runtime.detections",
    "ImageError": "runtime.errors",
    "MetadataError": "runtime.errors",
    "ModelLoadError": "runtime.errors",
    "ProviderError": "runtime.errors",
    "ProviderWarning": "runtime.errors",
    "ModelMetadata": "runtime.metadata",
    "Preprocessing": "runtime.metadata",
    "preprocess": "runtime.preprocessing",
}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
