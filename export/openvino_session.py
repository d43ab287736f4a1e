"""OpenVINO on the CPU with ONNX Runtime's session interface, for verification and the bench.

One definition of how an exported file is compiled in OpenVINO (the ``[openvino]`` extra):
export verifies every published file in it where it is installed (the sidecar says so), and
the benchmark's OpenVINO rows time the same compiled model. Settings, so that an fp32 file
runs in fp32 and the comparison with ONNX Runtime is fair:

- ``INFERENCE_PRECISION_HINT = f32``: on CPUs with AVX-512 BF16 (Zen 4, Sapphire Rapids)
  OpenVINO's default is bf16 (read here: ``<Type: 'bfloat16'>``), which would quietly turn
  fp32 into bf16;
- ``DYNAMIC_QUANTIZATION_GROUP_SIZE = 0``: no run-time int8 of fully connected layers
  (default 32 here) in an fp32 file;
- ``INFERENCE_NUM_THREADS = threads`` and ``PERFORMANCE_HINT = LATENCY`` (one stream), as
  ONNX Runtime gets ``intra_op_num_threads``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OpenVinoSession", "openvino_version"]


def openvino_version() -> str | None:
    """The installed OpenVINO version, or None when the extra is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__.split("-")[0]


class OpenVinoSession:
    """``compile_model`` on the CPU plugin, used like an ``onnxruntime.InferenceSession``."""

    def __init__(self, path: str | Path, threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(
            core.read_model(str(path)),
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": "f32",
                "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0",
                "INFERENCE_NUM_THREADS": str(threads),
                "PERFORMANCE_HINT": "LATENCY",
            },
        )
        self.request = self.compiled.create_infer_request()
        self.threads = threads

    def run(self, names: Sequence[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Synchronous inference: the outputs ``names`` as host arrays."""
        result: Any = self.request.infer(feeds)
        return [np.array(result[self.compiled.output(name)]) for name in names]

    def get_providers(self) -> list[str]:
        return [f"OpenVINO {openvino_version()} CPU ({self.threads} threads, f32 hint)"]
