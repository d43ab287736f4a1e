"""Run folders for the export tests (plain functions; the fixtures in test_export use them)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from bench.settings import FAST_DATASET

__all__ = ["WARM_DATASET", "write_run", "write_warm_checkpoint", "write_warm_dataset"]

# A dataset of the warm start's own classes (finetune/assets/warmstart, trained on the
# generated 'pretrain' world): on it the shipped checkpoint is a trained detector as it is, so
# its export variants can be held to PASS (a random-init tiny model's tied scores fail int8 and
# fp16 parity: agreement 0.58/0.80 and 0.78/0.90 measured). The world of `pytest bench/
# --fast` (bench.settings.FAST_DATASET: 192 px images), run at 128 px: there the int8 drop is
# furthest inside its gate. Measured on this world's first 64 test images (AMD EPYC Zen 4,
# ONNX Runtime 1.32, 1 thread; deterministic, no training): at 128 px PyTorch mAP50:95 0.379,
# int8 drop -0.0028 (gate 0.01), fp16 -0.0003 (gate 0.005), agreement 1.0; at 192 px 0.756,
# int8 +0.0061, fp16 +0.0002 (an int8 drop's spread over test sets of 64 is ~0.003, bench.
# settings).
WARM_IMAGE_SIZE = 128
WARM_DATASET = FAST_DATASET  # one world: bench --fast's fp16 is proved here (its settings)


def write_run(
    runs_dir: Path,
    name: str,
    checkpoint: Path,
    dataset: Path | None = None,
    mtime: float | None = None,
) -> Path:
    """A run folder as ``python -m finetune`` leaves it: ``best/`` and ``metrics.json``.

    Args:
        runs_dir: Parent folder of the runs.
        name: The run's folder name.
        checkpoint: Checkpoint folder copied to ``best/``.
        dataset: Dataset root recorded in ``metrics.json`` (no ``metrics.json`` when None).
        mtime: Modification time given to ``best/`` (``latest_run`` orders runs by it).
    """
    run = runs_dir / name
    shutil.copytree(checkpoint, run / "best")
    if dataset is not None:
        (run / "metrics.json").write_text(json.dumps({"dataset": str(dataset)}))
    if mtime is not None:
        os.utime(run / "best", (mtime, mtime))
    return run


def write_warm_checkpoint(folder: Path, image_size: int = WARM_IMAGE_SIZE) -> Path:
    """The shipped warm-start checkpoint as a float32 checkpoint folder at ``image_size`` px
    (it ships in float16; export traces the weights as stored)."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    from finetune.model import WARMSTART_DIR

    model = AutoModelForObjectDetection.from_pretrained(WARMSTART_DIR, dtype=torch.float32)
    model.save_pretrained(folder)
    processor = AutoImageProcessor.from_pretrained(WARMSTART_DIR)
    processor.size = {"height": image_size, "width": image_size}
    processor.save_pretrained(folder)
    return folder


def write_warm_dataset(folder: Path) -> Path:
    """A generated COCO dataset of the warm start's classes (``WARM_DATASET``)."""
    from finetune.model import WARMSTART_DIR
    from finetune.synthetic import SyntheticSpec, generate_dataset

    labels = json.loads((WARMSTART_DIR / "config.json").read_text())["id2label"]
    classes = tuple(labels[str(i)] for i in range(len(labels)))
    return generate_dataset(folder, SyntheticSpec(name="warm", classes=classes, **WARM_DATASET))
