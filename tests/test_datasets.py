from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Callable
from contextlib import nullcontext as DoesNotRaise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from dataset_factory import (
    coco_box,
    roboflow_categories,
    write_coco_split,
    write_image,
    write_roboflow_coco,
    write_voc_xml,
    write_yolo,
)

from finetune.datasets import (
    DatasetError,
    DatasetSplits,
    RoboflowDownloadError,
    detect_layout,
    download_roboflow,
    load_dataset,
)
from finetune.synthetic import SyntheticSpec, generate_dataset

pytestmark = pytest.mark.unit


def boxes(splits: DatasetSplits, split: str) -> dict[str, tuple[list, list]]:
    """``{file name: (xyxy, class ids)}`` of one split."""
    ds = getattr(splits, split)
    return {Path(p).name: (d.xyxy.tolist(), d.class_id.tolist()) for p, d in ds.annotations.items()}


def edit_json(path: Path, edit: Callable[[dict], Any]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------------------------ layouts


def _voc_split_folders(root: Path) -> None:
    for split in ("train", "valid", "test"):
        write_image(root / split / "images" / "a.jpg")
        write_voc_xml(root / split / "annotations" / "a.xml", [("dog", 11, 21, 30, 40)])


def _voc_beside(root: Path) -> None:
    write_image(root / "train" / "a.jpg")
    write_voc_xml(root / "train" / "a.xml", [("dog", 11, 21, 30, 40)])


def _voc_classic(root: Path) -> None:
    write_image(root / "JPEGImages" / "a.jpg")
    write_voc_xml(root / "Annotations" / "a.xml", [("dog", 11, 21, 30, 40)])


@pytest.mark.parametrize(
    ("build", "expected", "exception"),
    [
        (write_roboflow_coco, "coco", DoesNotRaise()),
        (
            lambda r: write_coco_split(r, ["a.jpg"], [], [], file="annotations.json"),
            "coco",
            DoesNotRaise(),
        ),
        (lambda r: write_yolo(r, ["cat"], {"train": {"a": ""}}), "yolo", DoesNotRaise()),
        (_voc_split_folders, "voc", DoesNotRaise()),
        (_voc_beside, "voc", DoesNotRaise()),
        (_voc_classic, "voc", DoesNotRaise()),
        (
            lambda r: write_image(r / "a.jpg"),
            None,
            pytest.raises(DatasetError, match="no known dataset layout; expected COCO"),
        ),
        (lambda r: None, None, pytest.raises(DatasetError, match="folder does not exist")),
    ],
)
def test_detect_layout(tmp_path: Path, build: Callable, expected: str | None, exception) -> None:
    root = tmp_path / "ds"
    build(root)
    with exception:
        assert detect_layout(root) == expected


def test_roboflow_coco_drops_supercategory_and_remaps_ids(roboflow_coco: Path) -> None:
    splits = load_dataset(roboflow_coco)

    assert splits.layout == "coco"
    assert splits.classes == ["cat", "dog"]
    assert splits.id2label == {0: "cat", 1: "dog"}
    assert splits.label2id == {"cat": 0, "dog": 1}
    assert [len(splits.train), len(splits.valid), len(splits.test)] == [3, 3, 3]
    assert splits.train.classes == splits.valid.classes == ["cat", "dog"]
    assert boxes(splits, "valid") == {
        "valid_0.jpg": ([[4, 6, 24, 16], [30, 10, 46, 40]], [0, 1]),
        "valid_1.jpg": ([[0, 0, 64, 48]], [1]),
        "valid_2.jpg": ([], []),
    }
    assert splits.notes == ["dropped unused supercategory 'pets' (category id 0)"]


@pytest.mark.parametrize(
    ("categories", "used_ids", "expected_classes", "expected_ids"),
    [
        (roboflow_categories("pets", ["cat", "dog"]), [2, 1], ["cat", "dog"], [1, 0]),
        (  # non-contiguous ids; an unused leaf class is kept (it is nobody's supercategory)
            [
                {"id": 0, "name": "things", "supercategory": "none"},
                {"id": 3, "name": "b", "supercategory": "things"},
                {"id": 7, "name": "a", "supercategory": "things"},
                {"id": 9, "name": "rare", "supercategory": "things"},
            ],
            [7, 3],
            ["b", "a", "rare"],
            [1, 0],
        ),
        (  # a plain COCO file whose id 0 is a real, used class
            [{"id": 0, "name": "person"}, {"id": 1, "name": "car"}],
            [0, 1],
            ["person", "car"],
            [0, 1],
        ),
        (  # an unused supercategory with an id other than 0
            [
                {"id": 1, "name": "a", "supercategory": "vehicles"},
                {"id": 2, "name": "vehicles", "supercategory": "none"},
                {"id": 3, "name": "b", "supercategory": "vehicles"},
            ],
            [3, 1],
            ["a", "b"],
            [1, 0],
        ),
    ],
)
def test_coco_class_remapping(
    tmp_path: Path,
    categories: list[dict],
    used_ids: list[int],
    expected_classes: list[str],
    expected_ids: list[int],
) -> None:
    anns = [coco_box(k, 0, cid, [1, 1, 10, 10]) for k, cid in enumerate(used_ids)]
    for split in ("train", "valid", "test"):
        write_coco_split(tmp_path / split, ["a.jpg"], anns, categories)

    splits = load_dataset(tmp_path)

    assert splits.classes == expected_classes
    assert boxes(splits, "test")["a.jpg"][1] == expected_ids


def test_coco_single_file_at_root_is_all_train(tmp_path: Path) -> None:
    names = [f"{i:02d}.jpg" for i in range(10)]
    anns = [coco_box(i, i, 1, [2, 2, 8, 8]) for i in range(10)]
    write_coco_split(tmp_path, names, anns, [{"id": 1, "name": "cat"}], file="annotations.json")

    splits = load_dataset(tmp_path)

    assert splits.classes == ["cat"]
    assert [len(splits.train), len(splits.valid), len(splits.test)] == [8, 1, 1]
    assert "valid split made from 10% of train (seed 0): 1 image(s)" in splits.notes
    assert "test split made from 10% of train (seed 0): 1 image(s)" in splits.notes


YOLO_LABELS = {
    "train": {"a": "0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.25 0.5\n", "b": "", "c": None},
    "valid": {"d": "1 0.5 0.5 1 1"},
    "test": {"e": "\n0 0.5 0.5 1 1\n\n"},
}


@pytest.mark.parametrize(
    ("names", "layout", "yaml_extra"),
    [
        (["cat", "dog"], "{split}/{kind}", None),  # Roboflow export
        ({0: "cat", 1: "dog"}, "{split}/{kind}", None),
        ({"1": "dog", "0": "cat"}, "{split}/{kind}", None),
        (
            ["cat", "dog"],
            "{kind}/{split}",
            {"train": "images/train", "val": "images/valid", "test": "images/test"},
        ),  # Ultralytics
        (
            ["cat", "dog"],
            "data/{split}/{kind}",
            {
                "train": "../data/train/images",
                "val": "../data/valid/images",
                "test": "../data/test/images",
            },
        ),
    ],
)
def test_yolo_loads(tmp_path: Path, names: Any, layout: str, yaml_extra: dict | None) -> None:
    write_yolo(tmp_path, names, YOLO_LABELS, yaml_extra=yaml_extra, layout=layout)

    splits = load_dataset(tmp_path)

    assert splits.layout == "yolo"
    assert splits.classes == ["cat", "dog"]
    assert boxes(splits, "train") == {
        "a.jpg": ([[16, 12, 48, 36], [8, 0, 24, 24]], [0, 1]),
        "b.jpg": ([], []),
        "c.jpg": ([], []),
    }
    assert boxes(splits, "valid") == {"d.jpg": ([[0, 0, 64, 48]], [1])}
    assert boxes(splits, "test") == {"e.jpg": ([[0, 0, 64, 48]], [0])}
    assert splits.notes == []


def test_yolo_val_folder_name(tmp_path: Path) -> None:
    labels = {"train": YOLO_LABELS["train"], "val": YOLO_LABELS["valid"]}
    write_yolo(tmp_path, ["cat", "dog"], labels)

    splits = load_dataset(tmp_path)

    assert boxes(splits, "valid") == {"d.jpg": ([[0, 0, 64, 48]], [1])}
    assert len(splits.test) == 1  # split off train
    assert len(splits.train) == 2


def test_voc_split_folders(tmp_path: Path) -> None:
    # train's first file names only "dog", so supervision's own class order is [dog, cat]
    write_image(tmp_path / "train" / "images" / "a.jpg")
    write_voc_xml(tmp_path / "train" / "annotations" / "a.xml", [("dog", 11, 21, 30, 40)])
    write_image(tmp_path / "train" / "images" / "b.jpg")
    write_voc_xml(tmp_path / "train" / "annotations" / "b.xml", [("cat", 1, 1, 64, 48)])
    write_image(tmp_path / "train" / "images" / "c.jpg")
    write_voc_xml(tmp_path / "train" / "annotations" / "c.xml", [])  # background
    for split in ("valid", "test"):
        write_image(tmp_path / split / "images" / "d.jpg")
        write_voc_xml(tmp_path / split / "annotations" / "d.xml", [("cat", 2, 3, 10, 20)])

    splits = load_dataset(tmp_path)

    assert splits.layout == "voc"
    assert splits.classes == ["cat", "dog"]
    assert boxes(splits, "train") == {  # VOC is 1-based inclusive: xmin/ymin shift by one
        "a.jpg": ([[10, 20, 30, 40]], [1]),
        "b.jpg": ([[0, 0, 64, 48]], [0]),
        "c.jpg": ([], []),
    }
    assert boxes(splits, "valid") == {"d.jpg": ([[1, 2, 10, 20]], [0])}


def test_voc_roboflow_export_with_xml_beside_images(tmp_path: Path) -> None:
    for split in ("train", "valid", "test"):
        write_image(tmp_path / split / "a.jpg")
        # pretty-printed xml: supervision keeps the whitespace around <name>, we strip it
        write_voc_xml(tmp_path / split / "a.xml", [("\n  dog\n", 11, 21, 30, 40)])
    write_voc_xml(tmp_path / "train" / "orphan.xml", [("cat", 1, 1, 5, 5)])

    splits = load_dataset(tmp_path)

    assert splits.classes == ["dog"]
    assert boxes(splits, "test") == {"a.jpg": ([[10, 20, 30, 40]], [0])}
    assert splits.notes == ["ignored 1 annotation file(s) that have no image"]


def test_voc_classic_with_image_sets(tmp_path: Path) -> None:
    for stem, name in zip("abcd", ["dog", "cat", "dog", "bird"], strict=True):
        write_image(tmp_path / "JPEGImages" / f"{stem}.jpg")
        write_voc_xml(tmp_path / "Annotations" / f"{stem}.xml", [(name, 11, 21, 30, 40)])
    sets = tmp_path / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    for name, ids in {"train": "a\nb\n", "val": "c\n", "test": "d\n"}.items():
        (sets / f"{name}.txt").write_text(ids)

    splits = load_dataset(tmp_path)

    assert splits.classes == ["bird", "cat", "dog"]
    assert boxes(splits, "train") == {
        "a.jpg": ([[10, 20, 30, 40]], [2]),
        "b.jpg": ([[10, 20, 30, 40]], [1]),
    }
    assert boxes(splits, "valid") == {"c.jpg": ([[10, 20, 30, 40]], [2])}
    assert boxes(splits, "test") == {"d.jpg": ([[10, 20, 30, 40]], [0])}


# -------------------------------------------------------------------------- missing splits


def _single_file_coco(root: Path, n: int) -> Path:
    names = [f"{i:02d}.jpg" for i in range(n)]
    anns = [coco_box(i, i, 1, [2, 2, 8, 8]) for i in range(n)]
    write_coco_split(root, names, anns, [{"id": 1, "name": "cat"}], file="annotations.json")
    return root


@pytest.mark.parametrize(
    ("n", "fractions", "expected_sizes", "exception"),
    [
        (3, {}, (1, 1, 1), DoesNotRaise()),
        (10, {}, (8, 1, 1), DoesNotRaise()),
        (20, {}, (16, 2, 2), DoesNotRaise()),
        (10, {"valid_fraction": 0.2}, (7, 2, 1), DoesNotRaise()),
        (2, {}, None, pytest.raises(DatasetError, match=r"train has 2 image.*too few to split")),
        (10, {"valid_fraction": 0.0}, None, pytest.raises(ValueError, match="fractions in")),
    ],
)
def test_split_sizes(tmp_path: Path, n: int, fractions: dict, expected_sizes, exception) -> None:
    _single_file_coco(tmp_path, n)
    with exception:
        splits = load_dataset(tmp_path, **fractions)
        assert (len(splits.train), len(splits.valid), len(splits.test)) == expected_sizes


def test_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    _single_file_coco(tmp_path, 20)

    def paths(seed: int) -> list[list[str]]:
        s = load_dataset(tmp_path, split_seed=seed)
        return [s.train.image_paths, s.valid.image_paths, s.test.image_paths]

    first, again, other = paths(0), paths(0), paths(1)

    assert first == again
    assert first != other
    train, valid, test = map(set, first)
    assert not (train & valid or train & test or valid & test)
    assert len(train | valid | test) == 20


# ------------------------------------------------------------------------------- defects


def _corrupt(path: Path) -> None:
    path.write_bytes(b"this is not a jpeg")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


def _set_ann(split: str, ann_id: int, **fields: Any) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        edit_json(
            root / split / "_annotations.coco.json",
            lambda d: d["annotations"][ann_id].update(fields),
        )

    return mutate


def _rename_category(root: Path) -> None:
    edit_json(
        root / "valid" / "_annotations.coco.json",
        lambda d: d["categories"][1].update(name="kitty"),
    )


def _no_annotations(root: Path) -> None:
    for split in ("train", "valid", "test"):
        edit_json(root / split / "_annotations.coco.json", lambda d: d.update(annotations=[]))


def _empty_split(root: Path) -> None:
    edit_json(
        root / "valid" / "_annotations.coco.json", lambda d: d.update(images=[], annotations=[])
    )


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: _corrupt(r / "train" / "train_1.jpg"), "train/train_1.jpg: cannot decode image"),
        (lambda r: _truncate(r / "test" / "test_0.jpg"), "test/test_0.jpg: cannot decode image"),
        (
            lambda r: (r / "valid" / "valid_0.jpg").unlink(),
            "valid/valid_0.jpg: image file not found",
        ),
        (
            _set_ann("train", 2, category_id=9),
            "train/_annotations.coco.json: annotation id 2 has unknown category_id 9",
        ),
        (
            _set_ann("valid", 1, bbox=[30, 10, 0, 12]),
            "valid/_annotations.coco.json: annotation id 1 has non-positive size w=0 h=12",
        ),
        (
            _set_ann("test", 0, image_id=99),
            "test/_annotations.coco.json: annotation id 0 points at missing image_id 99",
        ),
        (
            _set_ann("train", 0, bbox=[1, 2]),
            "train/_annotations.coco.json: annotation id 0 has malformed bbox [1, 2]",
        ),
        (
            lambda r: (r / "test" / "_annotations.coco.json").write_text("{not json"),
            "test/_annotations.coco.json: malformed JSON",
        ),
        (_empty_split, "valid/_annotations.coco.json: split has no images"),
        (
            _rename_category,
            "valid/_annotations.coco.json: category id 1 is 'kitty' here, 'cat' in train/",
        ),
        (_no_annotations, "no annotations in any split: nothing to train on"),
    ],
)
def test_coco_defect_is_reported(roboflow_coco: Path, mutate: Callable, expected: str) -> None:
    mutate(roboflow_coco)

    with pytest.raises(DatasetError) as info:
        load_dataset(roboflow_coco)

    assert len(info.value.defects) == 1, info.value.defects
    assert info.value.defects[0].startswith(expected)


def test_several_defects_reported_at_once(roboflow_coco: Path) -> None:
    _corrupt(roboflow_coco / "train" / "train_1.jpg")
    (roboflow_coco / "test" / "test_2.jpg").unlink()
    _set_ann("train", 2, category_id=9)(roboflow_coco)
    _set_ann("valid", 1, bbox=[30, 10, 0, 12])(roboflow_coco)

    with pytest.raises(DatasetError) as info:
        load_dataset(roboflow_coco)

    defects = info.value.defects
    assert len(defects) == 4
    assert str(info.value) == (
        f"Dataset {roboflow_coco} has 4 defect(s):\n" + "\n".join(f"  - {d}" for d in defects)
    )
    assert [d.split(":")[0] for d in defects] == [
        "train/train_1.jpg",
        "train/_annotations.coco.json",
        "valid/_annotations.coco.json",
        "test/test_2.jpg",
    ]


@pytest.mark.parametrize(
    ("names", "labels", "expected"),
    [
        (
            ["cat", "dog"],
            "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2",
            "train/labels/a.txt: line 2: class 7 not in data.yaml names (0..1)",
        ),
        (["cat", "dog"], "0 0.5 0.5", "train/labels/a.txt: line 1: expected 'class x_center"),
        (["cat", "dog"], "0 0.5 0.5 zero 0.2", "train/labels/a.txt: line 1: expected 'class"),
        (["cat", "dog"], "1 0.5 0.5 0 0.5", "train/labels/a.txt: line 1: non-positive size w=0"),
        ({0: "cat", 2: "dog"}, "0 0.5 0.5 0.2 0.2", "data.yaml: 'names' keys must be the class"),
        ([], "0 0.5 0.5 0.2 0.2", "data.yaml: expected 'names' as a non-empty list or dict"),
        ("cat", "0 0.5 0.5 0.2 0.2", "data.yaml: expected 'names' as a non-empty list or dict"),
    ],
)
def test_yolo_defect_is_reported(tmp_path: Path, names: Any, labels: str, expected: str) -> None:
    ok = "1 0.5 0.5 0.5 0.5"
    write_yolo(tmp_path, names, {"train": {"a": labels, "b": ok, "c": ok}})

    with pytest.raises(DatasetError) as info:
        load_dataset(tmp_path)

    assert len(info.value.defects) == 1, info.value.defects
    assert info.value.defects[0].startswith(expected)


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        ("<annotation><object>", "train/annotations/a.xml: malformed XML"),
        (
            "<annotation><object><name>cat</name></object></annotation>",
            "train/annotations/a.xml: object #0 needs a <name> and a <bndbox>",
        ),
    ],
)
def test_voc_defect_is_reported(tmp_path: Path, xml: str, expected: str) -> None:
    write_image(tmp_path / "train" / "images" / "a.jpg")
    for stem in "bc":
        write_image(tmp_path / "train" / "images" / f"{stem}.jpg")
        write_voc_xml(tmp_path / "train" / "annotations" / f"{stem}.xml", [("cat", 1, 1, 9, 9)])
    (tmp_path / "train" / "annotations" / "a.xml").write_text(xml)

    with pytest.raises(DatasetError) as info:
        load_dataset(tmp_path)

    assert [d[: len(expected)] for d in info.value.defects] == [expected]


# --------------------------------------------------------------- clipping and valid oddities


def test_boxes_leaving_the_image_are_clipped_and_counted(roboflow_coco: Path) -> None:
    train = roboflow_coco / "train" / "_annotations.coco.json"
    edit_json(
        train,
        lambda d: d["annotations"].extend(
            [
                coco_box(10, 2, 1, [-4, 6, 20, 10]),
                coco_box(11, 2, 2, [60, 40, 10, 10]),
                coco_box(12, 2, 2, [70, 0, 5, 5]),  # entirely outside: dropped
            ]
        ),
    )
    _set_ann("valid", 2, bbox=[10, 10, 60, 20])(roboflow_coco)

    splits = load_dataset(roboflow_coco)

    assert boxes(splits, "train")["train_2.jpg"] == ([[0, 6, 16, 16], [60, 40, 64, 48]], [0, 1])
    assert boxes(splits, "valid")["valid_1.jpg"] == ([[10, 10, 64, 30]], [1])
    assert "clipped 3 boxes that left the image (train: 2, valid: 1)" in splits.notes
    assert "dropped 1 box entirely outside the image (train: 1)" in splits.notes
    assert splits.train.annotations[str(roboflow_coco.resolve() / "train" / "train_2.jpg")].data[
        "class_name"
    ].tolist() == ["cat", "dog"]


def test_background_grayscale_rgba_non_square_and_exif_turned_are_accepted(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "train"
    # name, stored size, mode, EXIF orientation, size as loaded (cv2 applies the EXIF turn)
    images = [
        ("gray.png", (64, 48), "L", None, (64, 48)),
        ("rgba.png", (64, 48), "RGBA", None, (64, 48)),
        ("wide.jpg", (96, 32), "RGB", None, (96, 32)),
        ("turned.jpg", (64, 48), "RGB", 6, (48, 64)),
        ("background.jpg", (64, 48), "RGB", None, (64, 48)),
    ]
    for name, size, mode, orientation, _ in images:
        write_image(folder / name, size, mode, orientation=orientation)
    coco = {
        "images": [
            {"id": i, "file_name": n, "width": s[0], "height": s[1]}
            for i, (n, *_, s) in enumerate(images)
        ],
        "annotations": [
            coco_box(0, 0, 1, [1, 1, 10, 10]),
            coco_box(1, 1, 1, [5, 5, 20, 20]),
            coco_box(2, 2, 1, [0, 0, 96, 32]),
            coco_box(3, 3, 1, [0, 0, 48, 64]),
        ],
        "categories": roboflow_categories("things", ["thing"]),
    }
    (folder / "_annotations.coco.json").write_text(json.dumps(coco))
    for split in ("valid", "test"):
        write_coco_split(
            tmp_path / split,
            ["a.jpg"],
            [coco_box(0, 0, 1, [1, 1, 5, 5])],
            roboflow_categories("things", ["thing"]),
        )

    splits = load_dataset(tmp_path)

    assert boxes(splits, "train") == {
        "background.jpg": ([], []),
        "gray.png": ([[1, 1, 11, 11]], [0]),
        "rgba.png": ([[5, 5, 25, 25]], [0]),
        "turned.jpg": ([[0, 0, 48, 64]], [0]),
        "wide.jpg": ([[0, 0, 96, 32]], [0]),
    }
    assert not any("clipped" in note for note in splits.notes)


def test_synthetic_dataset_loads_as_coco(tmp_path: Path) -> None:
    spec = SyntheticSpec(name="shapes", classes=("circle", "square"), split_sizes=(6, 2, 2))
    root = generate_dataset(tmp_path / "shapes", spec)

    splits = load_dataset(root)

    assert splits.layout == "coco"
    assert splits.classes == ["circle", "square"]
    assert [len(splits.train), len(splits.valid), len(splits.test)] == [6, 2, 2]
    dets = [d for s in (splits.train, splits.valid, splits.test) for d in s.annotations.values()]
    assert all(len(d) >= 1 and set(d.class_id.tolist()) <= {0, 1} for d in dets)
    xyxy = np.concatenate([d.xyxy for d in dets])
    assert (xyxy >= 0).all() and (xyxy <= 320).all()
    assert splits.notes == ["dropped unused supercategory 'shapes' (category id 0)"]


# ------------------------------------------------------------------------------- Roboflow

KEY = "SeCrEtKeY123abc"


class FakeRoboflow:
    """Stands in for ``roboflow.Roboflow``; ``fail`` is raised on download.

    A successful download writes a small COCO export into ``location``, as Roboflow does, so
    that the files the download leaves behind can be searched for the key.
    """

    fail: Exception | None = None

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key

    def workspace(self, name: str) -> FakeRoboflow:
        return self

    def project(self, name: str) -> FakeRoboflow:
        return self

    def version(self, number: int) -> FakeRoboflow:
        assert isinstance(number, int)
        return self

    def download(self, model_format: str, location: str) -> Any:
        if self.fail is not None:
            raise self.fail
        write_roboflow_coco(Path(location))
        return type("Dataset", (), {"location": location})()


@pytest.mark.parametrize("spec", ["ws/proj", "ws/proj/v1", "ws//3", "a/b/c/4", "ws/proj/0", ""])
def test_download_roboflow_rejects_bad_spec(spec: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'workspace/project/version'"):
        download_roboflow(spec, tmp_path)


def test_download_roboflow_needs_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ROBOFLOW_API_KEY", raising=False)
    with pytest.raises(RoboflowDownloadError, match="set ROBOFLOW_API_KEY"):
        download_roboflow("acme/hats/3", tmp_path)


def _files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under ``root`` whose bytes contain ``secret`` (as UTF-8)."""
    needle = secret.encode()
    return [p for p in sorted(root.rglob("*")) if p.is_file() and needle in p.read_bytes()]


@pytest.mark.parametrize(
    ("fail", "expected"),
    [
        (None, None),
        (
            requests.ConnectionError(f"Max retries exceeded: /?api_key={KEY}"),
            "could not reach Roboflow to download 'acme/hats/3' (no network?",
        ),
        (ConnectionRefusedError(f"refused {KEY}"), "could not reach Roboflow"),
        (
            RuntimeError(f'{{"error": "bad key {KEY}"}}'),
            "Roboflow download of 'acme/hats/3' failed",
        ),
    ],
    ids=["success", "requests-connection", "refused", "api-error"],
)
def test_download_roboflow_never_leaks_key(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
    fail: Exception | None,
    expected: str | None,
) -> None:
    """The key reaches Roboflow and nothing else: not the error (message, traceback, chained
    causes), not stdout/stderr (file descriptors too), not any log record at any level, not
    any file written under the destination."""
    monkeypatch.setenv("ROBOFLOW_API_KEY", KEY)
    monkeypatch.setattr(FakeRoboflow, "fail", fail)
    monkeypatch.setattr("roboflow.Roboflow", FakeRoboflow)
    made: list[FakeRoboflow] = []
    original_init = FakeRoboflow.__init__

    def recording_init(self: FakeRoboflow, api_key: str) -> None:
        original_init(self, api_key)
        made.append(self)

    monkeypatch.setattr(FakeRoboflow, "__init__", recording_init)
    caplog.set_level(logging.DEBUG)  # every logger, every level
    dest = tmp_path / "hats"

    if expected is None:
        assert download_roboflow("acme/hats/3", dest) == dest
        assert load_dataset(dest).classes == ["cat", "dog"]  # the fake wrote a real export
        printed = ""
    else:
        with pytest.raises(RoboflowDownloadError, match=re.escape(expected)) as info:
            download_roboflow("acme/hats/3", dest)
        assert isinstance(info.value, DatasetError)
        assert info.value.__cause__ is None and info.value.__suppress_context__
        printed = "".join(traceback.format_exception(info.value)) + repr(info.value.args)

    assert [fake.api_key for fake in made] == [KEY]  # the key did reach Roboflow
    out, err = capfd.readouterr()
    records = [r.getMessage() + repr(r.args) for r in caplog.records]
    assert KEY not in printed
    assert KEY not in out and KEY not in err
    assert not [r for r in records if KEY in r]
    assert _files_holding(tmp_path, KEY) == []
