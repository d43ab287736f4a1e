"""Tiny COCO / YOLO / Pascal VOC datasets written at test time (64x48 images by default)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

__all__ = [
    "coco_box",
    "roboflow_categories",
    "write_coco_split",
    "write_image",
    "write_roboflow_coco",
    "write_voc_xml",
    "write_yolo",
]

SIZE = (64, 48)


def write_image(
    path: Path,
    size: tuple[int, int] = SIZE,
    mode: str = "RGB",
    seed: int = 0,
    orientation: int | None = None,
) -> Path:
    """Write a small noise image (mode ``RGB``, ``L`` or ``RGBA``; format from the suffix).

    ``orientation`` sets the EXIF orientation tag (6: loaders turn the image a quarter turn).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], *channels))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(pixels.astype(np.uint8), mode=mode).save(path, exif=exif)
    return path


def roboflow_categories(name: str, classes: Sequence[str]) -> list[dict[str, Any]]:
    """Categories as Roboflow exports them: id 0 the unused supercategory, classes 1..N."""
    return [{"id": 0, "name": name, "supercategory": "none"}] + [
        {"id": i + 1, "name": c, "supercategory": name} for i, c in enumerate(classes)
    ]


def coco_box(ann_id: int, image_id: int, category_id: int, bbox: Sequence[float]) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": list(bbox),
        "area": bbox[2] * bbox[3],
        "segmentation": [],
        "iscrowd": 0,
    }


def write_coco_split(
    folder: Path,
    images: Sequence[str],
    annotations: Sequence[dict],
    categories: Sequence[dict],
    *,
    size: tuple[int, int] = SIZE,
    file: str = "_annotations.coco.json",
) -> Path:
    """Write ``images`` (ids 0..n-1, each drawn at ``size``) and the COCO json beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(images):
        write_image(folder / name, size, seed=i)
    coco = {
        "images": [
            {"id": i, "file_name": n, "width": size[0], "height": size[1]}
            for i, n in enumerate(images)
        ],
        "annotations": list(annotations),
        "categories": list(categories),
    }
    (folder / file).write_text(json.dumps(coco))
    return folder / file


def write_roboflow_coco(root: Path, splits: Sequence[str] = ("train", "valid", "test")) -> Path:
    """Roboflow COCO export, classes ``cat`` (id 1) and ``dog`` (id 2), 3 images per split.

    Image 0 holds a cat at [4, 6, 20, 10] (xywh) and a dog at [30, 10, 16, 30]; image 1 a dog
    at [0, 0, 64, 48]; image 2 is a background image.
    """
    categories = roboflow_categories("pets", ["cat", "dog"])
    for split in splits:
        annotations = [
            coco_box(0, 0, 1, [4, 6, 20, 10]),
            coco_box(1, 0, 2, [30, 10, 16, 30]),
            coco_box(2, 1, 2, [0, 0, 64, 48]),
        ]
        names = [f"{split}_{i}.jpg" for i in range(3)]
        write_coco_split(root / split, names, annotations, categories)
    return root


def write_yolo(
    root: Path,
    names: list[str] | dict[int, str],
    labels: dict[str, dict[str, str | None]],
    *,
    yaml_extra: dict[str, Any] | None = None,
    layout: str = "{split}/{kind}",
) -> Path:
    """Write a YOLO dataset: ``labels[split][stem]`` is the label text (None: no label file).

    ``layout`` places the folders, ``"{split}/{kind}"`` (Roboflow) or ``"{kind}/{split}"``
    (Ultralytics); ``kind`` is ``images`` or ``labels``.
    """
    for split, items in labels.items():
        for i, (stem, text) in enumerate(items.items()):
            write_image(root / layout.format(split=split, kind="images") / f"{stem}.jpg", seed=i)
            if text is not None:
                label = root / layout.format(split=split, kind="labels") / f"{stem}.txt"
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text(text)
    (root / "data.yaml").write_text(yaml.safe_dump({"names": names, **(yaml_extra or {})}))
    return root


def write_voc_xml(path: Path, objects: Sequence[tuple[str, int, int, int, int]]) -> Path:
    """Pascal VOC xml with ``(name, xmin, ymin, xmax, ymax)`` objects (1-based, inclusive)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for n, x0, y0, x1, y1 in objects
    )
    path.write_text(
        f"<annotation><filename>{path.stem}.jpg</filename><size><width>{SIZE[0]}</width>"
        f"<height>{SIZE[1]}</height><depth>3</depth></size>{body}</annotation>"
    )
    return path
