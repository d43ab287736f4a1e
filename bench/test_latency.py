"""Latency of every backend: model-only and end-to-end, batch 1 and batch N, same inputs.

- model-only: the SAME preprocessed tensor (``runtime``'s preprocessing, made once) in,
  ``labels/boxes/scores`` out; RT-DETR's post-processing is included (it is in the graph).
- end-to-end: image files in, thresholded detections out: decode + the backend's own
  preprocessing + model + post-processing.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.backends import require
from bench.report import E2E, MODEL, Results
from bench.settings import BenchOptions

BACKENDS = ("pytorch", "pytorch-compile", "onnx-fp32", "onnx-int8", "onnx-fp16",
            "openvino-fp32", "openvino-int8")  # fmt: skip
INCLUDES = {
    MODEL: "preprocessed float32 tensor in -> labels/boxes/scores out (RT-DETR post-processing "
    "included; on a GPU also the host<->device copies); no decode, no resize",
    E2E: "image files in -> detections above the score threshold out: decode + the backend's "
    "own preprocessing + model + post-processing",
}


def _batch(which: str, options: BenchOptions) -> int:
    if which == "bN" and options.batch == 1:
        pytest.skip("--batch 1: the batch-N case is the batch-1 case")
    return 1 if which == "b1" else options.batch


@pytest.mark.parametrize("kind", [MODEL, E2E])
@pytest.mark.parametrize("which", ["b1", "bN"])
@pytest.mark.parametrize("name", BACKENDS)
def test_latency(
    benchmark: Any,
    measure: Any,
    name: str,
    which: str,
    kind: str,
    backends: Any,
    latency_inputs: Any,
    bench_options: BenchOptions,
    results: Results,
) -> None:
    """Model-only (same preprocessed tensor for all) or end-to-end (image files in)."""
    backend = require(backends, name)
    batch = _batch(which, bench_options)
    if name == "pytorch-compile" and batch > 1:
        pytest.skip("pytorch-compile: compiled for batch 1 (another shape compiles again)")
    if kind == MODEL:
        fn, inputs = backend.model_only, latency_inputs.feeds[batch]
    else:
        fn, inputs = backend.end_to_end, latency_inputs.paths[batch]
    latency = measure(backend, kind, batch, fn, inputs, includes=INCLUDES[kind])
    results.latency[(backend.name, kind, batch)] = latency
    results.record_compile(backend)  # torch.compile's first call, if this run made it
