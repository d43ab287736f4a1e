"""The accuracy gates every row of the matrix passes, or is reported FAILED and not ranked.

Model parity, judged on the SAME preprocessed tensors for every backend (so that only the
runtime and precision differ, never the preprocessing):

- ``|ΔmAP50:95|`` against PyTorch eager within ``MAP_TOLERANCE[precision]`` (fp32 0.002,
  fp16 0.005, int8 0.01: the margins export verifies every file against);
- detection consistency (:meth:`Reference.consistency`) at least
  ``CONSISTENCY_MIN[precision]``: for fp32 always, for fp16 and int8 when the reference is
  a trained model (``TRAINED_MAP``). It stays meaningful where mAP is 0 for everyone (an
  untrained model) and catches a wrong runtime that mAP alone can miss.

End-to-end accuracy (each backend's own decode and preprocessing, from the images) is
measured and reported beside it, not gated: with one preprocessing it equals the parity
figure, and a difference there is a preprocessing difference, not a runtime one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bench.settings import CONSISTENCY_MIN, CONSISTENCY_TOP, MAP_TOLERANCE, TRAINED_MAP
from finetune.metrics import Boxes, mean_average_precision

__all__ = ["Reference", "check_row", "outputs_to_boxes"]


def outputs_to_boxes(outputs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[Boxes]:
    """``(labels, boxes, scores)`` batches -> one :class:`Boxes` per image (no threshold)."""
    return [
        Boxes(boxes[i], labels[i], scores[i])
        for labels, boxes, scores in outputs
        for i in range(len(labels))
    ]


class Reference:
    """PyTorch eager's parity predictions, its mAP, and its own detections as ground truth."""

    def __init__(self, metrics: dict[str, float], predictions: list[Boxes]) -> None:
        self.metrics = metrics
        # Top detections per image (outputs are sorted by score) taken as ground truth.
        self.pseudo = [
            Boxes(p.xyxy[:CONSISTENCY_TOP], p.class_id[:CONSISTENCY_TOP]) for p in predictions
        ]
        # Below 1.0 where near-duplicate boxes compete for one pseudo box: the yardstick.
        self.self_score = mean_average_precision(predictions, self.pseudo)["map"]

    @property
    def trained(self) -> bool:
        return self.metrics["map"] >= TRAINED_MAP

    def consistency(self, predictions: list[Boxes]) -> float:
        """mAP50:95 of ``predictions`` against the pseudo ground truth, relative to PyTorch."""
        score = mean_average_precision(predictions, self.pseudo)["map"]
        return round(score / self.self_score, 6) if self.self_score > 0 else 0.0


def check_row(
    name: str,
    precision: str,
    metrics: dict[str, float],
    predictions: list[Boxes],
    reference: Reference,
) -> tuple[float, float, list[str]]:
    """Gate one row; returns ``(consistency, ΔmAP50:95, failures)`` (no failures: passed)."""
    consistency = reference.consistency(predictions)
    diff = round(metrics["map"] - reference.metrics["map"], 6)
    tolerance = MAP_TOLERANCE[precision]
    failures = []
    if not (np.isfinite(metrics["map"]) and all(np.isfinite(p.confidence).all()
                                                for p in predictions)):  # fmt: skip
        failures.append(f"{name}: NaN scores")
    if abs(diff) > tolerance:
        failures.append(
            f"{name}: mAP50:95 {metrics['map']:.4f} vs PyTorch {reference.metrics['map']:.4f} "
            f"(diff {diff:+.4f}, tolerance {tolerance})"
        )
    minimum = CONSISTENCY_MIN.get(precision)
    if precision != "fp32" and not reference.trained:
        minimum = None
    if minimum is not None and consistency < minimum:
        failures.append(
            f"{name}: detections disagree with PyTorch's: consistency {consistency:.4f} < "
            f"{minimum} (mAP50:95 against PyTorch's top-{CONSISTENCY_TOP} per image, relative "
            "to PyTorch's own)"
        )
    return consistency, diff, failures
