"""The one mAP function against pycocotools and against answers worked out by hand."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from finetune.metrics import Boxes, mean_average_precision

pytestmark = pytest.mark.unit


def _pycocotools_map(predictions: list[Boxes], targets: list[Boxes]) -> tuple[float, float]:
    """Reference mAP50:95 and mAP50 straight from COCOeval."""
    images, anns, dets = [], [], []
    classes = sorted({int(c) for t in targets for c in t.class_id})
    for i, (p, t) in enumerate(zip(predictions, targets, strict=True)):
        images.append({"id": i, "width": 1000, "height": 1000})
        for box, c in zip(t.xyxy, t.class_id, strict=True):
            x0, y0, x1, y1 = map(float, box)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(c),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
        for box, c, s in zip(p.xyxy, p.class_id, p.confidence, strict=True):
            x0, y0, x1, y1 = map(float, box)
            dets.append(
                {
                    "image_id": i,
                    "category_id": int(c),
                    "score": float(s),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                }
            )
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": str(c)} for c in classes],
    }
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


def test_perfect_predictions_score_one() -> None:
    gt = [Boxes(np.array([[10, 10, 60, 80], [100, 100, 150, 130]], float), np.array([0, 1]))]
    pred = [Boxes(gt[0].xyxy, gt[0].class_id, np.array([0.9, 0.8]))]
    result = mean_average_precision(pred, gt, ["a", "b"])
    assert result["map"] == pytest.approx(1.0)
    assert result["map_a"] == pytest.approx(1.0) and result["map_b"] == pytest.approx(1.0)


def test_scoring_is_silent_under_the_cli_logging(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m finetune` logs at INFO; mAP's backend must not add its tables to that."""
    caplog.set_level(logging.INFO)
    gt = [Boxes(np.array([[10, 10, 60, 80]], float), np.array([0]))]
    mean_average_precision([Boxes(gt[0].xyxy, gt[0].class_id, np.array([0.9]))], gt, ["a"])
    assert [r.getMessage() for r in caplog.records] == []
    assert capsys.readouterr() == ("", "")


def test_half_recall_is_51_over_101() -> None:
    """One class, two objects, one found at rank 1: COCO's 101-point AP is 51/101."""
    gt = [Boxes(np.array([[10, 10, 60, 60], [200, 200, 260, 260]], float), np.array([0, 0]))]
    pred = [Boxes(np.array([[10, 10, 60, 60]], float), np.array([0]), np.array([0.9]))]
    assert mean_average_precision(pred, gt)["map"] == pytest.approx(51 / 101, abs=1e-6)


def test_matches_pycocotools_on_noisy_predictions() -> None:
    rng = np.random.default_rng(0)
    predictions, targets = [], []
    for _ in range(12):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 700, size=(n, 2))
        wh = rng.uniform(30, 250, size=(n, 2))
        gt = np.concatenate([xy, xy + wh], axis=1)
        cls = rng.integers(0, 3, size=n)
        targets.append(Boxes(gt, cls))
        jitter = gt + rng.normal(0, 6, size=gt.shape)
        wrong = rng.random(n) < 0.2  # some wrong labels, and a false positive per image
        pred_cls = np.where(wrong, (cls + 1) % 3, cls)
        fp = np.array([[800, 800, 900, 950]], float)
        predictions.append(
            Boxes(
                np.concatenate([jitter, fp]),
                np.append(pred_cls, 1),
                rng.uniform(0.05, 1.0, size=n + 1),
            )
        )
    ours = mean_average_precision(predictions, targets, ["a", "b", "c"])
    ref_map, ref_map50 = _pycocotools_map(predictions, targets)
    assert 0.2 < ref_map < 0.95  # a case where the answer is not trivial
    assert ours["map"] == pytest.approx(ref_map, abs=1e-4)
    assert ours["map_50"] == pytest.approx(ref_map50, abs=1e-4)


def test_length_mismatch_is_an_error() -> None:
    gt = [Boxes(np.zeros((0, 4)), np.zeros(0, int))]
    with pytest.raises(ValueError, match="1 target images"):
        mean_average_precision([], gt)


def test_predictions_without_confidence_are_rejected() -> None:
    gt = [Boxes(np.array([[0, 0, 10, 10]], float), np.array([0]))]
    with pytest.raises(ValueError, match="confidence"):
        mean_average_precision(gt, gt)
