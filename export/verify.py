"""Verify an exported graph before it is published under its final name.

Checks, in order: the structure (:mod:`export.graph_checks`: ``onnx.checker`` with
``full_check=True`` and :mod:`export.contract`); the metadata read back as the runtime reads
it; then parity with PyTorch on real images. Both backends get the SAME ``pixel_values`` (the
runtime's preprocessing with the checkpoint's config, ``finetune.pixels``), so any difference
is the graph's. Parity is judged on detections (see :mod:`export.parity`), at a score
threshold and on the top 10 per image, at batch 1 and again at batch 2 (the dynamic batch),
and, where the images have ground truth, on mAP through
:func:`finetune.metrics.mean_average_precision`. The margins are :mod:`export.tolerances`'.

An untrained or barely trained model is verified like a trained one: its exactly tied
query-selection scores are broken in the PyTorch reference as ONNX ``TopK`` breaks them
(:mod:`export.reference`), so no tolerance is widened for it; ``query_selection_ties`` (the
share of images whose encoder top-k boundary is such a tie) is reported as information.
Near-ties (selection scores within the graph's error of each other, which it orders
otherwise): the graph's own query selection is read from a temporary copy of it, must be a
top-k of PyTorch's selection scores within ``Tolerance.selection_ulps`` (the precision's
measured allowance), and the reference is recomputed with it (:mod:`export.selection`);
``query_selection`` reports it.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export.graph_checks import check_graph, symmetric_problems
from export.parity import Detections, Tolerance, agreement, max_abs_diff
from export.reference import Reference, median_ms
from export.report import Latency, MapComparison, VerificationReport
from export.samples import VerificationImages
from export.selection import pick_selection, realign, realign_batch, with_topk_outputs
from export.sessions import make_session, open_session, run_each, run_graph, runtime_errors
from export.tolerances import ALLOWANCES, SCORE_THRESHOLD, TOLERANCES, TOP_N
from finetune.metrics import Boxes, mean_average_precision
from runtime.errors import first_line
from runtime.metadata import MetadataError, ModelMetadata

# check_graph, make_session, symmetric_problems and the tolerances are imported from here by
# the pipeline, the benchmark and the tests: this module is verification's one entry point
__all__ = [
    "SCORE_THRESHOLD",
    "TOLERANCES",
    "TOP_N",
    "check_graph",
    "make_session",
    "symmetric_problems",
    "verify_onnx",
]


def _versions() -> dict[str, str]:
    names = ("rtdetr-deploy", "torch", "transformers", "onnx", "onnxruntime-gpu", "onnxruntime")
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _boxes(outputs: Sequence[Detections]) -> list[Boxes]:
    return [Boxes(d.boxes, d.labels, d.scores) for d in outputs]


def _reference_map(reference: Reference, images: VerificationImages) -> dict[str, Any]:
    """PyTorch's mAP with its OWN query selection, computed once per reference and image set.

    Never the reference re-aligned to the graph's selection: that one is for the detection
    comparison, and an int8 selection's allowance is wide (export/tolerances.py), so an mAP
    measured on it would hide the accuracy a worse selection costs. The mAP gate compares
    the file with the model it came from.
    """
    for targets, result in reference.maps:
        if targets is images.targets:
            return result
    result = mean_average_precision(_boxes(reference.outputs), images.targets, images.class_names)
    reference.maps.append((images.targets, result))
    return result


def _map(
    reference: Reference,
    candidate: Sequence[Detections],
    images: VerificationImages,
    tol: Tolerance,
) -> tuple[MapComparison, list[str]]:
    if images.targets is None:
        return MapComparison(False, reason="; ".join(images.notes) or "no ground truth"), []
    ref = _reference_map(reference, images)
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


def _metadata_problems(path: Path, expected: ModelMetadata) -> list[str]:
    """The metadata read back as the runtime reads it, against what was written."""
    from export.onnx_export import read_metadata

    try:
        if read_metadata(path) != expected:
            return ["metadata read back differs from the metadata written"]
    except MetadataError as exc:
        return [f"metadata: {exc}"]
    return []


def _judge(report: VerificationReport, tolerance: Tolerance) -> list[str]:
    """The agreement gates on the report's detection comparisons."""
    failures = []
    for label, result in (
        (f"score >= {SCORE_THRESHOLD}", report.detections_above_threshold),
        (f"top {TOP_N}", report.detections_top_n),
    ):
        if result is not None and result.agreement < tolerance.min_agreement:
            failures.append(
                f"detections ({label}): agreement {result.agreement:.4f} "
                f"< {tolerance.min_agreement}"
            )
    batch = report.dynamic_batch
    if batch is not None and batch.agreement < tolerance.min_agreement:
        failures.append(f"batch of 2 disagrees with batch 1 (agreement {batch.agreement})")
    return failures


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
    report.graph_problems = check_graph(path)
    failures = [*report.graph_problems, *_metadata_problems(path, expected)]
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
            session = open_session(copy, runtime, threads)
            outputs, times, picked = run_each(session, reference, extra)
            # Dynamic batch: the first two images (or one twice) as one batch of 2.
            pick = [0, 1] if len(outputs) > 1 else [0, 0]
            batch, rest = run_graph(
                session,
                np.concatenate([reference.pixel_values[i] for i in pick]),
                np.concatenate([reference.sizes[i] for i in pick]),
                extra,
            )
    except runtime_errors() as exc:
        # the error names the file verified, not its temporary copy
        report.fail(f"{runtime}: {first_line(exc, with_type=True)}".replace(str(copy), str(path)))
        return report
    expected_outputs, beyond = reference.outputs, reference.beyond or None
    batch_expected = [outputs[i] for i in pick]
    if selecting:
        allowed = float(tolerance.selection_ulps or 0)
        why = ALLOWANCES.get(expected.precision, "")
        expected_outputs, beyond, report.query_selection, problems = realign(
            reference, picked, allowed, allowance=why
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
    report.dynamic_batch_size = len(pick)
    report.dynamic_batch = agreement(batch_expected, batch, tolerance, top=TOP_N)
    failures += _judge(report, tolerance)
    report.map, map_failures = _map(reference, outputs, images, tolerance)
    failures += map_failures
    report.failures, report.passed = failures, not failures
    return report
