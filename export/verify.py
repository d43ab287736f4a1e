"""Verify an exported graph before it is published under its final name.

Checks, in order: ``onnx.checker`` with ``full_check=True``; the graph's inputs and outputs
against :mod:`export.contract`; the metadata read back as the runtime reads it; then parity with
PyTorch on real images. Both backends get the SAME ``pixel_values`` (the runtime's
preprocessing with the checkpoint's config, ``finetune.pixels``), so any difference is the
graph's. Parity is judged on detections (see
:mod:`export.parity`), at a score threshold and on the top 10 per image, at batch 1 and again
at batch 2 (the dynamic batch), and, where the images have ground truth, on mAP through
:func:`finetune.metrics.mean_average_precision`.

An untrained or barely trained model is verified like a trained one: its exactly tied
query-selection scores are broken in the PyTorch reference as ONNX ``TopK`` breaks them
(:mod:`export.reference`), so no tolerance is widened for it; ``query_selection_ties`` (the
share of images whose encoder top-k boundary is such a tie) is reported as information.
Near-ties (selection scores a float32 ulp or so apart, which the backends round apart
differently): at fp32 the graph's own query selection is read from a temporary copy of it,
must be a top-k of PyTorch's selection scores within ``Tolerance.selection_ulps``, and the
reference is recomputed with it (:mod:`export.selection`); ``query_selection`` reports it.
"""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export.contract import INPUTS, OUTPUTS, TOP_K_AXIS, TensorSpec
from export.parity import Detections, Tolerance, agreement, max_abs_diff
from export.reference import Reference, median_ms
from export.report import Latency, MapComparison, VerificationReport
from export.samples import VerificationImages
from export.selection import pick_selection, realign, realign_batch, with_topk_outputs
from finetune.metrics import Boxes, mean_average_precision
from runtime.errors import ModelLoadError, first_line
from runtime.metadata import MetadataError, ModelMetadata

__all__ = [
    "SCORE_THRESHOLD",
    "TOLERANCES",
    "TOP_N",
    "check_graph",
    "make_session",
    "symmetric_problems",
    "verify_onnx",
]

SCORE_THRESHOLD = 0.3
TOP_N = 10
# Margins set from measurements on the small model (192 px, 100 test images): fp32 matched
# detections differ by <= 1e-6 in score and 1e-4 px; fp16 by 0.005 and 0.4 px (IoU >= 0.986,
# mAP -0.0015); int8 by 0.099 and 4.3 px (IoU >= 0.90, mAP +-0.006). Agreement was 1.0 for all.
# selection_ulps: the graph's query-selection scores differed from PyTorch's by up to 247 float32
# ulps of the largest selection score (calibrated tiny D-FINE; DEIMv2 200, RF-DETR 11.5,
# RT-DETRv2 7, untrained models 0-1; ONNX Runtime 1.32 and OpenVINO 2026.4): two queries each
# off by that much in opposite directions may swap, so a selection may be 2 x 256 ulps from
# a top-k (6.1e-5 of the largest score). fp16/int8 graphs do not have it (None).
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(
        score_atol=1e-3,
        box_px=1.0,
        min_iou=0.99,
        min_agreement=0.99,
        max_map_drop=0.002,
        selection_ulps=512,
    ),
    "fp16": Tolerance(
        score_atol=1e-2, box_px=2.0, min_iou=0.95, min_agreement=0.95, max_map_drop=0.005
    ),
    "int8": Tolerance(
        score_atol=0.15, box_px=8.0, min_iou=0.8, min_agreement=0.9, max_map_drop=0.01
    ),
}


def _versions() -> dict[str, str]:
    names = ("rtdetr-deploy", "torch", "transformers", "onnx", "onnxruntime-gpu", "onnxruntime")
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def make_session(path: Path, threads: int | None = None) -> Any:
    """A CPU ``InferenceSession`` with few threads and no spinning (shared machines)."""
    import onnxruntime as ort

    from runtime.session import session_options

    options = session_options(threads or min(4, os.cpu_count() or 1))
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _contract_problems(graph_values: Sequence[Any], specs: Sequence[TensorSpec]) -> list[str]:
    import onnx

    problems = []
    names = [v.name for v in graph_values]
    if names != [s.name for s in specs]:
        return [f"expected {[s.name for s in specs]}, graph has {names}"]
    for value, spec in zip(graph_values, specs, strict=True):
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        dims = list(tensor.shape.dim)
        if dtype != spec.dtype:
            problems.append(f"{spec.name}: dtype {dtype}, contract says {spec.dtype}")
        if len(dims) != spec.rank:
            problems.append(f"{spec.name}: rank {len(dims)}, contract says {spec.rank}")
        elif not dims[0].dim_param:
            problems.append(f"{spec.name}: batch axis is fixed to {dims[0].dim_value}")
        elif TOP_K_AXIS in spec.shape and dims[1].dim_param != TOP_K_AXIS:
            problems.append(f"{spec.name}: axis 1 is not named {TOP_K_AXIS!r}")
    return problems


def check_graph(path: Path) -> list[str]:
    """``onnx.checker`` (full check) and the contract; returns the problems found."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return [f"onnx.checker: {first_line(exc)}"]
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    return _contract_problems(inputs, INPUTS) + _contract_problems(graph.output, OUTPUTS)


def symmetric_problems(path: Path) -> list[str]:
    """Why the graph at ``path`` is not shaped for TensorRT's int8: TensorRT takes only
    symmetric quantization, so every QuantizeLinear/DequantizeLinear needs a signed int8
    zero point of 0 (an absent zero point is uint8 0 by the ONNX spec: also refused)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name: i for i in graph.initializer}
    problems, count = [], 0
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        count += 1
        zero = initializers.get(node.input[2]) if len(node.input) > 2 else None
        if zero is None:
            problems.append(f"{node.name}: no int8 zero point")
            continue
        if zero.data_type != onnx.TensorProto.INT8 or numpy_helper.to_array(zero).any():
            problems.append(f"{node.name}: zero point is not int8 0")
    if not count:
        problems.append("no QuantizeLinear/DequantizeLinear node: not an int8 QDQ graph")
    return problems[:5] + ([f"... {len(problems) - 5} more"] if len(problems) > 5 else [])


def _run(
    session: Any, pixel_values: np.ndarray, sizes: np.ndarray, extra: Sequence[str] = ()
) -> tuple[list[Detections], list[np.ndarray]]:
    """The graph's detections per image, and the ``extra`` outputs asked for."""
    labels, boxes, scores, *rest = session.run(
        ["labels", "boxes", "scores", *extra], {"images": pixel_values, "orig_target_sizes": sizes}
    )
    return [Detections(labels[i], boxes[i], scores[i]) for i in range(len(labels))], rest


def _run_each(
    session: Any, reference: Reference, extra: Sequence[str]
) -> tuple[list[Detections], list[float], list[tuple[np.ndarray, np.ndarray] | None]]:
    """Detections, times and (where ``extra`` names the TopK outputs) the query selection
    (values, indices) of each image at batch 1."""
    outputs, times, picked = [], [], []
    k = len(reference.selection[0]) if reference.selection else 0
    for pv, size in zip(reference.pixel_values, reference.sizes, strict=True):
        start = time.perf_counter()
        detections, rest = _run(session, pv, size, extra)
        times.append(time.perf_counter() - start)
        outputs.extend(detections)
        found = pick_selection(rest, k) if extra else None
        picked.append((found[0][0], found[1][0]) if found else None)
    return outputs, times, picked


def _open(path: Path, runtime: str, threads: int | None) -> Any:
    if runtime == "openvino":
        from export.openvino_session import OpenVinoSession

        return OpenVinoSession(path, threads or min(4, os.cpu_count() or 1))
    return make_session(path, threads)


def _ort_errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's exception classes (they derive from Exception, not RuntimeError)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = (
        "Fail",
        "InvalidArgument",
        "InvalidGraph",
        "NotImplemented",
        "RuntimeException",
        "EPFail",
        "NoSuchFile",
        "InvalidProtobuf",
        "ModelLoaded",
        "NoModel",
        "EngineError",
    )
    return tuple(getattr(state, n) for n in names if hasattr(state, n))


def _boxes(outputs: Sequence[Detections]) -> list[Boxes]:
    return [Boxes(d.boxes, d.labels, d.scores) for d in outputs]


def _map(
    reference: Sequence[Detections],
    candidate: Sequence[Detections],
    images: VerificationImages,
    tol: Tolerance,
) -> tuple[MapComparison, list[str]]:
    if images.targets is None:
        return MapComparison(False, reason="; ".join(images.notes) or "no ground truth"), []
    ref = mean_average_precision(_boxes(reference), images.targets, images.class_names)
    cand = mean_average_precision(_boxes(candidate), images.targets, images.class_names)
    drop = round(ref["map"] - cand["map"], 6)
    result = MapComparison(
        measured=True,
        images=len(images.targets),
        pytorch=ref,
        onnx=cand,
        map_drop=drop,
        map50_drop=round(ref["map_50"] - cand["map_50"], 6),
    )
    failures = []
    if drop > tol.max_map_drop:
        failures.append(f"mAP50:95 drops by {drop:.4f} (> {tol.max_map_drop})")
    return result, failures


def verify_onnx(
    path: Path,
    reference: Reference,
    images: VerificationImages,
    *,
    expected: ModelMetadata,
    tolerance: Tolerance,
    name: str,
    threads: int | None = None,
    runtime: str = "onnxruntime",
) -> VerificationReport:
    """Run every check on the graph at ``path`` and return the report (``passed`` inside).

    ``runtime="openvino"`` runs the same checks in OpenVINO's CPU plugin
    (:class:`export.openvino_session.OpenVinoSession`) instead of ONNX Runtime.

    Args:
        path: The graph to verify (still under its temporary name).
        reference: PyTorch outputs on ``images``.
        images: The verification images (with ground truth when mAP can be compared).
        expected: The metadata the file must carry.
        tolerance: Margins for this precision.
        name: The final file name, for the report.
        threads: ONNX Runtime intra-op threads.
    """
    report = VerificationReport(
        model=name,
        precision=expected.precision,
        opset=expected.opset,
        source_checkpoint=expected.source_checkpoint,
        versions=_versions(),
        images=images.source,
        notes=list(images.notes),
        tolerance=tolerance,
    )
    failures = check_graph(path)
    report.graph_problems = list(failures)
    try:
        from export.onnx_export import read_metadata

        if read_metadata(path) != expected:
            failures.append("metadata read back differs from the metadata written")
    except MetadataError as exc:
        failures.append(f"metadata: {exc}")
    if failures:  # no point running a graph that breaks the contract
        report.fail(*failures)
        return report

    # the query selection is read from a temporary copy with its TopK outputs added
    # (export.selection; the file itself is not changed)
    selecting = tolerance.selection_ulps is not None and reference.rerun is not None
    k = len(reference.selection[0]) if reference.selection else 0
    copy = path
    try:
        with tempfile.TemporaryDirectory(prefix="verify-selection-") as folder:
            copy = Path(folder) / path.name if selecting else path
            extra = with_topk_outputs(path, copy) if selecting else []
            session = _open(copy, runtime, threads)
            outputs, times, picked = _run_each(session, reference, extra)
            # Dynamic batch: the first two images (or one twice) as one batch of 2.
            pick = [0, 1] if len(outputs) > 1 else [0, 0]
            batch, rest = _run(
                session,
                np.concatenate([reference.pixel_values[i] for i in pick]),
                np.concatenate([reference.sizes[i] for i in pick]),
                extra,
            )
    # OpenVINO raises RuntimeError running a graph, ModelLoadError (runtime.engines) loading it
    except (*_ort_errors(), RuntimeError, ModelLoadError) as exc:
        # the error names the file verified, not its temporary copy
        report.fail(f"{runtime}: {first_line(exc, with_type=True)}".replace(str(copy), str(path)))
        return report
    expected_outputs, beyond = reference.outputs, reference.beyond or None
    batch_expected = [outputs[i] for i in pick]
    if selecting:
        allowed = float(tolerance.selection_ulps or 0)
        expected_outputs, beyond, report.query_selection, problems = realign(
            reference, picked, allowed
        )
        beyond = beyond or None
        failures += problems
        batch_expected, problems = realign_batch(
            reference, pick, pick_selection(rest, k), picked, batch_expected, allowed
        )
        failures += problems
    report.provider = session.get_providers()[0]
    report.latency_ms_median = Latency(
        pytorch=reference.latency_ms,
        onnx=median_ms(times),
        what="model only (no decode/resize), batch 1, CPU, "
        "after one warm-up; a sanity figure, not a benchmark",
    )
    report.max_abs_diff = max_abs_diff(expected_outputs, outputs)
    report.query_selection_ties = reference.selection_ties
    report.score_threshold, report.top_n = SCORE_THRESHOLD, TOP_N
    report.detections_above_threshold = agreement(
        expected_outputs, outputs, tolerance, threshold=SCORE_THRESHOLD, beyond=beyond
    )
    report.detections_top_n = agreement(
        expected_outputs, outputs, tolerance, top=TOP_N, beyond=beyond
    )
    for label, result in (
        (f"score >= {SCORE_THRESHOLD}", report.detections_above_threshold),
        (f"top {TOP_N}", report.detections_top_n),
    ):
        if result.agreement < tolerance.min_agreement:
            failures.append(
                f"detections ({label}): agreement {result.agreement:.4f} "
                f"< {tolerance.min_agreement}"
            )

    report.dynamic_batch_size = len(pick)
    report.dynamic_batch = agreement(batch_expected, batch, tolerance, top=TOP_N)
    if report.dynamic_batch.agreement < tolerance.min_agreement:
        failures.append(
            f"batch of 2 disagrees with batch 1 (agreement {report.dynamic_batch.agreement})"
        )

    report.map, map_failures = _map(expected_outputs, outputs, images, tolerance)
    failures += map_failures
    report.failures, report.passed = failures, not failures
    return report
