"""OpenVINO on the CPU, reading the exported ONNX files directly (the ``[openvino]`` extra).

A user deploying on Intel or AMD CPUs tries OpenVINO next to ONNX Runtime: it reads
``model.onnx`` as it is (dynamic batch, TopK and GridSample included). Each file export
writes is a row: ``openvino-fp32`` from ``model.onnx`` and ``openvino-int8`` from
``model.int8.onnx`` (ONNX Runtime's QDQ file, run as OpenVINO understands it). Every row
passes the same accuracy gates as ONNX Runtime or is reported FAILED and not ranked:
measured by hand, OpenVINO 2026.4 reads our fp32 graph to 1e-6 of ONNX Runtime but turns
the QDQ int8 file into wrong detections (80 of 104 matched), which the gates must catch.

The compile settings are :mod:`export.openvino_session`'s (export verifies in the same way).
Preprocessing is ``runtime``'s (the same function and metadata as the ONNX Runtime rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.settings import SCORE_THRESHOLD
from export.openvino_session import OpenVinoSession, openvino_version
from finetune.metrics import Boxes
from runtime.images import to_rgb_array
from runtime.metadata import ModelMetadata
from runtime.preprocessing import preprocess

__all__ = ["OpenVinoBackend", "openvino_version"]

Feed = dict[str, np.ndarray]


class OpenVinoBackend:
    """OpenVINO CPU plugin on an exported ONNX file (see the module docstring)."""

    runtime = "OpenVINO"

    def __init__(self, path: Path, *, threads: int, batch: int, name: str) -> None:
        import onnx

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
        self.session = OpenVinoSession(path, threads)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def prepare(self, images: Sequence[np.ndarray]) -> Feed:
        sizes = np.array([[im.shape[1], im.shape[0]] for im in images], dtype=np.int64)
        return {"images": preprocess(list(images), self.metadata.preprocessing),
                "orig_target_sizes": sizes}  # fmt: skip

    def model_only(self, feed: Feed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        labels, boxes, scores = self.session.run(("labels", "boxes", "scores"), feed)
        return labels.astype(np.int64), boxes, scores

    def end_to_end(self, paths: Sequence[str | Path]) -> list[Boxes]:
        labels, boxes, scores = self.model_only(self.prepare([to_rgb_array(p) for p in paths]))
        keep = scores > SCORE_THRESHOLD
        return [Boxes(boxes[i][keep[i]], labels[i][keep[i]], scores[i][keep[i]])
                for i in range(len(paths))]  # fmt: skip

    def predict(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        from bench.backends import predict_in_batches  # backends imports this module lazily

        return predict_in_batches(self, images)
