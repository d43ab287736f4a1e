"""Predict with a PyTorch checkpoint through the deploy post-processor and score it.

The same :class:`~finetune.postprocess.DeployModel` is what ``export`` traces to ONNX, and
:func:`~finetune.metrics.mean_average_precision` is what the benchmark scores ONNX with. The
model input is :func:`finetune.pixels.pixel_values`: the runtime's preprocessing with the
checkpoint's processor config, so PyTorch and the exported model are scored on the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import supervision as sv
import torch
from tqdm.auto import tqdm

from finetune.metrics import Boxes, mean_average_precision
from finetune.pixels import pixel_values
from finetune.postprocess import DeployModel
from runtime.images import to_rgb_array

__all__ = ["evaluate_dataset", "predict_images", "targets_of"]


@torch.inference_mode()
def predict_images(
    model: torch.nn.Module,
    processor: Any,
    images: Sequence[np.ndarray],
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> list[Boxes]:
    """All top-k detections (no threshold) for RGB ``images``, boxes in their own pixels.

    ``images`` are RGB uint8 arrays, preprocessed by :func:`finetune.pixels.pixel_values`
    (``processor`` only supplies its config), exactly as ``runtime.Detector`` preprocesses.
    """
    deploy = DeployModel(model).eval()
    device = next(model.parameters()).device
    out: list[Boxes] = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="predict", disable=not progress, leave=False):
        batch = list(images[start : start + batch_size])
        pixels = pixel_values(processor, batch, device=device)
        sizes = torch.tensor([[im.shape[1], im.shape[0]] for im in batch], device=device)
        labels, boxes, scores = deploy(pixels, sizes)
        for lab, box, score in zip(
            labels.cpu().numpy(), boxes.cpu().numpy(), scores.cpu().numpy(), strict=True
        ):
            out.append(Boxes(xyxy=box, class_id=lab, confidence=score))
    return out


def targets_of(dataset: sv.DetectionDataset) -> list[Boxes]:
    """Ground truth of every image of ``dataset``, in ``dataset.image_paths`` order."""
    return [
        Boxes(xyxy=dataset.annotations[p].xyxy, class_id=dataset.annotations[p].class_id)
        for p in dataset.image_paths
    ]


def evaluate_dataset(
    model: torch.nn.Module,
    processor: Any,
    dataset: sv.DetectionDataset,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[dict[str, float], list[Boxes], list[Boxes]]:
    """mAP of ``model`` on ``dataset``; returns ``(metrics, predictions, targets)``."""
    images = [to_rgb_array(p) for p in dataset.image_paths]
    predictions = predict_images(model, processor, images, batch_size=batch_size, progress=progress)
    targets = targets_of(dataset)
    return mean_average_precision(predictions, targets, dataset.classes), predictions, targets
