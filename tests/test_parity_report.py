"""The verification report as a typed object: JSON round trip and refused unknown fields."""

from __future__ import annotations

import json

import pytest

from export.parity import Agreement, QueryDifferences
from export.report import (
    Latency,
    MapComparison,
    RuntimeOutcome,
    SelectionCheck,
    VerificationReport,
)
from export.tolerances import ALLOWANCES
from export.verify import TOLERANCES

AGREE = Agreement(30, 30, 0, 1.0, 1.0, 1.0, 1e-6, 1e-4, 0.9999)


def _full() -> VerificationReport:
    """A report with every nested field set, as a passed fp32 verification fills it."""
    return VerificationReport(
        model="model.onnx",
        precision="fp32",
        opset=17,
        passed=True,
        source_checkpoint="/runs/x/best",
        versions={"onnxruntime": "1.32.0"},
        images="3 image(s) given by the caller",
        notes=["no ground truth: mAP not measured"],
        tolerance=TOLERANCES["fp32"],
        provider="CPUExecutionProvider",
        latency_ms_median=Latency(3.1, 1.2, "model only"),
        max_abs_diff=QueryDifferences(1e-7, 1e-4, 1e-7, 1.0),
        query_selection_ties=1.0,
        query_selection=SelectionCheck(3, 2, 0.0, 1.0, 8.0, ALLOWANCES["fp32"]),
        score_threshold=0.3,
        detections_above_threshold=AGREE,
        top_n=10,
        detections_top_n=AGREE,
        dynamic_batch_size=2,
        dynamic_batch=AGREE,
        map=MapComparison(True, images=3, pytorch={"map": 0.5}, onnx={"map": 0.5}, map_drop=0.0),
        openvino=RuntimeOutcome("openvino 2026.4.1", "OpenVINO CPU", True, 0.0, 1.0, []),
        tensorrt_shape=[],
        sha256="ab" * 32,
        bytes=123,
    )


@pytest.mark.unit
def test_report_round_trips_through_json() -> None:
    """``to_json`` is plain JSON; ``from_json`` gives the same typed report back, and the
    fields that do not apply are left out of the file."""
    report = _full()
    text = json.dumps(report.to_json())
    back = VerificationReport.from_json(json.loads(text))
    assert back == report
    assert back.detections_top_n.agreement == 1.0 and back.openvino.passed
    assert back.query_selection.realigned == 2 and back.tolerance.selection_ulps is not None
    assert back.query_selection.allowance == ALLOWANCES["fp32"]
    assert json.loads(text)["sha256"] == "ab" * 32 and json.loads(text)["bytes"] == 123
    structure_only = VerificationReport("m.onnx", "fp32", 17, parity="not verified")
    assert "provider" not in structure_only.to_json()
    assert VerificationReport.from_json(structure_only.to_json()) == structure_only


@pytest.mark.unit
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"detections_top_10": {}}, r"unknown field\(s\) \['detections_top_10'\]"),
        ({"detections_top_n": {"agreemnt": 1.0}}, r"\['agreemnt'\] in 'detections_top_n'"),
        ({"model": None, "opset": None, "precision": None}, None),
    ],
)
def test_report_refuses_unknown_fields(edit: dict, message: str | None) -> None:
    """A renamed key is an error naming it, not a silently missing value."""
    data = {**_full().to_json(), **edit}
    if message is None:  # required fields missing
        data = {k: v for k, v in data.items() if k not in edit}
        message = "verification report: .*missing"
    with pytest.raises(ValueError, match=message):
        VerificationReport.from_json(data)


@pytest.mark.unit
def test_fail_records_a_failed_check() -> None:
    report = _full()
    report.fail("TensorRT shape: zero point is not int8 0")
    assert not report.passed and report.failures == ["TensorRT shape: zero point is not int8 0"]
