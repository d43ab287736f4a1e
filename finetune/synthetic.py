"""Generate the embedded default dataset: coloured shapes on textured backgrounds.

The dataset is written in the layout Roboflow exports for COCO (``train/ valid/ test/``, each
with ``_annotations.coco.json`` and the images, category 0 an unused supercategory), so the
embedded default goes through exactly the loader a user's Roboflow export goes through.

Two distinct "worlds" exist: ``shapes`` (the default fine-tuning dataset) and ``pretrain``
(other shape classes, other palettes), used to make the small warm-start checkpoint, as COCO
pre-training is distinct from a custom dataset.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from finetune.runs import remove_stale_temp, temp_prefix
from runtime.files import write_checked

__all__ = ["SPECS", "SyntheticSpec", "default_dataset_dir", "generate_dataset"]

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class SyntheticSpec:
    """What one synthetic world looks like and how many images each split gets."""

    name: str
    classes: tuple[str, ...]
    image_size: tuple[int, int] = (320, 320)
    split_sizes: tuple[int, int, int] = (1200, 100, 100)
    max_objects: int = 4
    min_size: float = 0.14
    max_size: float = 0.34
    seed: int = 0


SPECS: dict[str, SyntheticSpec] = {
    "shapes": SyntheticSpec(
        name="shapes",
        classes=("circle", "square", "triangle", "star", "cross"),
        seed=0,
    ),
    "pretrain": SyntheticSpec(
        name="pretrain",
        classes=("ellipse", "pentagon", "hexagon", "diamond", "ring", "arrow", "heart", "bar"),
        split_sizes=(4000, 100, 100),
        max_objects=5,
        seed=1,
    ),
}


def default_dataset_dir(name: str = "shapes") -> Path:
    """Cache folder of a generated dataset (``$RTDETR_DEPLOY_CACHE`` or ``~/.cache``)."""
    root = os.environ.get("RTDETR_DEPLOY_CACHE") or Path.home() / ".cache" / "rtdetr-deploy"
    return Path(root) / "datasets" / name


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a closed shape of radius ``r`` rotated by ``angle``."""

    def ring(n: int, radii: list[float], phase: float = 0.0) -> list[tuple[float, float]]:
        pts = []
        for i in range(n):
            a = angle + phase + 2 * math.pi * i / n
            rr = radii[i % len(radii)]
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts

    if kind in ("circle", "ring"):
        return ring(48, [r])
    if kind == "ellipse":
        return [
            (
                cx + r * math.cos(t) * math.cos(angle) - 0.55 * r * math.sin(t) * math.sin(angle),
                cy + r * math.cos(t) * math.sin(angle) + 0.55 * r * math.sin(t) * math.cos(angle),
            )
            for t in np.linspace(0, 2 * math.pi, 48, endpoint=False)
        ]
    if kind == "square":
        return ring(4, [r], math.pi / 4)
    if kind == "diamond":
        return ring(4, [r, 0.6 * r])
    if kind == "triangle":
        return ring(3, [r], -math.pi / 2)
    if kind == "pentagon":
        return ring(5, [r], -math.pi / 2)
    if kind == "hexagon":
        return ring(6, [r])
    if kind == "star":
        return ring(10, [r, 0.45 * r], -math.pi / 2)
    if kind == "cross":
        w = 0.33
        base = [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ]
        return _rotate(base, cx, cy, r * 0.9, angle)
    if kind == "arrow":
        base = [(-1, -0.25), (0.2, -0.25), (0.2, -0.6), (1, 0), (0.2, 0.6), (0.2, 0.25), (-1, 0.25)]
        return _rotate(base, cx, cy, r, angle)
    if kind == "bar":
        base = [(-1, -0.3), (1, -0.3), (1, 0.3), (-1, 0.3)]
        return _rotate(base, cx, cy, r, angle)
    if kind == "heart":
        pts = []
        for t in np.linspace(0, 2 * math.pi, 48, endpoint=False):
            x = 16 * math.sin(t) ** 3 / 17
            y = (
                -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
                / 17
            )
            pts.append((x, y))
        return _rotate(pts, cx, cy, r, angle)
    raise ValueError(f"unknown synthetic shape {kind!r}")


def _rotate(
    pts: list[tuple[float, float]], cx: float, cy: float, r: float, angle: float
) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Smooth colour gradient plus low-contrast noise texture."""
    c0, c1 = rng.uniform(40, 215, size=(2, 3))
    t = (
        np.linspace(0, 1, w)[None, :, None]
        if rng.random() < 0.5
        else np.linspace(0, 1, h)[:, None, None]
    )
    base = c0 * (1 - t) + c1 * t
    base = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
    noise = rng.normal(0, 1, size=(h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    noise_img = Image.fromarray(
        ((noise - noise.min()) / (np.ptp(noise) + 1e-6) * 255).astype(np.uint8)
    )
    noise = np.asarray(noise_img.resize((w, h), Image.BILINEAR), dtype=np.float32) - 127.5
    img = np.clip(base + 0.25 * noise, 0, 255).astype(np.uint8)
    return Image.fromarray(img)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    for _ in range(20):
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - background).sum() > 180:
            break
    return tuple(int(v) for v in colour)


def _render(
    spec: SyntheticSpec, rng: np.random.Generator
) -> tuple[Image.Image, list[tuple[int, list[float]]]]:
    w, h = spec.image_size
    img = _background(rng, w, h)
    draw = ImageDraw.Draw(img)
    objects: list[tuple[int, list[float]]] = []
    placed: list[tuple[float, float, float]] = []
    n = int(rng.integers(1, spec.max_objects + 1))
    for _ in range(n):
        for _attempt in range(30):
            r = rng.uniform(spec.min_size, spec.max_size) * min(w, h) / 2
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            if all(math.hypot(cx - x, cy - y) > 0.9 * (r + rr) for x, y, rr in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        cls = int(rng.integers(len(spec.classes)))
        kind = spec.classes[cls]
        pts = _polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi))
        bg = np.asarray(img.getpixel((int(cx), int(cy))), dtype=np.int64)
        colour = _contrasting_colour(rng, bg)
        draw.polygon(pts, fill=colour)
        if kind == "ring":
            inner = _polygon("circle", cx, cy, 0.55 * r, 0.0)
            draw.polygon(inner, fill=tuple(int(v) for v in bg))
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, y0 = max(0.0, min(xs)), max(0.0, min(ys))
        x1, y1 = min(float(w), max(xs)), min(float(h), max(ys))
        objects.append((cls, [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))
    return img, objects


def _write_split(spec: SyntheticSpec, split: str, count: int, folder: Path, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    categories = [{"id": 0, "name": spec.name, "supercategory": "none"}] + [
        {"id": i + 1, "name": c, "supercategory": spec.name} for i, c in enumerate(spec.classes)
    ]
    images, annotations = [], []
    for i in range(count):
        img, objects = _render(spec, rng)
        file_name = f"{split}_{i:05d}.jpg"
        encoded = io.BytesIO()  # in memory, then size-checked (see runtime.files)
        img.save(encoded, format="JPEG", quality=92)
        write_checked(folder / file_name, encoded.getvalue())
        images.append({"id": i, "file_name": file_name, "width": img.width, "height": img.height})
        for cls, bbox in objects:
            annotations.append(
                {
                    "id": len(annotations),
                    "image_id": i,
                    "category_id": cls + 1,
                    "bbox": bbox,
                    "area": round(bbox[2] * bbox[3], 2),
                    "segmentation": [],
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {"description": f"rtdetr-deploy synthetic '{spec.name}'"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    write_checked(folder / "_annotations.coco.json", json.dumps(coco).encode())


def generate_dataset(
    out_dir: str | Path | None = None,
    spec: SyntheticSpec | str = "shapes",
    *,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic dataset in Roboflow's COCO layout and return its folder.

    The folder is built under a temporary name and renamed into place, so an interrupted
    generation never leaves a half-written dataset that a later run would trust.
    """
    spec = SPECS[spec] if isinstance(spec, str) else spec
    out = Path(out_dir) if out_dir is not None else default_dataset_dir(spec.name)
    if out.exists() and not overwrite:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp(out.parent, out.name)  # a generation killed earlier
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), dir=out.parent))
    try:
        for k, (split, count) in enumerate(zip(SPLITS, spec.split_sizes, strict=True)):
            if count:
                _write_split(spec, split, count, tmp / split, seed=spec.seed * 1000 + k)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
