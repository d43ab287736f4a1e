"""The Node.js client (``examples/node/detect.mjs``) against the Python ``Detector``.

The client reads only the ONNX file and its JSON sidecar and reproduces the runtime's
preprocessing (EXIF orientation, Pillow's fixed-point resize, rescale, fused float32
normalisation). What is proven here, on the session's tiny exported model:

1. the same input tensor gives the same detections, bit for bit (onnxruntime-node vs the
   Python onnxruntime, one thread each);
2. from the same RGB pixels the client's tensor equals ``Detector.prepare`` exactly, for every
   filter the client implements, with normalisation, in the installed Pillow's pass order;
   from a JPEG file (subsamplings, grayscale, the 8 EXIF orientations) only the decoder
   differs (jpeg-js's IDCT rounds differently from libjpeg-turbo's), measured and bounded;
3. from the same JPEG file the detections match one-to-one within measured tolerances;
4. a stale or missing sidecar is refused with exit status 2 and one line.

Needs ``node`` and ``npm`` on PATH (skipped otherwise); ``npm ci --ignore-scripts`` runs once
in ``examples/node`` when its ``node_modules`` is missing.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import pytest
from PIL import Image
from runtime_fixtures import gap_threshold, match_detections, npm_installed, photo

from runtime import Detector, Preprocessing, preprocess
from runtime.images import to_rgb_array

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "examples" / "node"
SCRIPT = CLIENT / "detect.mjs"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = [
    pytest.mark.model,
    pytest.mark.slow,
    pytest.mark.skipif(
        NODE is None or NPM is None,
        reason="the Node.js client test needs `node` and `npm` on PATH",
    ),
]

# Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many
# pixels as the width (portrait photos to a square input); Pillow 12 ran the horizontal pass
# first. The order changes values by one step; the client does either (default: Pillow 13).
RESIZE_ORDER = "pillow13" if int(PIL.__version__.split(".")[0]) >= 13 else "pillow12"
PIL_FILTERS = {"bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}

# Measured from JPEG files (jpeg-js + the client's libjpeg-style upsampling and colour
# conversion vs Pillow/libjpeg-turbo): the IDCTs round differently, at most 1 step per
# component, at most 3 uint8 steps after YCbCr -> RGB, on ~12% of the values (6% for
# grayscale), mean 0.16 steps before the resize. Bounds in uint8 steps of the 0..1 tensor.
JPEG_MAX_STEPS = 3
JPEG_MEAN_STEPS = 0.25
# Measured end to end from the same JPEG with the tiny random model (images up to 640 px):
# scores within 2e-6 and boxes within 1e-4 px; asserted with a wide margin. A trained model
# may amplify the input difference differently.
SCORE_ATOL = 1e-4
BOX_ATOL = 0.01  # pixels of the original image
MIN_GAP = 10 * SCORE_ATOL  # thresholds sit in a score gap this wide


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Path:
    """``examples/node`` with its dependencies installed (``npm ci`` when missing)."""
    npm_installed(CLIENT, NPM, "onnxruntime-node")
    return SCRIPT


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported to ONNX, with its ``model.json`` sidecar."""
    from export import export_checkpoint

    output = tmp_path_factory.mktemp("node_onnx") / "model.onnx"
    path = Path(export_checkpoint(tiny_checkpoint, output, verify=False).path)
    # The client reads only the ONNX file and this sidecar, which export writes beside it.
    assert path.with_suffix(".json").is_file(), f"export wrote no sidecar beside {path}"
    return path


@pytest.fixture(scope="module")
def detector(model: Path) -> Detector:
    return Detector(model, providers=["cpu"], threads=1)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """JPEG files written with Pillow: sizes, subsamplings, grayscale, EXIF orientation 6."""
    folder = tmp_path_factory.mktemp("node_jpegs")
    files = {}

    def save(name: str, image: np.ndarray, **options: Any) -> None:
        files[name] = folder / f"{name}.jpg"
        Image.fromarray(image).save(files[name], **options)

    save("97x143_q95_444", photo(97, 143, seed=1), quality=95, subsampling=0)
    save("480x640_default_420", photo(480, 640, seed=2))  # downscaled 7.5x / 10x
    save("480x640_q90_422", photo(480, 640, seed=3), quality=90, subsampling=1)
    save("30x40_q95_420", photo(30, 40, seed=4), quality=95)  # upscaled
    save("64x64_q95_420", photo(64, 64, seed=5), quality=95)  # model size: not resized
    save("120x90_gray", photo(120, 90, seed=6)[:, :, 0], quality=90)
    rotated = Image.fromarray(photo(60, 100, seed=7))
    exif = rotated.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    files["60x100_exif6"] = folder / "60x100_exif6.jpg"
    rotated.save(files["60x100_exif6"], quality=95, subsampling=0, exif=exif)
    return files


# --- helpers -----------------------------------------------------------------------------------


def node(*args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [NODE, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60
    )
    if check:
        assert done.returncode == 0, f"node {args} exited {done.returncode}:\n{done.stderr}"
    return done


def node_detect(*args: object) -> dict[str, Any]:
    return json.loads(node(*args).stdout)


def node_tensor(model: Path, source: list[object], out: Path, *extra: object) -> np.ndarray:
    """The tensor the client builds (``--dump-tensor``, preprocessing only)."""
    node(model, *source, "--dump-tensor", out, "--no-run", "--resize-order", RESIZE_ORDER, *extra)
    return np.fromfile(out, dtype="<f4")


def as_arrays(result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.asarray(result["boxes"], dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(result["scores"], dtype=np.float32)
    return boxes, scores, np.asarray(result["class_ids"], dtype=np.int64)


# --- 1. same tensor, same detections -----------------------------------------------------------


@pytest.mark.parametrize("shape", [(97, 143), (480, 640)])
def test_same_tensor_gives_identical_detections(client, model, detector, tmp_path, shape):
    """onnxruntime-node 1.30 and the Python onnxruntime (one thread each, CPU) agree bit for
    bit on this model: measured exact, so asserted exact (float32 boxes and scores)."""
    feed = detector.prepare(photo(*shape, seed=11))
    tensor = tmp_path / "images.f32"
    feed["images"].astype("<f4").tofile(tensor)
    width, height = (int(v) for v in feed["orig_target_sizes"][0])
    outputs = detector.run(feed)

    scores_all = outputs[2][0]
    # 0.0 keeps all K; a threshold equal to a float32 score drops that score in both clients
    # (numpy compares in float32, the client compares with Math.fround(threshold)).
    for threshold in (0.0, float(scores_all[len(scores_all) // 2])):
        ours = node_detect(
            model, "--tensor", tensor, "--orig-size", width, height, "--threshold", threshold
        )
        (ref,) = detector.decode(outputs, feed["orig_target_sizes"], threshold)
        boxes, scores, labels = as_arrays(ours)
        np.testing.assert_array_equal(labels, ref.class_id)
        np.testing.assert_array_equal(boxes, ref.xyxy)
        np.testing.assert_array_equal(scores, ref.confidence)
        assert ours["class_names"] == ref.class_name.tolist()
        assert tuple(ours["image_size"]) == ref.image_size == shape


# --- 2. preprocessing parity -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["97x143_q95_444", "480x640_default_420", "60x100_exif6", "120x90_gray"]
)
def test_same_pixels_give_the_same_tensor(client, model, detector, jpegs, tmp_path, name):
    """The CLI from the pixels Pillow decoded (``--rgb``): resize + rescale are bit-exact."""
    pixels = to_rgb_array(jpegs[name])  # decoded and EXIF-rotated as Detector does
    raw = tmp_path / "pixels.rgb"
    pixels.tofile(raw)
    height, width = pixels.shape[:2]
    ours = node_tensor(model, ["--rgb", raw, width, height], tmp_path / "out.f32")
    np.testing.assert_array_equal(ours, detector.prepare(jpegs[name])["images"].ravel())


def test_resize_filters_and_normalisation_are_exact(client, tmp_path):
    """The module's ``toTensor`` (imported, one node process) vs ``runtime.preprocess`` for
    every filter the client implements, two target sizes, with and without normalisation:
    bit-exact."""
    # Landscape, portrait (Pillow 13 runs those vertical pass first), up- and downscaled, one
    # side only, the model size, and both sides of Pillow 13's pass-order boundary.
    sizes = [(97, 143), (143, 97), (480, 640), (720, 1280), (1280, 720), (30, 40), (64, 64)]
    sizes += [(64, 200), (200, 64), (66, 65), (67, 65)]
    jobs, expected = [], []
    for index, (height, width) in enumerate(sizes):
        pixels = photo(height, width, seed=20 + index)
        raw = tmp_path / f"{index}.rgb"
        pixels.tofile(raw)
        for resample, code in PIL_FILTERS.items():
            for target in [(64, 64), (48, 80)]:
                for normalize in (False, True):
                    pre = Preprocessing(*target, resample=code, do_normalize=normalize)
                    out = tmp_path / f"{index}_{resample}_{target[0]}_{normalize:d}.f32"
                    jobs.append(
                        {
                            "raw": str(raw),
                            "width": width,
                            "height": height,
                            "out": str(out),
                            "pre": {
                                "height": target[0],
                                "width": target[1],
                                "resample": resample,
                                "doResize": True,
                                "doRescale": True,
                                "rescaleFactor": pre.rescale_factor,
                                "doNormalize": normalize,
                                "imageMean": list(pre.image_mean),
                                "imageStd": list(pre.image_std),
                            },
                        }
                    )
                    expected.append((out, preprocess([pixels], pre), (height, width), resample))
    script = f"""
        import {{ readFileSync, writeFileSync }} from "node:fs";
        import {{ toTensor }} from {json.dumps(SCRIPT.as_uri())};
        for (const job of JSON.parse(readFileSync(process.argv[1], "utf8"))) {{
          const image = {{ width: job.width, height: job.height, data: readFileSync(job.raw) }};
          const tensor = toTensor(image, job.pre, {{ order: {json.dumps(RESIZE_ORDER)} }});
          writeFileSync(job.out, new Uint8Array(tensor.buffer));
        }}
    """
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script, str(tmp_path / "jobs.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    mismatches = [
        (shape, resample, np.count_nonzero(np.fromfile(out, "<f4") != reference.ravel()))
        for out, reference, shape, resample in expected
        if not np.array_equal(np.fromfile(out, "<f4"), reference.ravel())
    ]
    assert not mismatches, mismatches


def test_jpeg_files_differ_only_by_the_decoder(client, model, detector, jpegs, tmp_path):
    """From the JPEG file: node's tensor vs ``Detector.prepare(path)``, within the measured
    decoder difference (the resize is exact, see the tests above)."""
    report = {}
    for name, path in jpegs.items():
        ours = node_tensor(model, [path], tmp_path / f"{name}.f32")
        reference = detector.prepare(path)["images"].ravel()
        steps = np.abs(ours - reference) * 255  # in uint8 steps
        report[name] = (float(steps.max()), float(steps.mean()))
    print("\nJPEG tensor diff (uint8 steps, max / mean):", report)
    for name, (largest, mean) in report.items():
        assert largest <= JPEG_MAX_STEPS + 1e-3, (name, report)
        assert mean <= JPEG_MEAN_STEPS, (name, report)


def test_every_exif_orientation_in_both_byte_orders(client, model, detector, tmp_path):
    """Orientations 1-8 (little-endian, as Pillow writes EXIF) and 6 big-endian ("MM"): the
    same rotation as ``ImageOps.exif_transpose`` (a wrong one is off by ~100 steps)."""
    image = Image.fromarray(photo(60, 100, seed=8))
    files = {}
    for orientation in range(1, 9):
        exif = image.getexif()
        exif[0x0112] = orientation
        files[f"II-{orientation}"] = tmp_path / f"ii{orientation}.jpg"
        image.save(files[f"II-{orientation}"], quality=95, subsampling=0, exif=exif)
    # TIFF header "MM", IFD0 at 8 with one entry: Orientation (0x0112), SHORT, 1, value 6.
    big_endian = (
        b"MM" + struct.pack(">HIH", 42, 8, 1) + struct.pack(">HHIHHI", 0x0112, 3, 1, 6, 0, 0)
    )
    files["MM-6"] = tmp_path / "mm6.jpg"
    image.save(files["MM-6"], quality=95, subsampling=0, exif=b"Exif\0\0" + big_endian)
    for name, path in files.items():
        rotated = name.endswith(("5", "6", "7", "8"))
        assert to_rgb_array(path).shape[:2] == ((100, 60) if rotated else (60, 100)), name
        ours = node_tensor(model, [path], tmp_path / "out.f32")
        steps = np.abs(ours - detector.prepare(path)["images"].ravel()) * 255
        assert steps.max() <= JPEG_MAX_STEPS + 1e-3 and steps.mean() <= JPEG_MEAN_STEPS, name


# --- 3. end to end -----------------------------------------------------------------------------


def _largest_differences(ours: dict[str, Any], ref: Any) -> tuple[float, float]:
    """(score, box) differences of each reference detection to its closest same-label one."""
    boxes, scores, labels = as_arrays(ours)
    worst_score = worst_box = 0.0
    for box, score, label in zip(ref.xyxy, ref.confidence, ref.class_id, strict=True):
        same = np.flatnonzero(labels == label)
        box_diff = np.abs(boxes[same] - box).max(axis=1)
        score_diff = np.abs(scores[same] - score)
        best = np.argmin(box_diff / max(ref.image_size) + score_diff)
        worst_score = max(worst_score, float(score_diff[best]))
        worst_box = max(worst_box, float(box_diff[best]))
    return worst_score, worst_box


def test_detections_from_the_same_jpeg_match(client, model, detector, jpegs):
    """``node detect.mjs MODEL IMAGE --threshold T`` vs ``Detector.predict(IMAGE, T)``:
    matched one-to-one (order-free) within SCORE_ATOL and BOX_ATOL, T in a score gap of at
    least MIN_GAP. Not all K: near the K-th score the tiny model's queries are nearly tied,
    and the decoder's rounding may swap which query makes the top K."""
    worst_score = worst_box = 0.0
    for name, path in jpegs.items():
        (everything,) = detector.predict(path, threshold=0.0)
        threshold = gap_threshold(everything.confidence, MIN_GAP)
        (ref,) = detector.predict(path, threshold=threshold)
        assert 0 < len(ref.confidence) < len(everything.confidence), name
        ours = node_detect(model, path, "--threshold", threshold)
        boxes, scores, labels = as_arrays(ours)
        problems = match_detections(
            boxes, scores, labels, ref.xyxy, ref.confidence, ref.class_id,
            box_atol=BOX_ATOL, score_atol=SCORE_ATOL,
        )  # fmt: skip
        assert not problems, (name, threshold, problems)
        assert tuple(ours["image_size"]) == ref.image_size, name
        assert ours["class_names"] == [detector.metadata.id2label[int(c)] for c in labels]
        score_diff, box_diff = _largest_differences(ours, ref)
        worst_score, worst_box = max(worst_score, score_diff), max(worst_box, box_diff)
    print(f"\nend to end: max score diff {worst_score:.2e}, max box diff {worst_box:.2e} px")


# --- 4. errors ---------------------------------------------------------------------------------


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_stale_and_missing_sidecars_are_refused(client, model, jpegs, tmp_path):
    image = jpegs["97x143_q95_444"]
    copy = tmp_path / "model.onnx"
    shutil.copyfile(model, copy)

    missing = _one_error_line(node(copy, image, check=False))
    assert str(tmp_path / "model.json") in missing
    assert "python -m runtime.sidecar" in missing

    sidecar = json.loads(model.with_suffix(".json").read_text())
    sidecar["model"]["sha256"] = "0" * 64  # as if left from another export
    (tmp_path / "model.json").write_text(json.dumps(sidecar))
    stale = _one_error_line(node(copy, image, check=False))
    assert "stale sidecar" in stale and "sha256" in stale

    sidecar = json.loads(model.with_suffix(".json").read_text())
    sidecar["schema"] = 1
    (tmp_path / "model.json").write_text(json.dumps(sidecar))
    assert "schema" in _one_error_line(node(copy, image, check=False))


def test_user_errors_exit_2_with_one_line(client, model, tmp_path):
    not_jpeg = tmp_path / "image.png"
    Image.fromarray(photo(20, 20)).save(not_jpeg)
    assert "not a JPEG" in _one_error_line(node(model, not_jpeg, check=False))
    assert "no such image" in _one_error_line(node(model, tmp_path / "nope.jpg", check=False))
    assert "no such model" in _one_error_line(node(tmp_path / "nope.onnx", not_jpeg, check=False))
    assert "--threshold" in _one_error_line(node(model, not_jpeg, "--threshold", 2, check=False))
