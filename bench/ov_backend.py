"""OpenVINO on the CPU, reading the exported ONNX files directly (the ``[openvino]`` extra).

A user deploying on Intel or AMD CPUs tries OpenVINO next to ONNX Runtime: it reads
``model.onnx`` as it is (dynamic batch, TopK and GridSample included). Each file export
writes is a row: ``openvino-fp32`` from ``model.onnx`` and ``openvino-int8`` from
``model.int8.onnx`` (ONNX Runtime's QDQ file, run as OpenVINO understands it). Every row
passes the same accuracy gates as ONNX Runtime or is reported FAILED and not ranked:
measured by hand, OpenVINO 2026.4 reads our fp32 graph to 1e-6 of ONNX Runtime but turns
the QDQ int8 file into wrong detections (80 of 104 matched), which the gates must catch.

Settings, so that the fp32 row is fp32 and the comparison fair:

- ``INFERENCE_PRECISION_HINT = f32``: on CPUs with AVX-512 BF16 (Zen 4, Sapphire Rapids)
  OpenVINO's default is bf16 (read here: ``<Type: 'bfloat16'>``), which would quietly turn the
  fp32 row into a bf16 one;
- ``DYNAMIC_QUANTIZATION_GROUP_SIZE = 0``: no run-time int8 of fully connected layers (default
  32 here) in the fp32 row;
- ``INFERENCE_NUM_THREADS = --threads`` and ``PERFORMANCE_HINT = LATENCY`` (one stream), as
  ONNX Runtime gets ``intra_op_num_threads``.

Preprocessing is ``runtime``'s (the same function and metadata as the ONNX Runtime rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.settings import SCORE_THRESHOLD
from finetune.metrics import Boxes
from runtime.images import to_rgb_array
from runtime.metadata import ModelMetadata
from runtime.preprocessing import preprocess

__all__ = ["OpenVinoBackend", "openvino_version"]

Feed = dict[str, np.ndarray]


def openvino_version() -> str | None:
    """The installed OpenVINO version, or None when the extra is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__.split("-")[0]


class OpenVinoBackend:
    """OpenVINO CPU plugin on an exported ONNX file (see the module docstring)."""

    runtime = "OpenVINO"

    def __init__(self, path: Path, *, threads: int, batch: int, name: str) -> None:
        import onnx
        import openvino as ov

        props = {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }
        self.metadata = ModelMetadata.from_props(props, source=str(path))
        self.precision = self.metadata.precision
        self.name = name
        self.device = "cpu"
        self.batch = batch
        self.threads = threads
        self.size_mb = Path(path).stat().st_size / 1e6
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
        self.outputs = [self.compiled.output(name) for name in ("labels", "boxes", "scores")]

    @property
    def providers(self) -> list[str]:
        return [f"OpenVINO {openvino_version()} CPU ({self.threads} threads, f32 hint)"]

    def prepare(self, images: Sequence[np.ndarray]) -> Feed:
        sizes = np.array([[im.shape[1], im.shape[0]] for im in images], dtype=np.int64)
        return {"images": preprocess(list(images), self.metadata.preprocessing),
                "orig_target_sizes": sizes}  # fmt: skip

    def model_only(self, feed: Feed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        result = self.request.infer(feed)  # synchronous: outputs are host arrays
        labels, boxes, scores = (np.array(result[output]) for output in self.outputs)
        return labels.astype(np.int64), boxes, scores

    def end_to_end(self, paths: Sequence[str | Path]) -> list[Boxes]:
        labels, boxes, scores = self.model_only(self.prepare([to_rgb_array(p) for p in paths]))
        keep = scores > SCORE_THRESHOLD
        return [Boxes(boxes[i][keep[i]], labels[i][keep[i]], scores[i][keep[i]])
                for i in range(len(paths))]  # fmt: skip

    def predict(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        from bench.backends import predict_in_batches  # backends imports this module lazily

        return predict_in_batches(self, images)
