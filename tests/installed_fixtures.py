"""Build the folder that ``test_runtime_installed.py`` runs against, with the full stack.

``write_runtime_fixture`` exports a checkpoint (fp32 + slim variant, sidecars), writes test
images (non-square PNGs, an EXIF-rotated JPEG, grayscale, RGBA, one unreadable file) and the
PyTorch reference detections of each image, through transformers, into ``expected.json``.
A runtime-only install (no torch) then checks that it reproduces them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from runtime_fixtures import gap_threshold, hf_detect, photo

EXPORT_ENV = "RTDETR_DEPLOY_TEST_EXPORT"  # the folder, for a run in another environment


def _write_images(folder: Path) -> None:
    folder.mkdir(parents=True)
    Image.fromarray(photo(90, 150, seed=1)).save(folder / "wide.png")
    Image.fromarray(photo(200, 70, seed=2)).save(folder / "tall.png")
    Image.fromarray(photo(120, 90, seed=3).mean(axis=2).astype(np.uint8), "L").save(
        folder / "gray.png"
    )
    rgba = np.dstack([photo(64, 96, seed=4), np.full((64, 96), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    Image.fromarray(photo(60, 110, seed=5)).save(folder / "rotated.jpg", quality=95, exif=exif)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")


def write_runtime_fixture(folder: Path, checkpoint: Path) -> Path:
    """Export ``checkpoint`` into ``folder`` and write images and reference detections."""
    from transformers import AutoImageProcessor, RTDetrForObjectDetection

    from export import export_checkpoint
    from runtime.images import to_rgb_array

    export_checkpoint(checkpoint, folder / "model.onnx", verify=False, variants=["slim"])
    _write_images(folder / "images")
    reference = (
        RTDetrForObjectDetection.from_pretrained(checkpoint).eval(),
        AutoImageProcessor.from_pretrained(checkpoint),
    )
    expected = {}
    for path in sorted((folder / "images").iterdir()):
        if path.name == "broken.jpg":
            continue
        rgb = to_rgb_array(path)  # the model is compared, so both get the same pixels
        everything = hf_detect(reference, rgb, threshold=0.0)
        threshold = gap_threshold(everything["scores"], min_gap=2e-3)
        found = hf_detect(reference, rgb, threshold=threshold)
        expected[path.name] = {
            "threshold": threshold,
            "image_size": list(rgb.shape[:2]),
            **{key: value.tolist() for key, value in found.items()},
        }
    (folder / "expected.json").write_text(json.dumps(expected, indent=1))
    return folder
