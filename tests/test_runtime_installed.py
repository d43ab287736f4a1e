"""``runtime`` as a runtime-only install uses it: no torch, no transformers, maybe no supervision.

These tests import nothing of the training stack. They run twice: here, against a folder that
``installed_fixtures.write_runtime_fixture`` builds with the full stack, and in a fresh
virtualenv holding only ``pip install .`` (``test_install_profiles.py``), which passes the
folder in ``$RTDETR_DEPLOY_TEST_EXPORT``. The reference detections come from PyTorch
(transformers), so a runtime-only install is checked against the model, not against itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from runtime_fixtures import assert_annotated, match_detections

from runtime import Detector
from runtime.extras import MissingExtraError
from runtime.images import to_rgb_array
from runtime.sidecar import read_sidecar, sidecar_path

HAS_SUPERVISION = importlib.util.find_spec("supervision") is not None
READABLE = ["gray.png", "rgba.png", "rotated.jpg", "tall.png", "wide.png"]


@pytest.fixture(scope="module")
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from installed_fixtures import EXPORT_ENV

    given = os.environ.get(EXPORT_ENV)
    if given:
        return Path(given)
    return request.getfixturevalue("runtime_export")  # torch: only on this path


@pytest.fixture(scope="module")
def expected(folder: Path) -> dict:
    return json.loads((folder / "expected.json").read_text())


@pytest.fixture(scope="module")
def detector(folder: Path) -> Detector:
    return Detector(folder / "model.onnx", providers=["cpu"], threads=1)


@pytest.mark.model
@pytest.mark.parametrize("name", READABLE)
def test_predict_equals_pytorch(detector, folder, expected, name):
    """Decode (EXIF, alpha, grayscale), preprocess and run: PyTorch's detections."""
    reference = expected[name]
    (raw,) = detector.predict(folder / "images" / name, threshold=reference["threshold"])
    assert list(raw.image_size) == reference["image_size"]
    assert len(raw) == len(reference["scores"]) > 0
    problems = match_detections(
        raw.xyxy, raw.confidence, raw.class_id,
        np.array(reference["boxes"]), np.array(reference["scores"]), np.array(reference["labels"]),
        box_atol=1e-4 * max(raw.image_size), score_atol=1e-4,
    )  # fmt: skip
    assert not problems, problems
    assert list(raw.class_name) == [detector.metadata.id2label[int(c)] for c in raw.class_id]


@pytest.mark.model
def test_call_gives_supervision_detections_or_names_the_extra(detector, folder):
    image = folder / "images" / "wide.png"
    if HAS_SUPERVISION:
        import supervision as sv

        detections = detector(image, threshold=0.0)
        assert isinstance(detections, sv.Detections) and len(detections) > 0
    else:
        with pytest.raises(MissingExtraError, match=r"rtdetr-deploy\[supervision\]"):
            detector(image, threshold=0.0)


@pytest.mark.model
def test_sidecar_of_every_model_equals_its_onnx_metadata(folder):
    models = sorted(folder.glob("*.onnx"))
    assert [m.name for m in models] == ["model.onnx", "model.slim.onnx"]
    for model in models:
        assert read_sidecar(sidecar_path(model)) == Detector(model).metadata


@pytest.mark.model
def test_cli_folder_reports_the_broken_image_and_writes_the_rest(detector, folder, tmp_path):
    output = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "runtime", str(folder / "model.onnx"), str(folder / "images"),
         "--output", str(output), "--threshold", "0.3", "--threads", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # 1: some images could not be read
    assert "Traceback" not in done.stderr
    assert "broken.jpg: cannot decode image" in done.stderr
    report = json.loads((output / "detections.json").read_text())
    assert [Path(e["file"]).name for e in report["errors"]] == ["broken.jpg"]
    assert [Path(r["file"]).name for r in report["results"]] == READABLE
    for result in report["results"]:
        (raw,) = detector.predict(result["file"], threshold=0.3)
        assert {k: v for k, v in result.items() if k != "file"} == raw.to_dict()
    annotated = sorted(p.name for p in output.iterdir() if p.name != "detections.json")
    assert annotated == (READABLE if HAS_SUPERVISION else [])
    for result in report["results"] if HAS_SUPERVISION else []:
        name = Path(result["file"]).name
        # the decoded input (EXIF-rotated, alpha and gray made RGB) with the boxes drawn;
        # JPEG is re-encoded, so its pixels move a little everywhere
        tolerance = 16 if name.endswith(".jpg") else 0
        source = to_rgb_array(folder / "images" / name)
        assert_annotated(output / name, source, result["boxes"], tolerance=tolerance)
