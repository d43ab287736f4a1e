"""mAP of every backend on the test split, through the project's one mAP function.

Every backend gets the same decoded images and runs its own preprocessing and the same
RT-DETR post-processing (``DeployModel`` for PyTorch via ``predict_images``; the same module,
traced, inside the ONNX graph). The suite fails when a backend's mAP50:95 differs from
PyTorch's by more than ``MAP_TOLERANCE`` (fp32 0.002), or when its detections stop agreeing
with PyTorch's (``CONSISTENCY_MIN``), which also catches a broken pipeline on an untrained
model whose mAP is 0 for everyone. The ``benchmark`` fixture times the whole evaluation, so
these tests also run under ``--benchmark-only``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.backends import Backend, require
from bench.report import Accuracy, Results
from bench.settings import CONSISTENCY_MIN, CONSISTENCY_TOP, MAP_TOLERANCE
from finetune.metrics import Boxes, mean_average_precision

BACKENDS = ("pytorch", "onnx-fp32", "onnx-int8", "onnx-fp16")


def _score(backend: Backend, testset: Any) -> tuple[dict[str, float], list[Boxes]]:
    predictions = backend.predict(testset.images)
    return mean_average_precision(predictions, testset.targets, testset.classes), predictions


class _Reference:
    """PyTorch's mAP and predictions, and how its own detections score as ground truth."""

    def __init__(self, metrics: dict[str, float], predictions: list[Boxes]) -> None:
        self.metrics = metrics
        # Top detections per image (outputs are sorted by score) taken as ground truth.
        self.pseudo = [
            Boxes(p.xyxy[:CONSISTENCY_TOP], p.class_id[:CONSISTENCY_TOP]) for p in predictions
        ]
        # Below 1.0 where near-duplicate boxes compete for one pseudo box: the yardstick.
        self.self_score = mean_average_precision(predictions, self.pseudo)["map"]

    def consistency(self, predictions: list[Boxes]) -> float:
        """mAP50:95 of ``predictions`` against the pseudo ground truth, relative to PyTorch."""
        score = mean_average_precision(predictions, self.pseudo)["map"]
        return round(score / self.self_score, 6) if self.self_score > 0 else 0.0


def _reference(backends: Any, testset: Any, results: Results) -> _Reference:
    """Computed once per session (by ``test_map[pytorch]`` unless deselected)."""
    if "pytorch" not in results.predictions:
        results.predictions["pytorch"] = _Reference(*_score(require(backends, "pytorch"), testset))
    return results.predictions["pytorch"]


@pytest.mark.parametrize("name", BACKENDS)
def test_map(benchmark: Any, name: str, backends: Any, testset: Any, results: Results) -> None:
    backend = require(backends, name)
    benchmark.group = "accuracy: predict the test split + mAP (one round)"
    benchmark.extra_info.update(
        {"backend": backend.runtime, "precision": backend.precision, "images": len(testset.images)}
    )
    if name == "pytorch":
        metrics, predictions = benchmark.pedantic(_score, args=(backend, testset), rounds=1)
        results.predictions["pytorch"] = _Reference(metrics, predictions)
        results.accuracy[name] = Accuracy(name, metrics, len(testset.images), consistency=1.0)
        return
    reference = _reference(backends, testset, results)
    metrics, predictions = benchmark.pedantic(_score, args=(backend, testset), rounds=1)
    consistency = reference.consistency(predictions)
    tolerance = MAP_TOLERANCE[backend.precision]
    diff = round(metrics["map"] - reference.metrics["map"], 6)
    results.accuracy[name] = Accuracy(
        name, metrics, len(testset.images), consistency, diff, tolerance
    )
    benchmark.extra_info.update(
        {"map": metrics["map"], "map_diff": diff, "consistency": consistency}
    )
    vacuous = (
        f"PyTorch mAP50:95 is {reference.metrics['map']:.4f} (an untrained model): the mAP "
        "comparison is vacuous here; the consistency check carries the fp32 parity"
    )
    if reference.metrics["map"] < 0.01 and vacuous not in results.notes:
        results.notes.append(vacuous)
    assert np.isfinite(metrics["map"]) and all(
        np.isfinite(p.confidence).all() for p in predictions
    ), f"{name}: NaN scores"
    assert abs(diff) <= tolerance, (
        f"{name}: mAP50:95 {metrics['map']:.4f} vs PyTorch {reference.metrics['map']:.4f} "
        f"(diff {diff:+.4f}, tolerance {tolerance})"
    )
    minimum = CONSISTENCY_MIN.get(backend.precision)
    assert minimum is None or consistency >= minimum, (
        f"{name}: detections disagree with PyTorch's: consistency {consistency:.4f} < {minimum} "
        f"(mAP50:95 against PyTorch's top-{CONSISTENCY_TOP} per image, relative to PyTorch's own)"
    )
