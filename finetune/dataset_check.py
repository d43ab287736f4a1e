"""Shared groundwork for loading detection datasets: the errors and the defect collector.

:class:`_Check` gathers every defect found while the raw files are read, so that
:func:`finetune.datasets.load_dataset` can report them all in one :class:`DatasetError`.
The format readers (:mod:`finetune.dataset_formats`) and the public API
(:mod:`finetune.datasets`) both build on this module, which imports neither of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["SPLITS", "DatasetError", "RoboflowDownloadError"]

SPLITS = ("train", "valid", "test")
_SPLIT_DIRS = {"train": ("train",), "valid": ("valid", "val"), "test": ("test",)}
_COCO_FILES = ("_annotations.coco.json", "annotations.json")
_YAML_FILES = ("data.yaml", "data.yml")
# The image extensions supervision's VOC and YOLO loaders list.
_VOC_EXTS = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
_YOLO_EXTS = _VOC_EXTS | {".dng", ".mpo"}
_EXIF_ORIENTATION, _QUARTER_TURNS = 274, frozenset({5, 6, 7, 8})


class DatasetError(ValueError):
    """A dataset that cannot be trained on.

    Attributes:
        root: The dataset folder (or Roboflow spec) the defects belong to.
        defects: Every problem found, each naming the file (or annotation id) and the defect.
    """

    def __init__(self, root: str | Path, defects: Iterable[str]) -> None:
        self.root = str(root)
        self.defects: list[str] = list(defects)
        lines = "".join(f"\n  - {d}" for d in self.defects)
        super().__init__(f"Dataset {self.root} has {len(self.defects)} defect(s):{lines}")


class RoboflowDownloadError(DatasetError):
    """A Roboflow download that could not start or finish; the message never holds the key."""

    def __init__(self, spec: str, message: str) -> None:
        self.root, self.defects = spec, [message]
        ValueError.__init__(self, message)


class _Check:
    """Collects defects, notes and decoded image sizes while the raw files are checked."""

    def __init__(self, root: Path, fractions: dict[str, float]) -> None:
        self.root, self.fractions = root, fractions
        self.defects: list[str] = []
        self.notes: list[str] = []
        self.sizes: dict[str, tuple[int, int]] = {}  # resolved path -> (width, height)
        self.image_counts: dict[str, int] = {}
        self.annotations = 0  # every annotation seen, valid or not
        self.unreadable = False  # an annotation file could not be parsed at all

    def rel(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)

    def add(self, where: Path, message: str) -> None:
        self.defects.append(f"{self.rel(where)}: {message}")

    def image(self, path: Path) -> None:
        """Decode one image (PIL) and record its size as cv2 loads it (EXIF quarter turns)."""
        if not path.is_file():
            self.add(path, "image file not found")
            return
        try:
            with Image.open(path) as img:
                img.load()
                w, h = img.size
                turned = img.getexif().get(_EXIF_ORIENTATION) in _QUARTER_TURNS
        except Exception as err:  # decoders raise many types; each one is a defect
            self.add(path, f"cannot decode image ({type(err).__name__}: {err})")
            return
        self.sizes[str(path.resolve())] = (h, w) if turned else (w, h)

    def raise_if_defects(self, splits: Iterable[str]) -> None:
        """Add the dataset-wide defects, then raise one DatasetError with all of them."""
        if self.annotations == 0 and not self.unreadable:
            self.defects.append("no annotations in any split: nothing to train on")
        missing = [s for s in SPLITS if s not in splits]
        n = self.image_counts.get("train", 0)
        if missing and n and _split_sizes(n, missing, self.fractions) is None:
            self.defects.append(
                f"train has {n} image(s): too few to split off {' and '.join(missing)} "
                f"(need at least {len(missing) + 1}); add images or provide the splits"
            )
        if self.defects:
            raise DatasetError(self.root, self.defects)

    def split_images(self, split: str, folder: Path, paths: list[Path]) -> None:
        self.image_counts[split] = len(paths)
        if not paths:
            self.add(folder, "split has no images")
        for path in paths:
            self.image(path)


def _split_sizes(n: int, missing: list[str], fractions: dict[str, float]) -> dict[str, int] | None:
    """Images each missing split takes from ``n`` train images (>= 1 each); None if too few."""
    sizes = {s: max(1, round(n * fractions[s])) for s in missing}
    return sizes if n - sum(sizes.values()) >= 1 else None


def _images_in(folder: Path, exts: frozenset[str] = _VOC_EXTS) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)


def _split_dir(root: Path, split: str) -> Path | None:
    return next((root / d for d in _SPLIT_DIRS[split] if (root / d).is_dir()), None)


def _finite(values: Iterable[Any]) -> list[float] | None:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) for v in out) else None


def _sv_load(root: Path, split: str, load: Callable[..., Any], *paths: Path) -> Any:
    """Run a supervision loader; a ValueError it still raises becomes a DatasetError."""
    try:
        return load(*map(str, paths))
    except ValueError as err:
        raise DatasetError(root, [f"{split}: supervision could not load it ({err})"]) from err
