"""One preprocessing: every PyTorch evaluation path feeds the model the runtime's exact pixels.

``finetune.pixels.pixel_values`` (evaluation, the benchmark's PyTorch mAP), the export
reference, int8 calibration and ``TorchBackend.prepare`` must equal, bit for bit,
``runtime.Detector.prepare`` of the same checkpoint exported to ONNX, on non-square,
mixed-size images: otherwise an fp32 mAP gate measures two resizers (transformers' processor
rounds ~1% of the pixels one uint8 step differently; test_runtime documents that difference).
Checked for ``do_normalize`` false (the tiny checkpoint) and true (a copy with a normalising,
non-square 64x96 processor).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from runtime_fixtures import photo
from transformers import AutoImageProcessor, RTDetrForObjectDetection, RTDetrImageProcessor

from export import export_checkpoint
from export.reference import torch_reference
from export.variants import _Calibration
from finetune.evaluate import predict_images
from finetune.metrics import Boxes, mean_average_precision
from finetune.pixels import pixel_array, pixel_values, preprocessing_of
from runtime import Detector
from runtime.images import to_rgb_array


def _images(model_size: tuple[int, int]) -> list[np.ndarray]:
    """Non-square, mixed sizes, a grayscale and an RGBA image, and one at the model size."""
    gray = photo(120, 90, seed=7).mean(axis=2).astype(np.uint8)
    rgba = np.dstack([photo(75, 130, seed=8), np.full((75, 130), 200, np.uint8)])
    return [
        photo(37, 100, seed=1),
        photo(480, 640, seed=2),
        photo(720, 1280, seed=3),
        photo(97, 143, seed=4),
        to_rgb_array(gray),
        to_rgb_array(rgba),
        photo(*model_size, seed=5),
    ]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def normalized_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a normalising, non-square (64x96) image processor."""
    folder = tmp_path_factory.mktemp("normalized") / "checkpoint"
    shutil.copytree(tiny_checkpoint, folder)
    RTDetrImageProcessor(
        size={"height": 64, "width": 96}, do_normalize=True, do_pad=False
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "normalized"])
def case(
    request: pytest.FixtureRequest,
    tiny_checkpoint: Path,
    normalized_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """A checkpoint (do_normalize = the param), its model, processor, ONNX export, images."""
    checkpoint = normalized_checkpoint if request.param else tiny_checkpoint
    processor = AutoImageProcessor.from_pretrained(checkpoint)
    assert processor.do_normalize is request.param
    output = tmp_path_factory.mktemp("onnx") / "model.onnx"
    path = export_checkpoint(checkpoint, output, verify=False).path
    detector = Detector(path, providers=["cpu"], threads=1)
    pre = preprocessing_of(processor)
    assert detector.metadata.preprocessing == pre  # the same parameters, from the checkpoint
    return {
        "checkpoint": checkpoint,
        "model": RTDetrForObjectDetection.from_pretrained(checkpoint).eval(),
        "processor": processor,
        "detector": detector,
        "images": _images((pre.height, pre.width)),
    }


@pytest.mark.model
def test_pixel_values_equal_detector_prepare(case):
    images, detector = case["images"], case["detector"]
    expected = detector.prepare(images)["images"]

    got = pixel_values(case["processor"], images)

    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    assert got.shape == (len(images), 3, *detector.metadata.input_size)
    np.testing.assert_array_equal(got.numpy(), expected)
    np.testing.assert_array_equal(pixel_array(case["processor"], images), expected)
    # Read-only arrays (memory-mapped, frames from a decoder) are fine too.
    frozen = [image.copy() for image in images]
    for image in frozen:
        image.flags.writeable = False
    np.testing.assert_array_equal(pixel_values(case["processor"], frozen).numpy(), expected)


@pytest.mark.model
def test_predict_images_feeds_the_runtime_pixels(case):
    """What ``predict_images`` (evaluation, benchmark mAP) gives the model, batches of 3."""
    images, model = case["images"], case["model"]
    fed: list[torch.Tensor] = []

    def record(module: Any, args: tuple, kwargs: dict) -> None:
        fed.append(kwargs["pixel_values"] if "pixel_values" in kwargs else args[0])

    hook = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        predictions = predict_images(model, case["processor"], images, batch_size=3)
    finally:
        hook.remove()

    assert [len(batch) for batch in fed] == [3, 3, 1]
    np.testing.assert_array_equal(
        torch.cat(fed).numpy(), case["detector"].prepare(images)["images"]
    )
    assert len(predictions) == len(images)


@pytest.mark.model
def test_export_reference_and_int8_calibration_feed_the_runtime_pixels(case):
    images, detector = case["images"], case["detector"]
    reference = torch_reference(case["model"], case["processor"], images)
    calibration = _Calibration(case["processor"], images)

    for index, image in enumerate(images):
        expected = detector.prepare([image])
        np.testing.assert_array_equal(reference.pixel_values[index], expected["images"])
        np.testing.assert_array_equal(reference.sizes[index], expected["orig_target_sizes"])
        feed = calibration.get_next()
        assert feed is not None and feed["images"].dtype == np.float32
        np.testing.assert_array_equal(feed["images"], expected["images"])
        np.testing.assert_array_equal(feed["orig_target_sizes"], expected["orig_target_sizes"])
    assert calibration.get_next() is None


@pytest.mark.model
def test_torch_backend_prepare_equals_detector_prepare(case):
    from bench.backends import TorchBackend

    backend = TorchBackend(case["model"], case["processor"], device="cpu", size_mb=0.0, batch=4)
    expected = case["detector"].prepare(case["images"])

    got = backend.prepare(case["images"])

    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name].dtype == expected[name].dtype
        np.testing.assert_array_equal(got[name], expected[name])


@pytest.mark.model
def test_pytorch_and_onnx_fp32_map_are_equal_on_non_square_images(case):
    """The benchmark's fp32 gate, cut down: PyTorch (``predict_images``) and the exported
    model (``Detector``) scored against the same ground truth (PyTorch's own top 5 per image,
    a non-zero mAP for this random model) agree to float rounding, not to a resizer."""
    images, detector = case["images"], case["detector"]
    torch_predictions = predict_images(case["model"], case["processor"], images, batch_size=4)
    labels, boxes, scores = detector.run(detector.prepare(images))
    onnx_predictions = [Boxes(boxes[i], labels[i], scores[i]) for i in range(len(images))]
    truth = [Boxes(p.xyxy[:5], p.class_id[:5]) for p in torch_predictions]

    torch_map = mean_average_precision(torch_predictions, truth)["map"]
    onnx_map = mean_average_precision(onnx_predictions, truth)["map"]

    assert torch_map > 0.5  # measured 0.98
    assert abs(onnx_map - torch_map) <= 1e-6  # measured 0
    # Measured max score diff 9e-8 (float rounding); fed the processor's pixels instead,
    # PyTorch's scores were 2e-6 (plain) and 1e-5 (normalized) away from the runtime's.
    for ours, theirs in zip(onnx_predictions, torch_predictions, strict=True):
        np.testing.assert_array_equal(ours.class_id, theirs.class_id)
        np.testing.assert_allclose(ours.confidence, theirs.confidence, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_fp32_export_verification_on_non_square_images(normalized_checkpoint, tmp_path):
    """Export's own verification, on non-square images given by the caller, against a
    reference computed from the runtime's pixels."""
    images = _images((64, 96))

    result = export_checkpoint(
        normalized_checkpoint, tmp_path / "model.onnx", images=images, threads=1
    )

    report = result.report
    assert report.passed, report.failures
    assert report.images.startswith(f"{len(images)} image(s) given by the caller")
    assert report.max_abs_diff.scores < 1e-4
    assert report.detections_top_n.agreement == 1.0
