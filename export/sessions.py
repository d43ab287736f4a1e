"""Running a graph for verification: the session, its errors, and its detections per image.

One place for how verification opens a file (ONNX Runtime's CPU provider with few threads
and no spinning, or OpenVINO through :mod:`export.openvino_session`), which exceptions mean
the runtime refused it, and how it is fed (the contract's ``images`` and
``orig_target_sizes``) and read back (:class:`export.parity.Detections`, plus any extra
outputs a temporary copy was given: :mod:`export.selection`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export.parity import Detections
from export.reference import Reference
from export.selection import pick_selection

__all__ = ["make_session", "open_session", "run_each", "run_graph", "runtime_errors"]


def make_session(path: Path, threads: int | None = None) -> Any:
    """A CPU ``InferenceSession`` with few threads and no spinning (shared machines)."""
    import onnxruntime as ort

    from runtime.session import session_options

    options = session_options(threads or min(4, os.cpu_count() or 1))
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def open_session(path: Path, runtime: str, threads: int | None) -> Any:
    """The graph at ``path`` in ``runtime`` (``onnxruntime`` or ``openvino``)."""
    if runtime == "openvino":
        from export.openvino_session import OpenVinoSession

        return OpenVinoSession(path, threads or min(4, os.cpu_count() or 1))
    return make_session(path, threads)


def runtime_errors() -> tuple[type[BaseException], ...]:
    """What a runtime raises for a graph it cannot load or run: ONNX Runtime's exception
    classes (they derive from Exception, not RuntimeError), RuntimeError (OpenVINO running
    it) and ``ModelLoadError`` (runtime.engines, OpenVINO loading it)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    from runtime.errors import ModelLoadError

    names = (
        "Fail",
        "InvalidArgument",
        "InvalidGraph",
        "NotImplemented",
        "RuntimeException",
        "EPFail",
        "NoSuchFile",
        "InvalidProtobuf",
        "ModelLoaded",
        "NoModel",
        "EngineError",
    )
    found = tuple(getattr(state, n) for n in names if hasattr(state, n))
    return (*found, RuntimeError, ModelLoadError)


def run_graph(
    session: Any, pixel_values: np.ndarray, sizes: np.ndarray, extra: Sequence[str] = ()
) -> tuple[list[Detections], list[np.ndarray]]:
    """The graph's detections per image, and the ``extra`` outputs asked for."""
    labels, boxes, scores, *rest = session.run(
        ["labels", "boxes", "scores", *extra], {"images": pixel_values, "orig_target_sizes": sizes}
    )
    return [Detections(labels[i], boxes[i], scores[i]) for i in range(len(labels))], rest


def run_each(
    session: Any, reference: Reference, extra: Sequence[str]
) -> tuple[list[Detections], list[float], list[tuple[np.ndarray, np.ndarray] | None]]:
    """Detections, times and (where ``extra`` names the TopK outputs) the query selection
    (values, indices) of each image at batch 1."""
    outputs, times, picked = [], [], []
    k = len(reference.selection[0]) if reference.selection else 0
    for pv, size in zip(reference.pixel_values, reference.sizes, strict=True):
        start = time.perf_counter()
        detections, rest = run_graph(session, pv, size, extra)
        times.append(time.perf_counter() - start)
        outputs.extend(detections)
        found = pick_selection(rest, k) if extra else None
        picked.append((found[0][0], found[1][0]) if found else None)
    return outputs, times, picked
