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

import json
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
import yaml
from PIL import Image

__all__ = [
    "DatasetError",
    "DatasetSplits",
    "RoboflowDownloadError",
    "detect_layout",
    "download_roboflow",
    "load_dataset",
]

SPLITS = ("train", "valid", "test")
_SPLIT_DIRS = {"train": ("train",), "valid": ("valid", "val"), "test": ("test",)}
_COCO_FILES = ("_annotations.coco.json", "annotations.json")
_YAML_FILES = ("data.yaml", "data.yml")
# The image extensions supervision's VOC and YOLO loaders list.
_VOC_EXTS = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
_YOLO_EXTS = _VOC_EXTS | {".dng", ".mpo"}
_EXIF_ORIENTATION, _QUARTER_TURNS = 274, frozenset({5, 6, 7, 8})

_Loaded = dict[str, sv.DetectionDataset]


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


# -------------------------------------------------------------------------------------- COCO


def _coco_check(path: Path, check: _Check, split: str) -> dict[str, Any] | None:
    """Check one COCO file and the images beside it; return the parsed JSON if usable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        check.add(path, f"malformed JSON ({err})")
        check.unreadable = True
        return None
    keys = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in keys):
        check.add(path, f"expected a JSON object with lists {list(keys)}, got {str(data)[:80]}")
        return None
    cats: dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or type(cat.get("id")) is not int or not cat.get("name"):
            check.add(path, f"category #{i} needs an integer 'id' and a 'name', got {cat!r}")
        elif cat["name"] in cats.values():  # supervision maps categories by name
            check.add(path, f"category id {cat['id']} repeats the name {cat['name']!r}")
        else:
            cats[cat["id"]] = cat["name"]
    folder, files, ids = path.parent, [], set()
    for i, img in enumerate(data["images"]):
        name = img.get("file_name") if isinstance(img, dict) else None
        if not isinstance(name, str) or _finite([img.get("width"), img.get("height")]) is None:
            check.add(path, f"image #{i} needs 'id', 'file_name', 'width', 'height', got {img!r}")
        elif folder.resolve() not in (folder / name).resolve().parents:
            check.add(path, f"image id {img.get('id')} file_name {name!r} is outside the folder")
        elif img.get("id") in ids or name in files:
            check.add(path, f"image id {img.get('id')} ({name!r}) appears twice")
        else:
            files.append(name)
            ids.add(img.get("id"))
    check.split_images(split, path, [folder / name for name in files])
    for i, ann in enumerate(data["annotations"]):
        check.annotations += 1
        ann = ann if isinstance(ann, dict) else {}
        aid, bbox = ann.get("id", f"#{i}"), ann.get("bbox")
        box = _finite(bbox) if isinstance(bbox, list) and len(bbox) == 4 else None
        if ann.get("image_id") not in ids:
            check.add(path, f"annotation id {aid} points at missing image_id {ann.get('image_id')}")
        elif ann.get("category_id") not in cats:
            check.add(path, f"annotation id {aid} has unknown category_id {ann.get('category_id')}")
        elif box is None:
            check.add(path, f"annotation id {aid} has malformed bbox {bbox!r} (want [x,y,w,h])")
        elif box[2] <= 0 or box[3] <= 0:
            check.add(path, f"annotation id {aid} has non-positive size w={box[2]:g} h={box[3]:g}")
    return data


def _coco_classes(parsed: dict[Path, dict], check: _Check) -> tuple[dict[int, str], set[int]]:
    """All categories by id, and the ids to drop: unused supercategories (and unused id 0)."""
    names: dict[int, str] = {}
    used, supers, where = set(), [], {}  # supers: (category id, its supercategory)
    for path, data in parsed.items():
        for cat in data["categories"]:
            if not isinstance(cat, dict) or type(cat.get("id")) is not int:
                continue
            if names.setdefault(cat["id"], cat.get("name")) != cat.get("name"):
                other = f"{names[cat['id']]!r} in {check.rel(where[cat['id']])}"
                check.add(path, f"category id {cat['id']} is {cat.get('name')!r} here, {other}")
            where.setdefault(cat["id"], path)
            supers.append((cat["id"], cat.get("supercategory")))
        used |= {a.get("category_id") for a in data["annotations"] if isinstance(a, dict)}
    parents = {(s, c) for c, s in supers}
    drop = {
        c
        for c, name in names.items()
        if c not in used and (c == 0 or any(s == name and other != c for s, other in parents))
    }
    return names, drop


def _load_coco(root: Path, check: _Check) -> tuple[list[str], _Loaded]:
    files = {}
    for split in SPLITS:
        folder = _split_dir(root, split)
        found = [folder / f for f in _COCO_FILES if folder and (folder / f).is_file()]
        if found:
            files[split] = found[0]
    if not files:  # one annotation file at the root: everything is train
        files["train"] = next(root / f for f in _COCO_FILES if (root / f).is_file())
    parsed = {s: _coco_check(path, check, s) for s, path in files.items()}
    names, drop = _coco_classes({files[s]: d for s, d in parsed.items() if d}, check)
    check.raise_if_defects(files)
    keep = sorted(set(names) - drop)
    classes, index = [names[c] for c in keep], {c: k for k, c in enumerate(keep)}
    check.notes += [
        f"dropped unused supercategory {names[c]!r} (category id {c})" for c in sorted(drop)
    ]
    loaded = {}
    for split, path in files.items():
        data = parsed[split] or {}
        # supervision numbers a file's categories 0.. in id order; map those to ``classes``.
        lookup = np.array([index.get(c, -1) for c in sorted(c["id"] for c in data["categories"])])
        with tempfile.TemporaryDirectory() as tmp:
            source = path
            if any(a.get("segmentation") for a in data["annotations"]):
                # Boxes only: a copy without polygons spares rasterising a mask per object.
                anns = [{**a, "segmentation": []} for a in data["annotations"]]
                source = Path(tmp) / path.name
                source.write_text(json.dumps({**data, "annotations": anns}), encoding="utf-8")
            ds = _sv_load(root, split, sv.DetectionDataset.from_coco, path.parent, source)
        loaded[split] = _rebuild(ds, classes, lookup)
    return classes, loaded


# -------------------------------------------------------------------------------------- YOLO


def _yolo_names(cfg: Any, yml: Path, check: _Check) -> list[str]:
    names = cfg.get("names") if isinstance(cfg, dict) else None
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    if isinstance(names, dict) and names:
        ids = {int(k): v for k, v in names.items() if type(k) in (int, str) and f"{k}".isdigit()}
        if sorted(ids) == list(range(len(names))):
            return [str(ids[i]) for i in range(len(names))]
        check.add(yml, f"'names' keys must be the class ids 0..{len(names) - 1}, got {list(names)}")
        return []
    check.add(yml, f"expected 'names' as a non-empty list or dict of class names, got {names!r}")
    return []


def _yolo_dirs(root: Path, cfg: dict[str, Any], yml: Path, check: _Check) -> dict[str, Path]:
    """Image folder per split: ``<split>/images/``, else the folder data.yaml names."""
    dirs: dict[str, Path] = {}
    for split, keys in (("train", ("train",)), ("valid", ("val", "valid")), ("test", ("test",))):
        folder = _split_dir(root, split)
        value = next((cfg[k] for k in keys if cfg.get(k)), None)
        if folder is not None and (folder / "images").is_dir():
            dirs[split] = folder / "images"
        elif value is not None:
            base, rel = yml.parent / str(cfg.get("path") or ""), Path(str(value))
            # Roboflow writes "../train/images" although train/ sits beside data.yaml.
            stripped = Path(*[p for p in rel.parts if p != ".."])
            found = [t for t in (base / rel, yml.parent / rel, yml.parent / stripped) if t.is_dir()]
            if found:
                dirs[split] = found[0]
            else:
                check.add(yml, f"{keys[0]}: expected a folder of images, got {value!r} (not found)")
    if "train" not in dirs:
        check.add(yml, "no train split: expected train/images/ or a 'train' folder in data.yaml")
    return dirs


def _yolo_labels(images: Path) -> Path:
    """``.../images/...`` -> ``.../labels/...`` (last ``images`` part), as Ultralytics does."""
    parts = list(images.parts)
    if "images" not in parts:
        return images
    i = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:i], "labels", *parts[i + 1 :])


def _yolo_check(labels: Path, n_classes: int, check: _Check) -> None:
    try:
        lines = labels.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        check.add(labels, f"cannot read label file ({err})")
        return
    for no, line in enumerate(lines, 1):
        if not line.split():
            continue
        check.annotations += 1
        numbers = _finite(line.split())
        if len(line.split()) < 5 or numbers is None or not numbers[0].is_integer():
            expected = "'class x_center y_center width height' (or a polygon)"
            check.add(labels, f"line {no}: expected {expected}, got {line.strip()!r}")
            continue
        cls, values = int(numbers[0]), numbers[1:]
        if len(values) > 5:  # polygon (a trailing confidence makes the count odd)
            xs, ys = values[0 : len(values) // 2 * 2 : 2], values[1 : len(values) // 2 * 2 : 2]
            values = [0, 0, max(xs) - min(xs), max(ys) - min(ys)]
        if n_classes and not 0 <= cls < n_classes:  # 0: names is broken, reported already
            check.add(labels, f"line {no}: class {cls} not in data.yaml names (0..{n_classes - 1})")
        elif values[2] <= 0 or values[3] <= 0:
            check.add(labels, f"line {no}: non-positive size w={values[2]:g} h={values[3]:g}")


def _load_yolo(root: Path, check: _Check) -> tuple[list[str], _Loaded]:
    yml = next(root / f for f in _YAML_FILES if (root / f).is_file())
    try:
        cfg = yaml.safe_load(yml.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        check.add(yml, f"malformed YAML ({' '.join(str(err).split())})")
        check.unreadable = True
        cfg = None
    classes = _yolo_names(cfg, yml, check) if cfg is not None else []
    dirs = _yolo_dirs(root, cfg, yml, check) if isinstance(cfg, dict) else {}
    orphans = 0
    for split, images in dirs.items():
        labels, paths = _yolo_labels(images), _images_in(images, _YOLO_EXTS)
        check.split_images(split, images, paths)
        for label in (labels / f"{p.stem}.txt" for p in paths):
            if label.is_file():
                _yolo_check(label, len(classes), check)
        stems = {p.stem for p in paths}
        orphans += sum(t.stem not in stems for t in labels.glob("*.txt")) if labels.is_dir() else 0
    check.raise_if_defects(dirs)
    if orphans:
        check.notes.append(f"ignored {orphans} label file(s) that have no image")
    loaded = {}
    for split, images in dirs.items():
        ds = _sv_load(root, split, sv.DetectionDataset.from_yolo, images, _yolo_labels(images), yml)
        loaded[split] = _rebuild(ds, classes, None)
    return classes, loaded


# -------------------------------------------------------------------------------- Pascal VOC


def _voc_check(xml: Path, check: _Check) -> set[str]:
    try:
        objects = ET.parse(xml).getroot().findall("object")
    except (OSError, ET.ParseError) as err:
        check.add(xml, f"malformed XML ({err})")
        check.unreadable = True
        return set()
    names = set()
    for i, obj in enumerate(objects):
        check.annotations += 1
        name, box = (obj.findtext("name") or "").strip(), obj.find("bndbox")
        corners = ("xmin", "ymin", "xmax", "ymax")
        if name and box is not None and _finite(box.findtext(t) for t in corners) is not None:
            names.add(name)
        else:
            check.add(xml, f"object #{i} needs a <name> and a <bndbox> with numeric {corners}")
    return names


def _voc_sources(root: Path, check: _Check) -> dict[str, tuple[Path, Path, list[Path] | None]]:
    """split -> (images folder, xml folder, the split's images when ImageSets lists them)."""
    sources: dict[str, tuple[Path, Path, list[Path] | None]] = {}
    for split in SPLITS:
        folder = _split_dir(root, split)
        if folder is not None and (folder / "images").is_dir():
            sources[split] = (folder / "images", folder / "annotations", None)
        elif folder is not None:  # Roboflow's VOC export: the xml beside the images
            sources[split] = (folder, folder, None)
    if sources:
        return sources
    images, xml = root / "JPEGImages", root / "Annotations"
    by_stem = {p.stem: p for p in _images_in(images)}
    for split, name in zip(SPLITS, ("train", "val", "test"), strict=True):
        txt = root / "ImageSets" / "Main" / f"{name}.txt"
        if txt.is_file():
            ids = [line.split()[0] for line in txt.read_text().splitlines() if line.split()]
            for i in (i for i in ids if i not in by_stem):
                check.add(txt, f"image id {i!r} not found in JPEGImages/")
            sources[split] = (images, xml, [by_stem[i] for i in ids if i in by_stem])
    return sources if "train" in sources else {"train": (images, xml, None)}


def _load_voc(root: Path, check: _Check) -> tuple[list[str], _Loaded]:
    sources, names = _voc_sources(root, check), set()
    for split, (images, xml, subset) in sources.items():
        check.split_images(split, images, _images_in(images) if subset is None else subset)
        for path in _images_in(images) if subset is None else subset:
            if (xml / f"{path.stem}.xml").is_file():
                names |= _voc_check(xml / f"{path.stem}.xml", check)
    orphans = 0
    for images, xml in {(i, x) for i, x, _ in sources.values() if x.is_dir()}:
        stems = {p.stem for p in _images_in(images)}
        orphans += sum(x.stem not in stems for x in xml.glob("*.xml"))
    check.raise_if_defects(sources)
    if orphans:
        check.notes.append(f"ignored {orphans} annotation file(s) that have no image")
    classes, loaded, cache = sorted(names), {}, {}
    for split, (images, xml, subset) in sources.items():
        if (images, xml) not in cache:
            cache[images, xml] = _sv_load(
                root, split, sv.DetectionDataset.from_pascal_voc, images, xml
            )
        ds = cache[images, xml]
        # supervision orders classes as first met and keeps <name> whitespace.
        lookup = np.array([classes.index(n.strip()) for n in ds.classes], dtype=int)
        by_path = {str(Path(p).resolve()): p for p in ds.image_paths}
        chosen = None if subset is None else [by_path[str(p.resolve())] for p in subset]
        loaded[split] = _rebuild(ds, classes, lookup, chosen)
    return classes, loaded


# ------------------------------------------------------------------------------ post-loading


def _rebuild(
    ds: sv.DetectionDataset,
    classes: list[str],
    lookup: np.ndarray | None,
    paths: list[str] | None = None,
) -> sv.DetectionDataset:
    """Same images (resolved paths, sorted), class ids mapped through ``lookup``, no masks."""
    annotations = {}
    for path in ds.image_paths if paths is None else paths:
        det = ds.annotations[path]
        class_id = det.class_id if lookup is None else lookup[det.class_id]
        data = {k: v for k, v in det.data.items() if k != "class_name"}
        annotations[str(Path(path).resolve())] = sv.Detections(
            xyxy=det.xyxy.astype(np.float32), class_id=class_id.astype(int), data=data
        )
    return sv.DetectionDataset(classes, sorted(annotations), annotations)


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


def _split_sizes(n: int, missing: list[str], fractions: dict[str, float]) -> dict[str, int] | None:
    """Images each missing split takes from ``n`` train images (>= 1 each); None if too few."""
    sizes = {s: max(1, round(n * fractions[s])) for s in missing}
    return sizes if n - sum(sizes.values()) >= 1 else None


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
    loader = {"coco": _load_coco, "yolo": _load_yolo, "voc": _load_voc}[layout]
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
