"""Plain helpers for ``test_runtime.py``: synthetic photos, plain ONNX files, matching."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic RGB uint8 "photo": smooth colour fields, grain and a red rectangle."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))
    image = image.astype(np.int16) + rng.integers(-8, 9, image.shape, dtype=np.int16)
    top, left = height // 4, width // 5
    image[top : top + height // 3, left : left + width // 4] = (230, 40, 30)
    return image.clip(0, 255).astype(np.uint8)


def write_plain_onnx(path: Path, props: dict[str, str] | None = None) -> Path:
    """A one-node (Relu) ONNX model, optionally with ``metadata_props``: not our contract."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    for key, value in (props or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
    return path


def match_detections(
    ours_xyxy: np.ndarray,
    ours_scores: np.ndarray,
    ours_labels: np.ndarray,
    ref_xyxy: np.ndarray,
    ref_scores: np.ndarray,
    ref_labels: np.ndarray,
    *,
    box_atol: float,
    score_atol: float,
) -> list[str]:
    """One-to-one match by label, score and box; returns what did not match (empty: equal).

    Order-free, so that tied scores (common in random-init models) may come in any order.
    """
    problems = []
    if len(ours_scores) != len(ref_scores):
        problems.append(f"{len(ours_scores)} detections, reference has {len(ref_scores)}")
    free = np.ones(len(ours_scores), dtype=bool)
    for box, score, label in zip(ref_xyxy, ref_scores, ref_labels, strict=True):
        candidates = (
            free
            & (ours_labels == label)
            & (np.abs(ours_scores - score) <= score_atol)
            & np.all(np.abs(ours_xyxy - box) <= box_atol, axis=1)
        )
        if not candidates.any():
            problems.append(f"no match for label {label} score {score:.5f} box {box.round(2)}")
            continue
        free[np.flatnonzero(candidates)[0]] = False
    return problems


def gap_threshold(scores: np.ndarray, min_gap: float) -> float:
    """A threshold in the widest gap (>= ``min_gap``) between consecutive distinct ``scores``.

    Keeps some detections and drops others while staying clear of ties and rounding at the
    boundary.
    """
    ordered = np.sort(np.unique(scores))[::-1]
    gaps = ordered[:-1] - ordered[1:]
    best = int(np.argmax(gaps))
    if gaps[best] < min_gap:
        raise AssertionError(f"no gap of {min_gap} between the scores {ordered[:10]}...")
    return float((ordered[best] + ordered[best + 1]) / 2)


def hf_detect(reference: Any, image: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """transformers' detections: processor, model, ``post_process_object_detection``."""
    import torch

    model, processor = reference
    with torch.no_grad():
        outputs = model(**processor(images=[image], return_tensors="pt"))
    (result,) = processor.post_process_object_detection(
        outputs,
        threshold=threshold,
        target_sizes=[image.shape[:2]],  # (height, width)
    )
    return {key: value.numpy() for key, value in result.items()}


def assert_same(a: Any, b: Any) -> None:
    """Two ``RawDetections`` are identical."""
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    np.testing.assert_array_equal(a.class_id, b.class_id)
    np.testing.assert_array_equal(a.class_name, b.class_name)
    assert a.image_size == b.image_size


def assert_close(a: Any, b: Any, atol: float = 1e-4) -> None:
    """Two ``RawDetections`` match one-to-one within ``atol`` (boxes: relative to the image)."""
    problems = match_detections(
        a.xyxy, a.confidence, a.class_id, b.xyxy, b.confidence, b.class_id,
        box_atol=atol * max(b.image_size), score_atol=atol,
    )  # fmt: skip
    assert not problems, problems


# Run in a subprocess with torch, torchvision and transformers made unimportable.
TORCH_FREE = """
import importlib.abc, sys
BLOCKED = {"torch", "torchvision", "transformers"}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")

sys.meta_path.insert(0, Block())
import numpy as np
from runtime import Detector

detector = Detector(sys.argv[1], providers=["cpu"], threads=1)
image = np.full((48, 64, 3), 127, np.uint8)
raw = detector.predict(image, threshold=0.0)[0]
lower = sorted(m for m in ("supervision", "cv2") if m in sys.modules)
detections = detector(image, threshold=0.0)
print(len(raw), len(detections), type(detections).__name__, lower,
      sorted(m for m in BLOCKED if sys.modules.get(m) is not None))
"""


CPU_PROVIDER = "CPUExecutionProvider"
GPU_BUILD = ("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU_PROVIDER)


def fake_provider_build(
    monkeypatch: Any,
    *,
    offered: Sequence[str] = GPU_BUILD,
    driver: bool = True,
    runs_on: Sequence[str] | None = (CPU_PROVIDER,),
) -> list[list[Any]]:
    """Make onnxruntime report ``offered`` providers and an NVIDIA driver (or none).

    With ``runs_on`` every session is really created with those providers only, whatever it
    was asked for: onnxruntime-gpu on a machine where CUDA does not work (it offers TensorRT
    and CUDA, then silently runs on the CPU). ``runs_on=None`` passes the request through.
    Returns the ``providers`` argument of each session created, in order, so tests can check
    what ``runtime`` asked onnxruntime for. Works the same on a CPU or a GPU machine.
    """
    import onnxruntime as ort

    import runtime.providers

    real_session = ort.InferenceSession
    asked: list[list[Any]] = []

    def session(path: Any, sess_options: Any = None, providers: Any = None, **kwargs: Any):
        asked.append(list(providers) if providers is not None else None)
        given = list(runs_on) if runs_on is not None else providers
        return real_session(path, sess_options=sess_options, providers=given, **kwargs)

    monkeypatch.setattr(ort, "get_available_providers", lambda: list(offered))
    monkeypatch.setattr(ort, "InferenceSession", session)
    monkeypatch.setattr(runtime.providers, "nvidia_driver_present", lambda: driver)
    return asked


def box_outline(shape: tuple[int, int], boxes: Any) -> np.ndarray:
    """A mask of the one-pixel outlines of ``boxes`` (xyxy pixels), the parts inside ``shape``.

    Coordinates are truncated to integers, as supervision's ``BoxAnnotator`` draws them.
    """
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4).astype(int):
        left, right = max(x0, 0), min(x1, width - 1)
        top, bottom = max(y0, 0), min(y1, height - 1)
        if left > right or top > bottom:
            continue  # entirely outside the image
        for y in (y0, y1):
            if 0 <= y < height:
                mask[y, left : right + 1] = True
        for x in (x0, x1):
            if 0 <= x < width:
                mask[top : bottom + 1, x] = True
    return mask


def assert_annotated(
    path: Path, source: np.ndarray, boxes: Any, *, tolerance: int = 0, drawn: float = 0.9
) -> None:
    """``path`` decodes fully to ``source`` with ``boxes`` drawn on it.

    The decoded picture has the size of ``source``; at least a fraction ``drawn`` of the
    pixels on the outlines of the boxes differ from ``source`` by more than ``tolerance``
    (0 for PNG; JPEG needs some); without boxes no pixel differs by more than ``tolerance``.
    """
    with Image.open(path) as image:
        image.load()  # decode everything: a truncated file fails here, not on the header
        picture = np.asarray(image.convert("RGB"))
    assert picture.shape == source.shape, (path, picture.shape, source.shape)
    changed = np.abs(picture.astype(np.int16) - source.astype(np.int16)).max(axis=2) > tolerance
    outline = box_outline(source.shape[:2], boxes)
    if not outline.any():
        assert not changed.any(), f"{path}: {changed.sum()} pixels changed, no box to draw"
        return
    share = float(changed[outline].mean())
    assert share >= drawn, f"{path}: only {share:.0%} of the box outlines were drawn"


def npm_installed(folder: Path, npm: str, package: str) -> Path:
    """``folder`` (an example with a package-lock.json) with its npm dependencies installed:
    ``npm ci --ignore-scripts`` unless ``package`` is already in its node_modules (``.ci/run``
    installs both examples before the tests); a failed install fails the test with npm's
    output."""
    if not (folder / "node_modules" / package).is_dir():
        done = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=folder, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"npm ci --ignore-scripts failed in {folder}:\n{done.stdout}{done.stderr}")
    return folder
