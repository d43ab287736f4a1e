"""Load a detection dataset (COCO, YOLO or Pascal VOC) into checked ``sv.DetectionDataset`` splits.

Every raw file is checked before supervision reads it, and every defect found is reported at
once in one :class:`DatasetError`, so a broken export is fixed in one round trip instead of one
crash at a time. Boxes that leave the image are clipped (a note, not a defect); missing
``valid``/``test`` splits are split off ``train`` with a seeded shuffle.

Example:
    ```python
    from finetune.datasets import load_dataset

    splits = load_dataset("datasets/hard-hats")  # a Roboflow COCO export
    splits.classes  # ['head', 'helmet']
    splits.notes  # ["dropped unused supercategory 'hard-hats' (category id 0)"]
    ```
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import supervision as sv

from finetune.dataset_check import (
    _COCO_FILES,
    _SPLIT_DIRS,
    _YAML_FILES,
    SPLITS,
    DatasetError,
    RoboflowDownloadError,
    _Check,
    _split_sizes,
)
from finetune.dataset_formats import load_coco, load_voc, load_yolo

__all__ = [
    "DatasetError",
    "DatasetSplits",
    "RoboflowDownloadError",
    "detect_layout",
    "download_roboflow",
    "load_dataset",
]


@dataclass
class DatasetSplits:
    """Checked train/valid/test splits sharing one class list (index == ``class_id``)."""

    root: Path
    layout: str
    classes: list[str]
    train: sv.DetectionDataset
    valid: sv.DetectionDataset
    test: sv.DetectionDataset
    notes: list[str] = field(default_factory=list)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.classes))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}


def detect_layout(root: str | Path) -> str:
    """Return ``"coco"``, ``"yolo"`` or ``"voc"`` for a dataset folder.

    Raises:
        DatasetError: If none is recognised; the message lists what was looked for.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, ["folder does not exist"])
    split_dirs = [root / d for dirs in _SPLIT_DIRS.values() for d in dirs]
    if any((d / f).is_file() for d in [root, *split_dirs] for f in _COCO_FILES):
        return "coco"
    if any((root / f).is_file() for f in _YAML_FILES):
        return "yolo"
    if (root / "Annotations").is_dir() or any(
        (d / "annotations").is_dir() or (d.is_dir() and any(d.glob("*.xml"))) for d in split_dirs
    ):
        return "voc"
    found = sorted(p.name for p in root.iterdir())[:10]
    expected = (
        "COCO (_annotations.coco.json or annotations.json at the root or in train/ valid/ test/), "
        "YOLO (data.yaml) or Pascal VOC (Annotations/ + JPEGImages/, train/images/ + "
        "train/annotations/, or .xml files beside the images in train/)"
    )
    raise DatasetError(root, [f"no known dataset layout; expected {expected}, found {found}"])


# ------------------------------------------------------------------------------ post-loading


def _clip(ds: sv.DetectionDataset, sizes: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """Clip boxes to their image in place, dropping those left empty: (clipped, dropped)."""
    clipped = dropped = 0
    for path in ds.image_paths:
        det = ds.annotations[path]
        w, h = sizes[path]
        xyxy = np.clip(det.xyxy, 0, np.array([w, h, w, h], dtype=np.float32))
        keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        clipped += int(np.sum(np.any(xyxy != det.xyxy, axis=1) & keep))
        dropped += int(np.sum(~keep))
        det.xyxy = xyxy
        ds.annotations[path] = det[keep]
    return clipped, dropped


def _take(ds: sv.DetectionDataset, paths: list[str]) -> sv.DetectionDataset:
    return sv.DetectionDataset(ds.classes, sorted(paths), {p: ds.annotations[p] for p in paths})


def _count_note(what: str, counts: dict[str, int]) -> list[str]:
    total = sum(counts.values())
    parts = ", ".join(f"{s}: {n}" for s, n in counts.items() if n)
    return [f"{what.format(n=total, s='' if total == 1 else 'es')} ({parts})"] if total else []


def load_dataset(
    root: str | Path,
    *,
    split_seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> DatasetSplits:
    """Check and load a COCO, YOLO or Pascal VOC dataset into train/valid/test splits.

    Args:
        root: The dataset folder; its layout is found by :func:`detect_layout`.
        split_seed: Seed of the shuffle that splits a missing valid/test split off train.
        valid_fraction: Share of train that becomes valid when there is no valid split.
        test_fraction: Share of train that becomes test when there is no test split.

    Returns:
        The splits, sharing one class list, boxes clipped to their images; ``notes`` says
        what was changed or inferred.

    Raises:
        DatasetError: Listing every defect found (missing or undecodable images, unknown
            classes, empty boxes, malformed files, empty splits, no annotations at all).
        ValueError: If the fractions are not in (0, 1) or add up to 1 or more.

    Example:
        ```python
        splits = load_dataset(generate_dataset(spec="shapes"))
        splits.classes, splits.id2label[0], splits.notes
        ```
    """
    fractions = {"valid": valid_fraction, "test": test_fraction}
    if not all(0 < f < 1 for f in fractions.values()) or valid_fraction + test_fraction >= 1:
        raise ValueError(
            f"expected fractions in (0, 1) adding up to less than 1, got "
            f"valid_fraction={valid_fraction}, test_fraction={test_fraction}"
        )
    root = Path(root)
    layout = detect_layout(root)
    check = _Check(root, fractions)
    loader = {"coco": load_coco, "yolo": load_yolo, "voc": load_voc}[layout]
    classes, loaded = loader(root, check)
    clipped, dropped = {}, {}
    for split, ds in loaded.items():
        clipped[split], dropped[split] = _clip(ds, check.sizes)
    notes = check.notes + _count_note("clipped {n} box{s} that left the image", clipped)
    notes += _count_note("dropped {n} box{s} entirely outside the image", dropped)
    missing = [s for s in SPLITS if s not in loaded]
    if missing:
        train = loaded["train"]
        paths = sorted(train.image_paths)
        order = np.random.default_rng(split_seed).permutation(len(paths))
        sizes, start = _split_sizes(len(paths), missing, fractions) or {}, 0
        for split in missing:
            loaded[split] = _take(train, [paths[i] for i in order[start : start + sizes[split]]])
            start += sizes[split]
            notes.append(
                f"{split} split made from {fractions[split]:.0%} of train "
                f"(seed {split_seed}): {sizes[split]} image(s)"
            )
        loaded["train"] = _take(train, [paths[i] for i in order[start:]])
    seen = {int(c) for ds in loaded.values() for d in ds.annotations.values() for c in d.class_id}
    if unused := [c for k, c in enumerate(classes) if k not in seen]:
        notes.append(f"class(es) with no annotations: {unused}")
    return DatasetSplits(
        root, layout, classes, loaded["train"], loaded["valid"], loaded["test"], notes
    )


# -------------------------------------------------------------------------------- Roboflow


def download_roboflow(spec: str, dest: str | Path, *, format: str = "coco") -> Path:
    """Download a Roboflow dataset version with the API key in ``$ROBOFLOW_API_KEY``.

    Args:
        spec: ``"workspace/project/version"``, e.g. ``"acme/hard-hats/3"``.
        dest: Folder to download into.
        format: Roboflow export format (``"coco"``, ``"yolov8"``, ``"voc"``, ...).

    Returns:
        The folder the dataset was written to.

    Raises:
        ValueError: If ``spec`` is not ``workspace/project/version``.
        RoboflowDownloadError: If the key is not set, Roboflow cannot be reached, or the
            download fails. The message never contains the key, and the original
            exception (whose URL may) is not chained.

    Example:
        ```python
        root = download_roboflow("acme/hard-hats/3", "datasets/hard-hats")
        splits = load_dataset(root)
        ```
    """
    parts = spec.strip("/").split("/") if isinstance(spec, str) else []
    if len(parts) != 3 or not all(parts) or not parts[2].isdigit() or int(parts[2]) < 1:
        raise ValueError(
            "expected a Roboflow spec 'workspace/project/version' with a version number >= 1 "
            f"(e.g. 'acme/hard-hats/3'), got {spec!r}"
        )
    key = os.environ.get("ROBOFLOW_API_KEY", "").strip()
    if not key:
        where = "app.roboflow.com > Settings > API Keys"
        raise RoboflowDownloadError(spec, f"set ROBOFLOW_API_KEY ({where}) to download {spec!r}")
    import requests
    from roboflow import Roboflow

    workspace, project, version = parts
    try:
        project_ = Roboflow(api_key=key).workspace(workspace).project(project)
        dataset = project_.version(int(version)).download(format, location=str(dest))
    except (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError) as err:
        raise RoboflowDownloadError(
            spec,
            f"could not reach Roboflow to download {spec!r} (no network? {type(err).__name__})",
        ) from None
    except Exception as err:  # roboflow raises RuntimeError, KeyError, HTTPError, ...
        message = str(err).replace(key, "***")[:300]
        raise RoboflowDownloadError(
            spec, f"Roboflow download of {spec!r} failed ({type(err).__name__}: {message})"
        ) from None
    return Path(getattr(dataset, "location", None) or dest)
