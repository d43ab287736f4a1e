"""Readers for the COCO, YOLO and Pascal VOC layouts.

Each ``load_*`` checks its raw files into a :class:`~finetune.dataset_check._Check` (raising one
:class:`~finetune.dataset_check.DatasetError` with every defect), then loads the splits with
supervision and rebuilds them onto one class list. Kept apart from :mod:`finetune.datasets` so
the public API stays small and each format's quirks live in one place.
"""

from __future__ import annotations

import json
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
import yaml

from finetune.dataset_check import (
    _COCO_FILES,
    _YAML_FILES,
    _YOLO_EXTS,
    SPLITS,
    _Check,
    _finite,
    _images_in,
    _split_dir,
    _sv_load,
)

__all__ = ["load_coco", "load_voc", "load_yolo"]

_Loaded = dict[str, sv.DetectionDataset]


# ------------------------------------------------------------------------- shared by readers


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


def load_coco(root: Path, check: _Check) -> tuple[list[str], _Loaded]:
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


def load_yolo(root: Path, check: _Check) -> tuple[list[str], _Loaded]:
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


def load_voc(root: Path, check: _Check) -> tuple[list[str], _Loaded]:
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
