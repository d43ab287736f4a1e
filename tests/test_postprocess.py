"""The deploy post-processor equals transformers' own RT-DETR post-processing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor, AutoModelForObjectDetection

from finetune.postprocess import DeployModel, RTDetrPostProcessor

pytestmark = pytest.mark.model


def test_matches_hf_post_process_object_detection(tiny_checkpoint: Path) -> None:
    model = AutoModelForObjectDetection.from_pretrained(tiny_checkpoint).eval()
    processor = AutoImageProcessor.from_pretrained(tiny_checkpoint)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8) for h, w in ((48, 80), (90, 60))]
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values)
        sizes_wh = torch.tensor([[im.shape[1], im.shape[0]] for im in images])
        labels, boxes, scores = DeployModel(model)(pixel_values, sizes_wh)
    hf = processor.post_process_object_detection(
        outputs, threshold=0.0, target_sizes=[im.shape[:2] for im in images]
    )
    for i, ref in enumerate(hf):
        order = np.lexsort((ref["labels"].numpy(), -ref["scores"].numpy()))
        ours = np.lexsort((labels[i].numpy(), -scores[i].numpy()))
        np.testing.assert_allclose(scores[i].numpy()[ours], ref["scores"].numpy()[order], atol=1e-6)
        assert sorted(map(tuple, np.round(boxes[i].numpy(), 3))) == sorted(
            map(tuple, np.round(ref["boxes"].numpy(), 3))
        )
        assert sorted(labels[i].tolist()) == sorted(ref["labels"].tolist())


def test_boxes_scale_with_width_height_order() -> None:
    logits = torch.full((1, 2, 3), -10.0)
    logits[0, 1, 2] = 5.0  # query 1, class 2 is the confident one
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.25, 0.5, 0.5, 1.0]]])
    labels, xyxy, scores = RTDetrPostProcessor(num_top_queries=1)(
        logits,
        boxes,
        torch.tensor([[200, 100]]),  # width 200, height 100
    )
    assert labels.tolist() == [[2]]
    np.testing.assert_allclose(xyxy[0, 0].numpy(), [0.0, 0.0, 100.0, 100.0])
    assert float(scores[0, 0]) == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())
