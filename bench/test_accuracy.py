"""mAP of every row on the test split, through the project's one mAP function, gated.

Model parity (the gate, :mod:`bench.gates`): every backend gets the SAME preprocessed
tensors (``runtime``'s preprocessing, which PyTorch evaluation uses too) and the same RT-DETR
post-processing (``DeployModel`` in PyTorch; the same module, traced, inside the ONNX graph);
its mAP50:95 must stay within ``MAP_TOLERANCE`` of PyTorch eager's and its detections must
agree with PyTorch's (``CONSISTENCY_MIN``). A row that fails is marked FAILED in the report,
not ranked, and fails the suite. End-to-end accuracy (each backend's own preprocessing from
the decoded images) is reported beside it. The ``benchmark`` fixture times the evaluation,
so these tests also run under ``--benchmark-only``.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.backends import Backend, require
from bench.gates import Reference, check_row, outputs_to_boxes
from bench.report import Accuracy, Results
from bench.settings import MAP_TOLERANCE, TRAINED_MAP, BenchOptions
from finetune.metrics import mean_average_precision

BACKENDS = ("pytorch", "pytorch-compile", "onnx-fp32", "onnx-int8", "onnx-fp16",
            "openvino-fp32", "openvino-int8")  # fmt: skip


def _evaluate(backend: Backend, testset: Any, feeds: list[dict]) -> tuple[dict, list, dict]:
    """Parity metrics and predictions (shared tensors), and end-to-end metrics."""
    predictions = outputs_to_boxes([backend.model_only(feed) for feed in feeds])
    parity = mean_average_precision(predictions, testset.targets, testset.classes)
    e2e = mean_average_precision(backend.predict(testset.images), testset.targets, testset.classes)
    return parity, predictions, e2e


def _store_reference(
    results: Results, testset: Any, parity: dict, predictions: list, e2e: dict
) -> None:
    results.predictions["pytorch"] = Reference(parity, predictions)
    results.accuracy["pytorch"] = Accuracy(
        "pytorch", parity, len(testset.images), consistency=1.0, e2e_metrics=e2e
    )


def reference_of(results: Results) -> Reference:
    return results.predictions["pytorch"]


def _reference(backends: Any, testset: Any, feeds: list[dict], results: Results) -> Reference:
    """PyTorch eager's numbers, computed once per session (by ``test_map[pytorch]``, timed,
    or here, untimed, when a ``-k`` selection left that test out)."""
    if "pytorch" not in results.predictions:
        parity, predictions, e2e = _evaluate(require(backends, "pytorch"), testset, feeds)
        _store_reference(results, testset, parity, predictions, e2e)
    return reference_of(results)


def _require_trained_fast_reference(reference: Reference, options: BenchOptions) -> None:
    """--fast exists to prove every gate works: with an untrained reference (mAP50:95 below
    ``TRAINED_MAP``) the fp16/int8 consistency gates are off and every mAP is ~0, so the
    int8 row could not fail. Its reference must be trained (see ``settings.FAST_TRAIN_ARGS``)."""
    if options.fast and not reference.trained:
        pytest.fail(
            f"--fast: PyTorch mAP50:95 {reference.metrics['map']:.4f} < TRAINED_MAP "
            f"{TRAINED_MAP}: the variants' consistency gates would be off",
            pytrace=False,
        )


@pytest.mark.parametrize("name", BACKENDS)
def test_map(
    benchmark: Any,
    name: str,
    backends: Any,
    testset: Any,
    parity_feeds: Any,
    results: Results,
    bench_options: BenchOptions,
) -> None:
    backend = require(backends, name)
    benchmark.group = "accuracy: predict the test split twice (shared tensors, own pipeline) + mAP"
    benchmark.extra_info.update(
        {"backend": backend.runtime, "precision": backend.precision, "images": len(testset.images)}
    )
    if name == "pytorch":
        # This entry times the reference's own evaluation (a no-op here was reported as a
        # 0.00 ms timing); the other rows compare against what it computed.
        parity, predictions, e2e = benchmark.pedantic(
            _evaluate, args=(backend, testset, parity_feeds), rounds=1
        )
        _store_reference(results, testset, parity, predictions, e2e)
        _require_trained_fast_reference(reference_of(results), bench_options)
        return
    reference = _reference(backends, testset, parity_feeds, results)
    _require_trained_fast_reference(reference, bench_options)
    parity, predictions, e2e = benchmark.pedantic(
        _evaluate, args=(backend, testset, parity_feeds), rounds=1
    )
    results.record_compile(backend)
    consistency, diff, failures = check_row(name, backend.precision, parity, predictions, reference)
    torch_e2e = results.accuracy["pytorch"].e2e_metrics or {"map": float("nan")}
    results.accuracy[name] = Accuracy(
        name, parity, len(testset.images), consistency, diff, MAP_TOLERANCE[backend.precision],
        e2e_metrics=e2e, e2e_diff=round(e2e["map"] - torch_e2e["map"], 6), failures=failures,
    )  # fmt: skip
    benchmark.extra_info.update(
        {"map": parity["map"], "map_diff": diff, "consistency": consistency}
    )
    vacuous = (
        f"PyTorch mAP50:95 is {reference.metrics['map']:.4f} (an untrained model): the mAP "
        "comparison is vacuous here; the fp32 consistency check carries the parity"
    )
    if not reference.trained and vacuous not in results.notes:
        results.notes.append(vacuous)
    if failures:
        row = results.backends[name]
        row.status, row.reason = "FAILED", "accuracy gate: " + "; ".join(failures)
    assert not failures, "\n".join(failures)
