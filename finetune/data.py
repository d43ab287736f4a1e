"""Torch datasets for the Trainer: supervision dataset -> albumentations -> image processor."""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
import supervision as sv
import torch
from torch.utils.data import Dataset

from finetune.pixels import pixel_array
from runtime.images import to_rgb_array

__all__ = ["DetectionTorchDataset", "collate_fn", "train_transform", "valid_transform"]


def _bbox_params() -> A.BboxParams:
    # clip=True: a box pushed partly outside the image is clipped to it; min_visibility drops a
    # box that is mostly gone, and filter_invalid_bboxes drops degenerate ones. Never corrupted.
    return A.BboxParams(
        format="pascal_voc",
        label_fields=["category"],
        clip=True,
        min_visibility=0.3,
        min_area=4.0,
        filter_invalid_bboxes=True,
    )


def train_transform(seed: int | None = None) -> A.Compose:
    """Training augmentation: flips, scale/translate (no rotation, so boxes stay tight), colour.

    ``seed`` fixes the augmentation sequence (albumentations keeps its own random state, which
    global seeds do not touch); DataLoader workers re-seed it per worker (see
    ``DetectionTorchDataset``).
    """
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.Affine(
                scale=(0.7, 1.25),
                translate_percent=(-0.1, 0.1),
                rotate=0,
                p=0.5,
                border_mode=0,
                fill=114,
            ),
            A.RandomBrightnessContrast(p=0.5),
            A.HueSaturationValue(p=0.3),
        ],
        bbox_params=_bbox_params(),
        seed=seed,
    )


def valid_transform() -> A.Compose:
    """Evaluation pipeline: deterministic; the image processor does the resize."""
    return A.Compose([A.NoOp()], bbox_params=_bbox_params())


def coco_annotation(image_id: int, xyxy: np.ndarray, class_ids: np.ndarray) -> dict[str, Any]:
    """COCO-detection annotation dict as the HF image processors expect it."""
    anns = []
    for (x0, y0, x1, y1), c in zip(xyxy.tolist(), class_ids.tolist(), strict=True):
        w, h = x1 - x0, y1 - y0
        anns.append(
            {
                "image_id": image_id,
                "category_id": int(c),
                "bbox": [x0, y0, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
        )
    return {"image_id": image_id, "annotations": anns}


class DetectionTorchDataset(Dataset):
    """Wrap an ``sv.DetectionDataset`` split: each item is ``{"pixel_values", "labels"}``.

    ``evaluation=True`` (the valid split the Trainer scores every epoch): the pixels come from
    the runtime's preprocessing (``finetune.pixels``), so the mAP that picks ``best/`` is
    computed on the pixels the deployed model sees; labels still come from the processor.
    Training items keep the processor's pixels (the difference is one uint8 step on ~1% of
    the pixels, irrelevant to learning).

    In a DataLoader worker the transform is re-seeded from the worker's torch seed (which the
    DataLoader derives from the seeded main process, and changes every epoch): otherwise
    every worker, and every epoch, would repeat the same copy of the augmentation state.
    PyTorch gives every process of a distributed run the same worker seeds, so ``rank`` (the
    process index under torchrun/accelerate) is mixed in for processes other than 0.
    """

    def __init__(
        self,
        dataset: sv.DetectionDataset,
        processor: Any,
        transform: A.Compose,
        *,
        evaluation: bool = False,
        rank: int = 0,
    ) -> None:
        self.dataset = dataset
        self.processor = processor
        self.transform = transform
        self.evaluation = evaluation
        self.rank = rank
        self.paths = list(dataset.image_paths)
        self._worker_seed: int | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        worker = torch.utils.data.get_worker_info()
        if worker is not None and self._worker_seed != worker.seed:
            self._worker_seed = worker.seed
            seed = worker.seed % 2**32
            if self.rank:
                seed = int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])
            self.transform.set_random_seed(seed)
        path = self.paths[idx]
        image = to_rgb_array(path)
        det = self.dataset.annotations[path]
        out = self.transform(
            image=image,
            bboxes=det.xyxy.astype(np.float32).reshape(-1, 4),
            category=det.class_id.astype(np.int64).reshape(-1),
        )
        bboxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        categories = np.asarray(out["category"], dtype=np.int64).reshape(-1)
        encoded = self.processor(
            images=out["image"],
            annotations=coco_annotation(idx, bboxes, categories),
            return_tensors="pt",
        )
        pixels = encoded["pixel_values"][0]
        if self.evaluation:
            pixels = torch.from_numpy(pixel_array(self.processor, [out["image"]])[0])
        return {"pixel_values": pixels, "labels": encoded["labels"][0]}


def collate_fn(batch: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in batch]),
        "labels": [item["labels"] for item in batch],
    }
