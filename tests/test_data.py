"""Augmentation is bbox-safe and the torch dataset feeds the Trainer what RT-DETR expects."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image

from finetune.data import DetectionTorchDataset, collate_fn, train_transform, valid_transform
from finetune.model import small_processor
from finetune.pixels import preprocessing_of

pytestmark = pytest.mark.unit


def test_train_augmentation_never_corrupts_boxes() -> None:
    rng = np.random.default_rng(0)
    transform = train_transform()
    image = rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    # one box in the middle, one touching the right edge, one in a corner
    boxes = np.array([[60, 40, 100, 80], [130, 10, 160, 50], [0, 90, 25, 120]], np.float32)
    labels = np.array([0, 1, 2])
    kept = 0
    for _ in range(300):
        out = transform(image=image, bboxes=boxes, category=labels)
        h, w = out["image"].shape[:2]
        got = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        assert (h, w) == (120, 160)
        assert len(got) == len(out["category"]) <= 3
        assert (got[:, 0] >= 0).all() and (got[:, 1] >= 0).all()
        assert (got[:, 2] <= w).all() and (got[:, 3] <= h).all()
        assert (got[:, 2] > got[:, 0]).all() and (got[:, 3] > got[:, 1]).all()
        # a box keeps its size up to the scale range (no rotation: boxes stay tight)
        for box, c in zip(got, out["category"], strict=True):
            ref = boxes[int(c)]
            ratio = (box[2] - box[0]) / (ref[2] - ref[0])
            assert ratio <= 1.25 + 1e-3
        kept += len(got)
    assert kept > 300 * 2  # most boxes survive augmentation


def test_valid_transform_is_identity() -> None:
    image = np.arange(40 * 30 * 3, dtype=np.uint8).reshape(40, 30, 3)
    boxes = np.array([[1, 2, 20, 30]], np.float32)
    out = valid_transform()(image=image, bboxes=boxes, category=np.array([1]))
    assert np.array_equal(out["image"], image)
    np.testing.assert_allclose(np.asarray(out["bboxes"]), boxes)


def test_torch_dataset_item_and_collate(tmp_path) -> None:
    paths = []
    for i, mode in enumerate(("RGB", "L", "RGBA")):
        path = tmp_path / f"im{i}.png"
        Image.new(mode, (100, 50)).save(path)
        paths.append(str(path))
    annotations = {
        paths[0]: sv.Detections(xyxy=np.array([[10, 10, 60, 40]], float), class_id=np.array([1])),
        paths[1]: sv.Detections.empty(),
        paths[2]: sv.Detections(xyxy=np.array([[0, 0, 100, 50]], float), class_id=np.array([0])),
    }
    dataset = sv.DetectionDataset(["a", "b"], paths, annotations)
    torch_ds = DetectionTorchDataset(dataset, small_processor(64), valid_transform())
    first = torch_ds[0]
    assert first["pixel_values"].shape == (3, 64, 64)
    assert first["labels"]["class_labels"].tolist() == [1]
    # normalised cxcywh of (10, 10, 60, 40) in a 100x50 image
    np.testing.assert_allclose(first["labels"]["boxes"].numpy(), [[0.35, 0.5, 0.5, 0.6]], atol=1e-6)
    assert first["labels"]["orig_size"].tolist() == [50, 100]
    batch = collate_fn([torch_ds[i] for i in range(3)])
    assert batch["pixel_values"].shape == (3, 3, 64, 64)
    assert batch["pixel_values"].dtype == torch.float32
    assert len(batch["labels"][1]["class_labels"]) == 0  # background image


@pytest.mark.unit
def test_evaluation_items_carry_the_runtime_pixels(tmp_path) -> None:
    """The valid split the Trainer scores each epoch sees what the deployed model sees."""
    from runtime.images import to_rgb_array
    from runtime.preprocessing import preprocess

    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (97, 143, 3), dtype=np.uint8)).save(path)
    annotations = {str(path): sv.Detections(xyxy=np.array([[5, 5, 50, 40]], float),
                                            class_id=np.array([0]))}  # fmt: skip
    dataset = sv.DetectionDataset(["a"], [str(path)], annotations)
    processor = small_processor(64)
    evaluation = DetectionTorchDataset(dataset, processor, valid_transform(), evaluation=True)[0]
    training = DetectionTorchDataset(dataset, processor, valid_transform())[0]
    expected = preprocess([to_rgb_array(path)], preprocessing_of(processor))[0]
    np.testing.assert_array_equal(evaluation["pixel_values"].numpy(), expected)
    assert not np.array_equal(training["pixel_values"].numpy(), expected)  # the processor's
    assert evaluation["labels"]["boxes"].tolist() == training["labels"]["boxes"].tolist()
