"""Pictures of a run: training curves, confusion matrix, ground truth beside predictions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import supervision as sv

from finetune.metrics import Boxes
from runtime.files import atomic_write_figure

__all__ = ["plot_confusion_matrix", "plot_curves", "plot_predictions", "to_detections"]


def to_detections(
    boxes: Boxes, class_names: Sequence[str], threshold: float = 0.0
) -> sv.Detections:
    """Project boxes as ``sv.Detections`` (with ``class_name``), keeping scores ≥ threshold."""
    xyxy = np.asarray(boxes.xyxy, dtype=np.float32).reshape(-1, 4)
    class_id = np.asarray(boxes.class_id, dtype=int).reshape(-1)
    confidence = None if boxes.confidence is None else np.asarray(boxes.confidence, np.float32)
    keep = np.ones(len(xyxy), bool) if confidence is None else confidence >= threshold
    det = sv.Detections(
        xyxy=xyxy[keep],
        class_id=class_id[keep],
        confidence=None if confidence is None else confidence[keep],
    )
    det.data["class_name"] = np.array([class_names[i] for i in det.class_id], dtype=object)
    return det


def plot_curves(epochs: list[dict[str, Any]], path: Path) -> Path:
    """Loss and mAP per evaluation."""
    x = [e["epoch"] for e in epochs]
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("train_loss", "train loss"), ("eval_loss", "valid loss")):
        ys = [e.get(key) for e in epochs]
        if any(y is not None for y in ys):
            ax_loss.plot(x, [np.nan if y is None else y for y in ys], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    if ax_loss.lines:  # nothing to label when no evaluation ran (--eval_strategy no)
        ax_loss.legend()
    for key, label in (("map", "mAP50:95"), ("map_50", "mAP50"), ("map_75", "mAP75")):
        ax_map.plot(x, [e.get(key, np.nan) for e in epochs], marker="o", label=label)
    ax_map.set(xlabel="epoch", ylabel="mAP (valid)", title="mAP", ylim=(0, 1))
    ax_map.legend()
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)
    return path


def plot_confusion_matrix(
    predictions: Sequence[Boxes],
    targets: Sequence[Boxes],
    class_names: Sequence[str],
    path: Path,
    threshold: float = 0.5,
) -> Path:
    """Confusion matrix (supervision) at ``threshold`` confidence and IoU 0.5."""
    cm = sv.ConfusionMatrix.from_detections(
        predictions=[to_detections(p, class_names) for p in predictions],
        targets=[to_detections(t, class_names) for t in targets],
        classes=list(class_names),
        conf_threshold=threshold,
        iou_threshold=0.5,
    )
    fig = cm.plot(title=f"test split, conf ≥ {threshold}, IoU ≥ 0.5", fig_size=(8, 7))
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)
    return path


def plot_predictions(
    images: Sequence[np.ndarray],
    predictions: Sequence[Boxes],
    targets: Sequence[Boxes],
    class_names: Sequence[str],
    path: Path,
    threshold: float = 0.5,
    count: int = 6,
) -> Path:
    """Grid: ground truth (left) beside predictions above ``threshold`` (right)."""
    box, label = sv.BoxAnnotator(thickness=2), sv.LabelAnnotator(text_scale=0.4, text_padding=3)
    n = min(count, len(images))
    fig, axes = plt.subplots(n, 2, figsize=(7, 3.3 * n), squeeze=False)
    for row in range(n):
        for col, (boxes, title) in enumerate(
            ((targets[row], "ground truth"), (predictions[row], f"prediction ≥ {threshold}"))
        ):
            det = to_detections(boxes, class_names, threshold)
            names = det.data["class_name"]
            texts = (
                [f"{c} {s:.2f}" for c, s in zip(names, det.confidence, strict=True)]
                if det.confidence is not None
                else list(names)
            )
            scene = label.annotate(box.annotate(images[row].copy(), det), det, texts)
            axes[row][col].imshow(scene)
            axes[row][col].set_title(title, fontsize=9)
            axes[row][col].axis("off")
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=100)
    plt.close(fig)
    return path
