"""An independent mAP of a saved checkpoint on a COCO split, to check what training reported.

``metrics.json`` holds the test mAP that ``finetune.evaluate`` and ``finetune.metrics``
computed. A bound like ``0 <= map <= 1`` holds for a constant too, so the tests recompute it
here without that code: the split's COCO file read by pycocotools itself, the model's raw
outputs turned into detections by transformers' own ``post_process_object_detection``, and
pycocotools' ``COCOeval`` (not torchmetrics) for the numbers. Only the pixels are shared:
:func:`finetune.pixels.pixel_values` is the preprocessing the checkpoint is evaluated with (the
runtime's, tested against transformers' processor in ``test_runtime.py``).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["independent_map", "relabel_with_predictions"]


def _detections(checkpoint: Path, images: list[np.ndarray]) -> list[dict]:
    """transformers' detections (every top-k query, no threshold) of the RGB ``images``."""
    import torch
    from transformers import AutoImageProcessor, RTDetrForObjectDetection

    from finetune.pixels import pixel_values

    model = RTDetrForObjectDetection.from_pretrained(checkpoint).eval()
    processor = AutoImageProcessor.from_pretrained(checkpoint)
    with torch.inference_mode():
        outputs = model(pixel_values=pixel_values(processor, images))
    results = processor.post_process_object_detection(
        outputs, threshold=-1.0, target_sizes=[image.shape[:2] for image in images]
    )
    names = model.config.id2label
    return [
        {
            "labels": [names[int(label)] for label in result["labels"]],
            "boxes": result["boxes"].numpy(),
            "scores": result["scores"].numpy(),
        }
        for result in results
    ]


def independent_map(checkpoint: Path, split: Path) -> dict[str, float]:
    """COCO mAP50:95, mAP50 and mAP75 (pycocotools) of ``checkpoint`` on ``split``.

    ``split`` is a folder with ``_annotations.coco.json`` and its images (Roboflow's COCO
    layout); classes are matched by name (the model's ``id2label`` to the COCO categories).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset = json.loads((split / "_annotations.coco.json").read_text())
    # COCOeval marks a match with the annotation id, and takes id 0 for "no match": an
    # annotation with id 0 (Roboflow exports and our generated sets start at 0) could never
    # be found. Number them from 1, as COCO does.
    for number, annotation in enumerate(dataset["annotations"], start=1):
        annotation["id"] = number
    truth = COCO()
    truth.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth.createIndex()
    infos = truth.loadImgs(sorted(truth.getImgIds()))
    images = [np.asarray(Image.open(split / info["file_name"]).convert("RGB")) for info in infos]
    category = {c["name"]: c["id"] for c in truth.loadCats(truth.getCatIds())}
    results = []
    for info, found in zip(infos, _detections(checkpoint, images), strict=True):
        for name, (x0, y0, x1, y1), score in zip(*found.values(), strict=True):
            results.append(
                {
                    "image_id": info["id"],
                    "category_id": category[name],
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "score": float(score),
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(truth, truth.loadRes(results), iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    return {"map": float(stats[0]), "map_50": float(stats[1]), "map_75": float(stats[2])}


def relabel_with_predictions(split: Path, checkpoint: Path, per_image: int = 2) -> None:
    """Replace the ground truth of a COCO ``split`` by ``checkpoint``'s own best detections.

    A tiny model trained for two steps scores mAP 0.0 on the generated shapes, and 0.0 is
    also what an evaluation that returns a constant, or scores nothing, reports. With ground
    truth made of the model's ``per_image`` top boxes (clipped to the image; the second one
    shifted right by a fifth of its width, so that it matches at IoU 0.5 but not at 0.75 and
    mAP50 differs from mAP50:95) plus, in each image, a 4x4 box in the top-left corner that
    it does not predict (recall below 1), a model trained like ``checkpoint`` scores strictly
    between 0 and 1, where a wrong evaluation shows (a constant 0.0 or 1.0 included, or one
    metric reported as another).
    """

    path = split / "_annotations.coco.json"
    coco = json.loads(path.read_text())
    infos = sorted(coco["images"], key=lambda info: info["id"])
    images = [np.asarray(Image.open(split / info["file_name"]).convert("RGB")) for info in infos]
    category = {c["name"]: c["id"] for c in coco["categories"]}
    names_in_order = [c["name"] for c in coco["categories"] if c.get("supercategory") != "none"]
    annotations = []
    for info, found in zip(infos, _detections(checkpoint, images), strict=True):
        kept = 0
        for name, box in zip(found["labels"], found["boxes"], strict=True):
            x0, y0 = max(float(box[0]), 0.0), max(float(box[1]), 0.0)
            x1, y1 = min(float(box[2]), info["width"]), min(float(box[3]), info["height"])
            if x1 - x0 < 4 or y1 - y0 < 4 or kept == per_image:
                continue
            if kept == 1:  # shifted by a fifth of its width: IoU ~0.67, a match at 0.5 only
                shift = min(0.2 * (x1 - x0), info["width"] - x1)
                x0, x1 = x0 + shift, x1 + shift
            w, h = round(x1 - x0, 2), round(y1 - y0, 2)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": info["id"],
                    "category_id": category[name],
                    "bbox": [round(x0, 2), round(y0, 2), w, h],
                    "area": round(w * h, 2),
                    "segmentation": [],
                    "iscrowd": 0,
                }
            )
            kept += 1
        missed = {"bbox": [0.0, 0.0, 4.0, 4.0], "area": 16.0, "segmentation": [], "iscrowd": 0}
        first = category[names_in_order[0]]
        annotations.append({"id": len(annotations) + 1, "image_id": info["id"],
                            "category_id": first, **missed})  # fmt: skip
    coco["annotations"] = annotations
    path.write_text(json.dumps(coco))
