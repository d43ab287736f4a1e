"""The verification report: one typed object, published as ``<model>.verify.json``.

:func:`export.verify.verify_onnx` returns a :class:`VerificationReport`; the pipeline adds the
OpenVINO outcome, the TensorRT shape check and the file's SHA-256, and writes
:meth:`VerificationReport.to_json` next to the model (``docs/contract.md`` lists the fields).
Readers use attributes, so a renamed field is an error where it is read, not a silent
``None``; :meth:`VerificationReport.from_json` reads a published report back and refuses
unknown fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from export.parity import Agreement, QueryDifferences, Tolerance
from export.selection import SelectionCheck

__all__ = [
    "Agreement",
    "Latency",
    "MapComparison",
    "QueryDifferences",
    "RuntimeOutcome",
    "SelectionCheck",
    "VerificationReport",
]


@dataclass(frozen=True)
class Latency:
    """Median model-only latency in ms (a sanity figure, not a benchmark: see ``what``)."""

    pytorch: float | None
    onnx: float | None
    what: str


@dataclass(frozen=True)
class MapComparison:
    """mAP of PyTorch and of the graph on the verification images with ground truth.

    ``pytorch`` and ``onnx`` are :func:`finetune.metrics.mean_average_precision`'s results;
    without ground truth ``measured`` is False and ``reason`` says why.
    """

    measured: bool
    reason: str = ""
    images: int = 0
    pytorch: dict[str, Any] = field(default_factory=dict)
    onnx: dict[str, Any] = field(default_factory=dict)
    map_drop: float | None = None
    map50_drop: float | None = None


@dataclass(frozen=True)
class RuntimeOutcome:
    """One runtime's verification in a line (also the sidecar's ``verified.runtimes``)."""

    runtime: str
    provider: str
    passed: bool
    map_drop: float | None
    agreement_top10: float | None
    failures: list[str]


# Fields holding a nested report type, for from_json.
_NESTED: dict[str, type] = {
    "tolerance": Tolerance,
    "latency_ms_median": Latency,
    "max_abs_diff": QueryDifferences,
    "query_selection": SelectionCheck,
    "detections_above_threshold": Agreement,
    "detections_top_n": Agreement,
    "dynamic_batch": Agreement,
    "map": MapComparison,
    "openvino": RuntimeOutcome,
}


@dataclass
class VerificationReport:
    """What was checked on one exported file, and whether it passed.

    Attributes:
        model: The file's final name.
        precision: ``fp32``, ``fp16`` or ``int8`` (the tolerances used).
        opset: The graph's ONNX opset.
        passed: Every check passed (the file may be published).
        failures: One line per failed check.
        source_checkpoint: The checkpoint folder exported.
        versions: Package versions of the toolkit, torch, transformers, onnx, onnxruntime.
        images: What the verification images were.
        notes: Remarks on the images (e.g. no ground truth).
        tolerance: The margins of this precision.
        graph_problems: ``onnx.checker`` and contract problems (empty: none).
        parity: Set when parity was not checked (``verify=False``), saying so.
        provider: The runtime's execution provider; None when the graph was not run.
        latency_ms_median: Model-only latency of PyTorch and the graph.
        max_abs_diff: Per-query differences (information; ties reorder queries).
        query_selection_ties: Share of images whose encoder top-k boundary is an exact tie.
        query_selection: The graph's query selection against PyTorch's (near-ties, every
            precision: the allowance used and the measured gap).
        score_threshold: The score cut of ``detections_above_threshold``.
        detections_above_threshold: Detections scoring at least ``score_threshold``, matched.
        top_n: Detections per image of ``detections_top_n``.
        detections_top_n: The ``top_n`` best detections per image, matched.
        dynamic_batch_size: The batch run for ``dynamic_batch``.
        dynamic_batch: The graph at batch ``dynamic_batch_size`` against itself at batch 1.
        map: mAP of both, where the images have ground truth.
        openvino: The same checks in OpenVINO, where it is installed.
        tensorrt_shape: int8-sym only: why the graph is not TensorRT-shaped (empty: it is).
        not_verified: Runtimes the file is meant for that were not run.
        sha256: SHA-256 of the published file (as in its sidecar).
        bytes: Its size.
    """

    model: str
    precision: str
    opset: int
    passed: bool = False
    failures: list[str] = field(default_factory=list)
    source_checkpoint: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    images: str = ""
    notes: list[str] = field(default_factory=list)
    tolerance: Tolerance | None = None
    graph_problems: list[str] = field(default_factory=list)
    parity: str | None = None
    provider: str | None = None
    latency_ms_median: Latency | None = None
    max_abs_diff: QueryDifferences | None = None
    query_selection_ties: float | None = None
    query_selection: SelectionCheck | None = None
    score_threshold: float | None = None
    detections_above_threshold: Agreement | None = None
    top_n: int | None = None
    detections_top_n: Agreement | None = None
    dynamic_batch_size: int | None = None
    dynamic_batch: Agreement | None = None
    map: MapComparison | None = None
    openvino: RuntimeOutcome | None = None
    tensorrt_shape: list[str] | None = None
    not_verified: list[str] = field(default_factory=list)
    sha256: str | None = None
    bytes: int | None = None

    def fail(self, *problems: str) -> None:
        """Record failed checks: ``passed`` becomes False."""
        self.failures = [*self.failures, *problems]
        self.passed = False

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (``<model>.verify.json``); unset fields left out."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VerificationReport:
        """Read :meth:`to_json`'s data back.

        Raises:
            ValueError: A field this version does not know, or a required one missing.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"verification report: unknown field(s) {unknown}")
        values = dict(data)
        for name, kind in _NESTED.items():
            if isinstance(values.get(name), Mapping):
                values[name] = _nested(kind, values[name], name)
        try:
            return cls(**values)
        except TypeError as exc:
            raise ValueError(f"verification report: {exc}") from None


def _nested(kind: type, data: Mapping[str, Any], name: str) -> Any:
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"verification report: unknown field(s) {unknown} in {name!r}")
    try:
        return kind(**data)
    except TypeError as exc:
        raise ValueError(f"verification report: {name}: {exc}") from None
