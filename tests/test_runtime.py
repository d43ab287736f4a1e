"""Tests of ``runtime``: the ONNX Detector against transformers, inputs, providers, errors, CLI.

The model is the session's tiny random-init checkpoint (64x64 input; ``model_factory`` makes
its scores untied so runtimes can be compared), exported once per session with
``export.export_checkpoint``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import numpy as np
import pytest
from cuda_probe import cuda_works
from PIL import Image
from runtime_fixtures import (
    TORCH_FREE,
    assert_annotated,
    assert_close,
    assert_same,
    fake_provider_build,
    gap_threshold,
    hf_detect,
    match_detections,
    photo,
    write_plain_onnx,
)
from transformers import AutoImageProcessor, RTDetrForObjectDetection, RTDetrImageProcessor

from runtime import (
    Detector,
    ImageError,
    MetadataError,
    ModelLoadError,
    ModelMetadata,
    Preprocessing,
    ProviderError,
    ProviderWarning,
    preprocess,
)
from runtime.cli import main
from runtime.providers import normalize_provider
from runtime.session import session_options

ROOT = Path(__file__).resolve().parents[1]
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"

# Measured (see runtime/preprocessing.py): one uint8 step on at most ~1% of the pixels.
PIXEL_ATOL = 1 / 255 + 1e-6
MEAN_ATOL = 1e-4


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def checkpoint(tiny_checkpoint: Path) -> Path:
    """The tiny checkpoint (well-conditioned: its scores are not tied, see model_factory)."""
    return tiny_checkpoint


@pytest.fixture(scope="session")
def onnx_model(tiny_onnx: Path) -> Path:
    return tiny_onnx


@pytest.fixture(scope="session")
def detector(onnx_model: Path) -> Detector:
    return Detector(onnx_model, providers=["cpu"], threads=1)


@pytest.fixture(scope="session")
def reference(checkpoint: Path):
    """The transformers pipeline of the same checkpoint: (model, processor)."""
    model = RTDetrForObjectDetection.from_pretrained(checkpoint).eval()
    return model, AutoImageProcessor.from_pretrained(checkpoint)


# --- preprocessing ----------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("size", [64, 192, 640])
@pytest.mark.parametrize("do_normalize", [False, True])
@pytest.mark.parametrize("shape", [(720, 1280), (300, 300), (37, 100), (64, 64)])
def test_preprocess_matches_transformers_processor(size, do_normalize, shape):
    """Measured vs RTDetrImageProcessor (torchvision backend), in pixel units (x 1/255):
    max 1 uint8 step, mean <= 0.01 (1280x720 -> 640: 0.9% of the pixels one step off)."""
    processor = RTDetrImageProcessor(
        size={"height": size, "width": size}, do_normalize=do_normalize, do_pad=False
    )
    pre = Preprocessing.from_processor_config(processor.to_dict())
    image = photo(*shape, seed=size)
    expected = processor(images=[image], return_tensors="pt")["pixel_values"].numpy()

    got = preprocess([image], pre)

    assert got.shape == expected.shape == (1, 3, size, size)
    assert got.dtype == np.float32
    # back to pixel units: undo the std division of do_normalize
    std = np.asarray(pre.image_std, np.float32).reshape(1, 3, 1, 1) if do_normalize else 1
    diff = np.abs(got - expected) * std
    assert diff.max() <= PIXEL_ATOL
    assert diff.mean() <= MEAN_ATOL


@pytest.mark.model
def test_preprocess_matches_checkpoint_processor_on_hd_image(tiny_checkpoint):
    processor = AutoImageProcessor.from_pretrained(tiny_checkpoint)
    pre = Preprocessing.from_processor_config(processor.to_dict())
    images = [photo(720, 1280, seed=1), photo(480, 640, seed=2)]
    expected = processor(images=images, return_tensors="pt")["pixel_values"].numpy()

    got = preprocess(images, pre)

    diff = np.abs(got - expected)
    assert diff.max() <= PIXEL_ATOL  # measured: 1/255
    assert diff.mean() <= MEAN_ATOL  # measured: 5e-6


@pytest.mark.unit
def test_preprocess_takes_rgb_pil_images_as_arrays():
    pre = Preprocessing(height=64, width=64)
    image = photo(90, 120, seed=4)
    np.testing.assert_array_equal(
        preprocess([Image.fromarray(image)], pre), preprocess([image], pre)
    )
    with pytest.raises(ValueError, match="expected an RGB PIL image, got mode 'L'"):
        preprocess([Image.fromarray(image[:, :, 0])], pre)


@pytest.mark.unit
def test_preprocess_without_resize_needs_model_size():
    pre = Preprocessing(height=32, width=32, do_resize=False)
    assert preprocess([np.zeros((32, 32, 3), np.uint8)], pre).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="expected 32x32"):
        preprocess([np.zeros((32, 40, 3), np.uint8)], pre)


# --- detections equal transformers' ---------------------------------------------------------


@pytest.mark.model
@pytest.mark.parametrize("shape", [(720, 1280), (480, 640), (50, 70)])
def test_detections_match_transformers(detector, reference, shape):
    image = photo(*shape, seed=shape[0])
    threshold = gap_threshold(hf_detect(reference, image, 0.0)["scores"], min_gap=1e-3)
    expected = hf_detect(reference, image, threshold)

    got = detector(image, threshold=threshold)

    assert 0 < len(got) < len(detector.predict(image, 0.0)[0])
    problems = match_detections(
        got.xyxy, got.confidence, got.class_id,
        expected["boxes"], expected["scores"], expected["labels"],
        box_atol=1e-3 * max(shape), score_atol=2e-4,
    )  # fmt: skip
    assert not problems, problems
    names = [detector.metadata.id2label[int(i)] for i in got.class_id]
    assert list(got.data["class_name"]) == names


@pytest.mark.model
@pytest.mark.parametrize("shape", [(720, 1280), (50, 70)])
def test_detector_equals_graph_fed_with_transformers_pixels(detector, reference, shape):
    """The runtime's own part (decode, preprocess, threshold, sizes), whatever the graph."""
    image = photo(*shape, seed=shape[0])
    pixel_values = reference[1](images=[image], return_tensors="pt")["pixel_values"].numpy()
    feed = {"images": pixel_values, "orig_target_sizes": np.array([shape[::-1]], np.int64)}
    labels, boxes, scores = (out[0] for out in detector.session.run(None, feed))
    threshold = gap_threshold(scores, min_gap=1e-4)
    keep = scores > threshold

    got = detector.predict(image, threshold=threshold)[0]

    assert got.image_size == shape
    problems = match_detections(
        got.xyxy, got.confidence, got.class_id, boxes[keep], scores[keep], labels[keep],
        box_atol=1e-3 * max(shape), score_atol=2e-5,
    )  # fmt: skip
    assert not problems, problems


# --- inputs -----------------------------------------------------------------------------------

RGB = photo(90, 120, seed=5)
GRAY = RGB.mean(axis=2).astype(np.uint8)


def _rgba(array: np.ndarray) -> np.ndarray:
    return np.dstack([array, np.full(array.shape[:2], 255, np.uint8)])


@pytest.mark.model
@pytest.mark.parametrize(
    ("make", "bgr", "same_as"),
    [
        (lambda tmp: tmp / "rgb.png", False, RGB),
        (lambda tmp: str(tmp / "rgb.png"), False, RGB),
        (lambda tmp: Image.fromarray(RGB), False, RGB),
        (lambda tmp: RGB, False, RGB),
        (lambda tmp: np.ascontiguousarray(RGB[:, :, ::-1]), True, RGB),
        (lambda tmp: RGB[:, :, ::-1], True, RGB),  # a non-contiguous view, cv2-style
        (lambda tmp: _rgba(RGB), False, RGB),
        (lambda tmp: _rgba(RGB[:, :, ::-1]), True, RGB),
        (lambda tmp: Image.fromarray(_rgba(RGB), "RGBA"), False, RGB),
        (lambda tmp: GRAY, False, np.dstack([GRAY] * 3)),
        (lambda tmp: GRAY[:, :, None], False, np.dstack([GRAY] * 3)),
        (lambda tmp: Image.fromarray(GRAY, "L"), False, np.dstack([GRAY] * 3)),
    ],
    ids=[
        "path", "str", "pil", "rgb", "bgr", "bgr-view", "rgba", "bgra", "pil-rgba",
        "gray", "gray-hw1", "pil-l",
    ],
)  # fmt: skip
def test_input_types(detector, tmp_path, make, bgr, same_as):
    Image.fromarray(RGB).save(tmp_path / "rgb.png")
    expected = detector.predict(same_as, threshold=0.0)[0]

    got = detector.predict(make(tmp_path), threshold=0.0, bgr=bgr)[0]

    assert_same(got, expected)
    assert got.image_size == (90, 120)


@pytest.mark.model
def test_call_returns_supervision_detections(detector):
    import supervision as sv

    single = detector(RGB, threshold=0.0)
    batch = detector([RGB, GRAY], threshold=0.0)

    assert isinstance(single, sv.Detections)
    assert isinstance(batch, list) and len(batch) == 2
    assert single.xyxy.shape == (len(single), 4) and single.xyxy.dtype == np.float32
    assert single.class_id.dtype == np.int64
    assert single.data["class_name"].shape == (len(single),)
    assert detector([], threshold=0.5) == []


@pytest.mark.model
def test_list_runs_as_one_batch_equal_to_single_images(detector, monkeypatch):
    images = [photo(90, 120, seed=5), photo(200, 100, seed=6), photo(64, 64, seed=7)]
    calls = []
    real_run = detector.session.run

    def counting_run(names, feed):
        calls.append(feed["images"].shape[0])
        return real_run(names, feed)

    singles = [detector.predict(image, 0.0)[0] for image in images]
    monkeypatch.setattr(detector.session, "run", counting_run, raising=False)
    batch = detector.predict(images, threshold=0.0)

    assert calls == [3]
    for got, expected in zip(batch, singles, strict=True):
        assert got.image_size == expected.image_size
        assert_close(got, expected)


@pytest.mark.model
def test_fixed_batch_graph_runs_in_chunks(onnx_model):
    images = [photo(90, 120, seed=s) for s in range(3)]
    dynamic = Detector(onnx_model, providers=["cpu"], threads=1)
    chunked = Detector(onnx_model, providers=["cpu"], threads=1)
    chunked._max_batch = 1  # as if the graph had been exported with batch size 1

    expected = dynamic.predict(images, 0.0)
    for got, want in zip(chunked.predict(images, 0.0), expected, strict=True):
        assert_close(got, want)


@pytest.mark.model
@pytest.mark.parametrize(
    ("images", "exception"),
    [
        (RGB, does_not_raise()),
        ([RGB, Image.fromarray(RGB)], does_not_raise()),
        (42, pytest.raises(ValueError, match=r"expected an image path.*got int")),
        (None, pytest.raises(ValueError, match="got NoneType")),
        ({"image": RGB}, pytest.raises(ValueError, match="got dict")),
        (np.zeros((2, 8, 8, 3), np.uint8), pytest.raises(ValueError, match=r"4-D array.*list")),
        ([RGB, 3.5], pytest.raises(ValueError, match=r"images\[1\].*got float")),
        (RGB.astype(np.float32), pytest.raises(ImageError, match="uint8")),
        (np.zeros((8, 8, 2), np.uint8), pytest.raises(ImageError, match="HxWx3")),
    ],
    ids=["array", "list", "int", "none", "dict", "4d", "list-float", "float32", "2-channels"],
)
def test_input_validation(detector, images, exception):
    with exception:
        detector(images)


@pytest.mark.model
@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_threshold_out_of_range(detector, threshold):
    with pytest.raises(ValueError, match="threshold between 0 and 1"):
        detector(RGB, threshold=threshold)


# --- torch-free, thread-safe --------------------------------------------------------------------


@pytest.mark.model
def test_runs_without_torch_and_transformers(onnx_model):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, str(onnx_model)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    count, count_sv, kind, lower, loaded = done.stdout.strip().split(" ", 4)
    assert int(count) == int(count_sv) > 0
    assert kind == "Detections"
    assert lower == "[]"  # predict() needs neither supervision nor cv2
    assert loaded == "[]"


@pytest.mark.model
def test_one_detector_shared_by_8_threads_equals_sequential(detector):
    images = [photo(80 + 16 * i, 120, seed=10 + i) for i in range(8)] * 2
    expected = [detector.predict(image, threshold=0.0)[0] for image in images]

    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda image: detector.predict(image, threshold=0.0)[0], images))

    for a, b in zip(got, expected, strict=True):
        assert_same(a, b)


# --- execution providers ------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "expected", "exception"),
    [
        ("cpu", CPU, does_not_raise()),
        ("CUDA", "CUDAExecutionProvider", does_not_raise()),
        ("trt", "TensorrtExecutionProvider", does_not_raise()),
        ("cudaexecutionprovider", "CUDAExecutionProvider", does_not_raise()),
        ("OpenVINOExecutionProvider", "OpenVINOExecutionProvider", does_not_raise()),
        ("gpu0", None, pytest.raises(ValueError, match="unknown execution provider 'gpu0'")),
    ],
)
def test_normalize_provider(name, expected, exception):
    with exception:
        assert normalize_provider(name) == expected


@pytest.mark.unit
def test_session_options():
    options = session_options(3)
    assert options.intra_op_num_threads == 3
    assert options.execution_mode.name == "ORT_SEQUENTIAL"
    assert options.graph_optimization_level.name == "ORT_ENABLE_ALL"
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    spinning = session_options(spinning=True)
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    with pytest.raises(ValueError, match="threads >= 1"):
        session_options(0)


def _provider_warnings(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, ProviderWarning)]


@pytest.mark.model
def test_cuda_request_on_this_machine(onnx_model):
    """A real request for CUDA, nothing patched. The expected outcome comes from
    ``cuda_probe`` (onnxruntime alone), not from what the runtime reports: CUDA in use and
    silent where CUDA works; otherwise the CPU, one ProviderWarning pointing at the caller,
    and ``strict`` raises."""
    import onnxruntime as ort

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector = Detector(onnx_model, providers=["cuda"], threads=1)
    ours = _provider_warnings(caught)
    if cuda_works():
        assert detector.providers[0] == CUDA
        assert ours == []
        Detector(onnx_model, providers=["cuda"], threads=1, strict=True)
        return
    assert detector.providers == [CPU]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert (
        f"{onnx_model}: execution provider(s) CUDAExecutionProvider requested but not in use"
        in str(ours[0].message)
    )
    assert ours[0].filename == __file__  # points at the caller
    if CUDA not in ort.get_available_providers():  # the CPU build: CUDA was not passed on
        assert [str(w.message) for w in caught if w not in ours] == []
    with pytest.raises(ProviderError, match=r"CUDAExecutionProvider.*strict=True"):
        Detector(onnx_model, providers=["cuda"], strict=True)


@pytest.mark.model
def test_cuda_request_falling_back_warns_once_at_the_caller(onnx_model, monkeypatch):
    """onnxruntime-gpu where CUDA does not work (simulated on any machine): CUDA is asked for,
    the session runs on the CPU, one ProviderWarning names the file and points at the caller;
    ``strict`` raises instead."""
    asked = fake_provider_build(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector = Detector(onnx_model, providers=["cuda"], threads=1)
    ours = _provider_warnings(caught)

    assert asked == [[CUDA]]
    assert detector.providers == [CPU]
    assert [str(w.message) for w in ours] == [
        f"{onnx_model}: execution provider(s) CUDAExecutionProvider requested but not in use; "
        "onnxruntime runs this model on CPUExecutionProvider. onnxruntime's own log above says "
        "why; usually no GPU is visible, or the CUDA/cuDNN (and TensorRT) libraries do not "
        "match this onnxruntime-gpu build."
    ]
    assert ours[0].filename == __file__
    with pytest.raises(ProviderError, match=r"CUDAExecutionProvider requested.*strict=True"):
        Detector(onnx_model, providers=["cuda"], threads=1, strict=True)
    assert asked == [[CUDA], [CUDA]]


@pytest.mark.model
def test_provider_not_offered_is_not_passed_to_onnxruntime(onnx_model, monkeypatch):
    """The CPU build (Azure + CPU): CUDA is not handed to onnxruntime (which would only print
    an error), the session gets the CPU, and the request is still reported."""
    asked = fake_provider_build(monkeypatch, offered=["AzureExecutionProvider", CPU], runs_on=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector = Detector(onnx_model, providers=["cuda", "cpu"], threads=1)

    assert asked == [[CPU]]
    assert detector.providers == [CPU]
    assert [str(w.message) for w in caught if w.category is not ProviderWarning] == []
    assert len(_provider_warnings(caught)) == 1


@pytest.mark.model
def test_default_providers_report_what_is_used(onnx_model):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProviderWarning)  # the default preference only logs
        detector = Detector(onnx_model, threads=1)
    assert detector.providers[-1] == CPU
    assert f"providers={detector.providers}" in repr(detector)


@pytest.mark.model
def test_default_preference_fallback_is_logged_or_strict(onnx_model, monkeypatch, caplog):
    """A GPU box whose CUDA does not work (simulated): the default preference asks for
    TensorRT > CUDA > CPU, runs on the CPU, logs it (no ProviderWarning); strict raises."""
    asked = fake_provider_build(monkeypatch, driver=True)
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="runtime"):
        warnings.simplefilter("error", ProviderWarning)
        detector = Detector(onnx_model, threads=1)

    assert asked == [[TRT, CUDA, CPU]]
    assert detector.providers == [CPU]
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        f"{onnx_model}: execution provider(s) TensorrtExecutionProvider, CUDAExecutionProvider "
        "requested but not in use; onnxruntime runs this model on CPUExecutionProvider."
    )
    assert record.getMessage().endswith(
        "Pass providers=['cpu'] to choose the CPU explicitly and silence this."
    )
    with pytest.raises(ProviderError, match=r"TensorrtExecutionProvider.*strict=True"):
        Detector(onnx_model, threads=1, strict=True)


@pytest.mark.model
def test_default_preference_without_driver_is_the_cpu_quietly(onnx_model, monkeypatch, caplog):
    """onnxruntime-gpu on a machine without the NVIDIA driver: TensorRT and CUDA are left out
    of the default preference, so the CPU is all that is asked for, nothing is logged as a
    fallback, and ``strict`` has nothing to complain about."""
    asked = fake_provider_build(monkeypatch, driver=False)
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="runtime"):
        warnings.simplefilter("error", ProviderWarning)
        detector = Detector(onnx_model, threads=1)
        strict = Detector(onnx_model, threads=1, strict=True)

    assert asked == [[CPU], [CPU]]
    assert detector.providers == strict.providers == [CPU]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert f"{onnx_model}: running on CPUExecutionProvider" in caplog.text


# --- engines: one session seam (runtime.engines) ----------------------------------------------


@pytest.fixture(scope="module")
def openvino_detector(onnx_model: Path) -> Detector:
    pytest.importorskip("openvino", reason="the [openvino] extra")
    return Detector(onnx_model, threads=1, backend="openvino")


@pytest.mark.model
def test_openvino_backend_runs_the_same_file_like_onnxruntime(detector, openvino_detector):
    """Same metadata, same preprocessing, outputs within float rounding (measured on the default
    model: boxes 2e-4 px, scores 3e-7 apart); the bench's OpenVINO rows are this Detector."""
    assert openvino_detector.metadata == detector.metadata
    assert openvino_detector.backend == "openvino"
    assert openvino_detector.providers[0].startswith("OpenVINO ")
    assert "backend='openvino'" in repr(openvino_detector)
    feed = detector.prepare([photo(48, 80, seed=30), photo(90, 60, seed=31)])
    (labels, boxes, scores), (ov_labels, ov_boxes, ov_scores) = (
        detector.run(feed), openvino_detector.run(feed)
    )  # fmt: skip
    np.testing.assert_array_equal(ov_labels, labels)
    np.testing.assert_allclose(ov_scores, scores, atol=1e-5)
    np.testing.assert_allclose(ov_boxes, boxes, atol=1e-3 * 90)
    assert ov_labels.dtype == np.int64 and ov_boxes.dtype == ov_scores.dtype == np.float32


@pytest.mark.model
def test_openvino_session_shared_by_4_threads_equals_sequential(openvino_detector):
    """One OpenVINO infer request must not serve two threads: the session pools them."""
    feeds = [openvino_detector.prepare(photo(40 + 4 * i, 64, seed=40 + i)) for i in range(8)]
    sequential = [openvino_detector.run(feed)[2] for feed in feeds]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda feed: openvino_detector.run(feed)[2], feeds * 3))
    for index, scores in enumerate(threaded):
        np.testing.assert_array_equal(scores, sequential[index % len(feeds)])


@pytest.mark.model
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "tensorrt"}, "unknown backend 'tensorrt'; expected one of onnxruntime, "),
        ({"backend": "openvino", "providers": ["cuda"]}, "backend='openvino' runs on OpenVINO's"),
    ],
)
def test_backend_mistakes_are_value_errors(onnx_model, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Detector(onnx_model, **kwargs)


@pytest.mark.model
def test_openvino_missing_names_the_extra(onnx_model, monkeypatch):
    from runtime.extras import MissingExtraError

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'rtdetr-deploy[openvino]'")):
        Detector(onnx_model, backend="openvino")


@pytest.mark.unit
def test_export_verifies_with_the_runtime_engine():
    """export/verify.py's OpenVinoSession is the runtime's: one compile configuration."""
    from export.openvino_session import OpenVinoSession
    from runtime.engines import OpenVinoSession as RuntimeSession

    assert OpenVinoSession is RuntimeSession


# --- errors -----------------------------------------------------------------------------------


def _metadata_props() -> dict[str, str]:
    return ModelMetadata({0: "a"}, Preprocessing(height=32, width=32)).to_props()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("write", "exception"),
    [
        (lambda p: None, pytest.raises(FileNotFoundError, match="no such model file")),
        (lambda p: p.write_text("hello"), pytest.raises(ModelLoadError, match="not an ONNX")),
        (
            lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
            pytest.raises(ModelLoadError, match="not an ONNX model"),
        ),
        (lambda p: p.mkdir(), pytest.raises(ModelLoadError, match="is a folder")),
        (write_plain_onnx, pytest.raises(MetadataError, match="no rtdetr-deploy metadata")),
        (
            lambda p: write_plain_onnx(p, {"rtdetr_deploy.schema": "1", "id2label": "{"}),
            pytest.raises(MetadataError, match="malformed"),
        ),
        (
            lambda p: write_plain_onnx(p, _metadata_props()),
            pytest.raises(ModelLoadError, match="expected inputs"),
        ),
    ],
    ids=["missing", "text", "random-bytes", "folder", "no-metadata", "bad-metadata", "contract"],
)
def test_model_errors_name_the_file(tmp_path, write, exception):
    path = tmp_path / "model.onnx"
    write(path)
    with exception as info:
        Detector(path, providers=["cpu"])
    assert str(path) in str(info.value)


@pytest.mark.model
def test_unreadable_image_names_the_file(detector, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    for path in (broken, tmp_path / "missing.png"):
        with pytest.raises(ImageError, match=re.escape(str(path))):
            detector(path)


# --- CLI --------------------------------------------------------------------------------------


def _cli(*args: object) -> int:
    return main([str(a) for a in args] + ["--providers", "cpu", "--threads", "1"])


@pytest.mark.model
def test_cli_folder_of_images(onnx_model, tmp_path, capsys):
    source = tmp_path / "photos"
    source.mkdir()
    for i, shape in enumerate([(90, 120), (60, 80)]):
        Image.fromarray(photo(*shape, seed=i)).save(source / f"p{i}.png")
    (source / "notes.txt").write_text("not an image")
    output = tmp_path / "out"

    assert _cli(onnx_model, source, "--output", output, "--threshold", "0.0") == 0

    assert sorted(p.name for p in output.iterdir()) == ["detections.json", "p0.png", "p1.png"]
    report = json.loads((output / "detections.json").read_text())
    assert report["providers"] == [CPU]
    assert [Path(r["file"]).name for r in report["results"]] == ["p0.png", "p1.png"]
    first = report["results"][0]
    assert len(first["boxes"]) == len(first["scores"]) == len(first["class_names"]) > 0
    assert first["image_size"] == [90, 120]
    for i, result in enumerate(report["results"]):  # PNG: lossless, so exact pixels
        assert_annotated(output / f"p{i}.png", np.asarray(Image.open(source / f"p{i}.png")),
                         result["boxes"])  # fmt: skip
    assert "FPS" in capsys.readouterr().out


@pytest.mark.model
def test_cli_single_image_matches_detector(onnx_model, detector, tmp_path):
    image = tmp_path / "one.png"
    Image.fromarray(RGB).save(image)

    assert _cli(onnx_model, image, "--output", tmp_path / "out", "--threshold", "0.0") == 0

    (result,) = json.loads((tmp_path / "out" / "detections.json").read_text())["results"]
    assert result["class_ids"] == detector.predict(RGB, 0.0)[0].class_id.tolist()


@pytest.mark.model
def test_cli_video(onnx_model, tmp_path):
    import cv2

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for i in range(5):
        writer.write(photo(64, 96, seed=i)[:, :, ::-1].copy())
    writer.release()
    output = tmp_path / "out"

    assert _cli(onnx_model, video, "--output", output, "--threshold", "0.0") == 0

    report = json.loads((output / "detections.json").read_text())
    assert [r["frame"] for r in report["results"]] == [0, 1, 2, 3, 4]
    capture = cv2.VideoCapture(str(output / "clip.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 5
    capture.release()


@pytest.mark.model
def test_cli_damaged_video_keeps_the_frames_before_the_damage(onnx_model, tmp_path, capsys):
    """A video cut short (a copy interrupted, a camera that lost power): the frames that
    decode are detected and written, the rest are reported, exit status 1."""
    import cv2

    whole = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for i in range(12):
        writer.write(photo(64, 96, seed=i)[:, :, ::-1].copy())
    writer.release()
    video = tmp_path / "clip.avi"
    video.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    output = tmp_path / "out"

    assert _cli(onnx_model, video, "--output", output, "--threshold", "0.0") == 1

    report = json.loads((output / "detections.json").read_text())
    frames = [r["frame"] for r in report["results"]]
    assert 0 < len(frames) < 12 and frames == list(range(len(frames)))
    (error,) = report["errors"]
    assert error["file"] == str(video)
    assert f"frames {len(frames)} to 11 could not be decoded" in error["error"]
    capture = cv2.VideoCapture(str(output / "clip.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == len(frames)
    capture.release()
    assert sorted(p.name for p in output.iterdir()) == ["clip.mp4", "detections.json"]
    assert "some frames could not be read" in capsys.readouterr().out


@pytest.mark.model
@pytest.mark.parametrize(
    ("model", "source", "message"),
    [
        ("missing.onnx", "image.png", "missing.onnx: no such model file"),
        ("text.onnx", "image.png", "text.onnx: not an ONNX model"),
        ("plain.onnx", "image.png", "plain.onnx: ONNX model has no rtdetr-deploy metadata"),
        ("MODEL", "broken.png", "broken.png: cannot decode image"),
        ("MODEL", "missing.png", "missing.png: no such image, folder or video"),
        ("MODEL", "empty", "empty: no images in this folder"),
        ("MODEL", "broken.mp4", "broken.mp4: cannot open video"),
        ("MODEL", "out", "out: choose another --output"),
    ],
)
def test_cli_errors_exit_2_without_traceback(onnx_model, tmp_path, capsys, model, source, message):
    Image.fromarray(RGB).save(tmp_path / "image.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "text.onnx").write_text("hello")
    (tmp_path / "empty").mkdir()
    (tmp_path / "out").mkdir()
    write_plain_onnx(tmp_path / "plain.onnx")
    model_path = onnx_model if model == "MODEL" else tmp_path / model

    code = _cli(model_path, tmp_path / source, "--output", tmp_path / "out")

    err = capsys.readouterr().err
    assert code == 2
    assert f"error: {tmp_path / message}" in err
    assert "Traceback" not in err


@pytest.mark.model
def test_python_dash_m_runtime_strict_provider_error(onnx_model, tmp_path):
    """``--strict`` in a real process, nothing patched: exit 2 with one ``error:`` line where
    CUDA does not work (decided by ``cuda_probe``, not by the exit status), exit 0 where it
    does."""
    Image.fromarray(RGB).save(tmp_path / "image.png")
    done = subprocess.run(
        [sys.executable, "-m", "runtime", str(onnx_model), str(tmp_path / "image.png"),
         "--providers", "cuda", "--strict", "--output", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    if cuda_works():
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith(
        f"error: {onnx_model}: execution provider(s) CUDAExecutionProvider requested but not "
        "in use; onnxruntime runs this model on CPUExecutionProvider."
    )
    assert line.endswith("(strict=True)")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "detections.json").exists()


@pytest.mark.model
@pytest.mark.parametrize("strict", [True, False])
def test_cli_strict_flag_reaches_the_detector(onnx_model, tmp_path, monkeypatch, capsys, strict):
    """CUDA requested where it does not work (simulated on any machine): ``--strict`` stops
    with exit status 2 and writes nothing; without it the run goes on, on the CPU."""
    Image.fromarray(RGB).save(tmp_path / "image.png")
    asked = fake_provider_build(monkeypatch)
    argv = [str(onnx_model), str(tmp_path / "image.png"), "--output", str(tmp_path / "out"),
            "--providers", "cuda", "--threads", "1", *(["--strict"] if strict else [])]  # fmt: skip
    with warnings.catch_warnings():  # main() silences ProviderWarning for the process
        code = main(argv)

    err = capsys.readouterr().err
    assert asked == [[CUDA]]
    assert "Traceback" not in err
    if strict:
        assert code == 2
        assert "CUDAExecutionProvider requested but not in use" in err
        assert err.rstrip().endswith("(strict=True)")
        assert not (tmp_path / "out" / "detections.json").exists()
    else:
        assert code == 0, err
        report = json.loads((tmp_path / "out" / "detections.json").read_text())
        assert report["providers"] == [CPU]
        assert "error: " not in err
