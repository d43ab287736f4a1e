"""The images an export is verified (and int8-calibrated) on.

In order of preference: images the caller passes; the test split (else valid) of the dataset
the run was trained on (``metrics.json`` key ``dataset``), with ground truth so that mAP is
compared too; generated shapes where there is no dataset (e.g. a bare checkpoint folder).
Calibration images come from the training split, never from the images verified on.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finetune.metrics import Boxes
from runtime.errors import first_line
from runtime.images import to_rgb_array

__all__ = ["VerificationImages", "caller_images", "dataset_images", "synthetic_images"]

logger = logging.getLogger(__name__)


@dataclass
class VerificationImages:
    """RGB uint8 images to compare PyTorch and ONNX on, with ground truth where known.

    Attributes:
        images: The images verified on.
        source: Human-readable origin, written into the report.
        targets: Ground truth per image (same order), or None when there is none.
        class_names: Dataset class names (index == class id) when ``targets`` is set.
        calibration: Images for int8 calibration (training images where there are some).
        notes: Why mAP is not measured, which fallback was taken, etc.
    """

    images: list[np.ndarray]
    source: str
    targets: list[Boxes] | None = None
    class_names: list[str] | None = None
    calibration: list[np.ndarray] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def caller_images(images: Sequence[np.ndarray]) -> VerificationImages:
    """Images given through the Python API; they also serve as calibration images."""
    arrays = [to_rgb_array(image) for image in images]
    if not arrays:
        raise ValueError("expected at least one verification image, got an empty list")
    return VerificationImages(
        arrays,
        f"{len(arrays)} image(s) given by the caller",
        calibration=list(arrays),
        notes=["no ground truth: mAP not measured"],
    )


def synthetic_images(count: int = 8, calibration: int = 16, seed: int = 0) -> VerificationImages:
    """Generated shapes on textured backgrounds (non-square, so the resize is exercised)."""
    from finetune.synthetic import SyntheticSpec, generate_dataset

    spec = SyntheticSpec(
        name="export-verify",
        classes=("circle", "square", "triangle", "star"),
        image_size=(320, 240),
        split_sizes=(calibration, 0, count),
        seed=seed,
    )
    with tempfile.TemporaryDirectory(prefix="rtdetr-export-") as tmp:
        root = generate_dataset(Path(tmp) / "shapes", spec)
        test = [to_rgb_array(p) for p in sorted((root / "test").glob("*.jpg"))]
        train = [to_rgb_array(p) for p in sorted((root / "train").glob("*.jpg"))]
    return VerificationImages(
        test,
        f"{len(test)} generated image(s) (no dataset)",
        calibration=train,
        notes=["no dataset: mAP not measured"],
    )


def _dataset_root(run_dir: Path) -> Path | None:
    metrics = run_dir / "metrics.json"
    try:
        root = json.loads(metrics.read_text()).get("dataset")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return Path(root) if root else None


def dataset_images(
    run_dir: Path | None,
    id2label: dict[int, str],
    *,
    max_images: int = 64,
    calibration: int = 32,
) -> VerificationImages:
    """Test (else valid) images of the run's dataset; generated images where there is none.

    mAP is only compared when the dataset's classes are the checkpoint's labels, in order.
    """
    from finetune.datasets import DatasetError, load_dataset
    from finetune.evaluate import targets_of

    root = _dataset_root(run_dir) if run_dir is not None else None
    if root is None:
        return synthetic_images(min(max_images, 8), min(calibration, 16))
    try:
        splits = load_dataset(root)
    except (DatasetError, OSError, ValueError) as exc:
        fallback = synthetic_images(min(max_images, 8), min(calibration, 16))
        note = f"dataset {root} of the run cannot be loaded ({first_line(exc)})"
        logger.warning("%s; verifying on generated images", note)
        fallback.notes.insert(0, note)
        return fallback
    name, split = ("test", splits.test) if len(splits.test) else ("valid", splits.valid)
    paths = list(split.image_paths)[:max_images]
    subset = type(split)(split.classes, paths, {p: split.annotations[p] for p in paths})
    images = [to_rgb_array(p) for p in paths]
    calib = [to_rgb_array(p) for p in list(splits.train.image_paths)[:calibration]] or images
    result = VerificationImages(
        images, f"{len(images)} image(s) of the {name} split of {root}", calibration=calib
    )
    labels = [id2label[i] for i in sorted(id2label)]
    if list(splits.classes) == labels:
        result.targets, result.class_names = targets_of(subset), list(splits.classes)
    else:
        result.notes.append(
            f"dataset classes {splits.classes} are not the checkpoint labels "
            f"{labels}: mAP not measured"
        )
    return result
