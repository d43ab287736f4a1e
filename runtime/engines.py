"""Engines: the one session seam between ``Detector`` and the library that runs the graph.

An engine is anything with ``run(output_names, feed) -> [arrays]`` and ``get_providers()``, the
two calls of ``onnxruntime.InferenceSession`` that the runtime, export verification and the
benchmark use. Two engines read the same exported ``.onnx`` file:

- ``onnxruntime`` (the base install): :mod:`runtime.session` opens it with the execution
  providers chosen in :mod:`runtime.providers`;
- ``openvino`` (the ``[openvino]`` extra): :class:`OpenVinoSession`, OpenVINO's CPU plugin. On
  this project's 2-core Xeon (Emerald Rapids) the benchmark measured 15.7 ms for OpenVINO fp32
  against 24.1 ms for ONNX Runtime on the default model, so the engine the bench recommends must
  be one a user can ship: ``Detector(path, backend="openvino")``.

OpenVINO compile settings, so that an fp32 file runs in fp32 and the comparison with ONNX Runtime
is fair:

- ``INFERENCE_PRECISION_HINT = f32``: on CPUs with AVX-512 BF16 (Zen 4, Sapphire Rapids)
  OpenVINO's default is bf16 (read here: ``<Type: 'bfloat16'>``), which would quietly turn
  fp32 into bf16;
- ``DYNAMIC_QUANTIZATION_GROUP_SIZE = 0``: no run-time int8 of fully connected layers
  (default 32 here) in an fp32 file;
- ``INFERENCE_NUM_THREADS = threads`` and ``PERFORMANCE_HINT = LATENCY`` (one stream), as
  ONNX Runtime gets ``intra_op_num_threads``.

OpenVINO's ONNX reader keeps the file's ``metadata_props`` in ``rt_info["framework"]`` (checked
here: every key and value equal to ``onnx.load``'s), so the metadata is read without ``onnx``.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runtime.errors import ModelLoadError, first_line
from runtime.extras import MissingExtraError, install_hint

__all__ = [
    "BACKENDS",
    "Engine",
    "OpenVinoSession",
    "Signature",
    "check_backend",
    "openvino_version",
]

BACKENDS = ("onnxruntime", "openvino")

# OpenVINO element types as onnxruntime names them (``NodeArg.type``): one vocabulary for the
# contract check in runtime.session.
_OV_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "i64": "tensor(int64)"}


class Engine(Protocol):
    """What ``Detector`` needs of a session (``onnxruntime.InferenceSession`` is one)."""

    def run(self, output_names: Sequence[str], input_feed: dict[str, np.ndarray]) -> list[Any]:
        """Run the graph; the outputs ``output_names`` as host arrays, in that order."""
        ...

    def get_providers(self) -> list[str]:
        """What actually runs the graph, best first."""
        ...


@dataclass(frozen=True)
class Signature:
    """A graph's inputs and outputs as the engine sees them (for the contract check).

    Attributes:
        inputs: name -> (onnxruntime type name such as ``tensor(float)``, shape with ``None``
            or a string for dynamic axes).
        outputs: output names.
    """

    inputs: dict[str, tuple[str, list[int | str | None]]]
    outputs: list[str]


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else ``ValueError`` naming them."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


def openvino_version() -> str | None:
    """The installed OpenVINO version, or None when the extra is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__.split("-")[0]


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise MissingExtraError(
            "backend='openvino' needs OpenVINO, which is not installed: "
            f"{install_hint('openvino')}; or use backend='onnxruntime'"
        ) from None
    return openvino


def _openvino_reason(exc: RuntimeError) -> str:
    """The lines of an OpenVINO error that say what is wrong, in one line.

    OpenVINO's messages start with source locations ("Exception from src/inference/...",
    "Check 'false' failed at src/frontends/..."), so their first line names no reason; the
    reason ("Conversion is failed for: Concat", "No conversion rule found for operations:
    com.x.Op") comes after them.
    """
    lines = [line.strip(" -:") for line in str(exc).splitlines()]
    useful = [
        line
        for line in lines
        if line and not line.startswith(("Exception from src", "Check '")) and line != "Summary"
    ]
    return "; ".join(useful) or first_line(exc, with_type=True)


def _signature(model: Any) -> Signature:
    """An ``openvino.Model``'s inputs (type, shape; None for a dynamic axis) and outputs."""

    def shape(port: Any) -> list[int | str | None]:
        return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]

    inputs = {
        port.get_any_name(): (_OV_TYPES.get(port.get_element_type().get_type_name(), "?"),
                              shape(port))
        for port in model.inputs
    }  # fmt: skip
    return Signature(inputs, [port.get_any_name() for port in model.outputs])


class OpenVinoSession:
    """``compile_model`` on OpenVINO's CPU plugin, used like an ``onnxruntime.InferenceSession``.

    Thread-safe: the compiled model is shared and each concurrent ``run`` takes its own infer
    request from a pool (an ``InferRequest`` must not be used by two threads at once), so one
    session serves a threaded server as ONNX Runtime's does.

    Args:
        path: the exported ``.onnx`` file.
        threads: ``INFERENCE_NUM_THREADS`` (``None``: OpenVINO's default, all cores).

    Raises:
        MissingExtraError: OpenVINO is not installed.
        ModelLoadError: OpenVINO cannot read or compile the file.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        ov = _import_openvino()
        if threads is not None and threads < 1:
            raise ValueError(f"expected threads >= 1 or None, got {threads}")
        config = {
            "INFERENCE_PRECISION_HINT": "f32",
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0",
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        core = ov.Core()
        try:
            model = core.read_model(str(path))
            # Read before compiling: a compiled port may carry an internal tensor's name too
            # and answer to that one (RF-DETR's `images` became ".../Cast_output_0").
            self._signature = _signature(model)
            self.compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as exc:  # OpenVINO raises RuntimeError for unreadable graphs
            reason = _openvino_reason(exc)
            raise ModelLoadError(f"{path}: OpenVINO cannot load it ({reason})") from None
        info = model.get_rt_info()
        framework = info["framework"] if "framework" in info else {}  # noqa: SIM401 (RTMap: no .get)
        self.metadata_props = {key: value.astype(str) for key, value in framework.items()}
        self.threads = threads
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._requests.put(self.compiled.create_infer_request())

    @property
    def signature(self) -> Signature:
        """The graph's inputs and outputs, named as in the file."""
        return self._signature

    def run(self, output_names: Sequence[str], input_feed: dict[str, np.ndarray]) -> list[Any]:
        """Synchronous inference: the outputs ``output_names`` as host arrays."""
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            result: Any = request.infer(input_feed)
            return [np.array(result[self.compiled.output(name)]) for name in output_names]
        finally:
            self._requests.put(request)

    def get_providers(self) -> list[str]:
        threads = "default threads" if self.threads is None else f"{self.threads} threads"
        return [f"OpenVINO {openvino_version()} CPU ({threads}, f32 hint)"]
