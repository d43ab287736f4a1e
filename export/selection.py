"""The graph's query selection, read out and checked against PyTorch's (near-ties).

A barely trained model's query-selection scores can be near-ties: float32 values one ulp
apart, whose order is then decided by rounding. Measured on ``scratch:rt_detr`` after 2
fine-tuning steps: its top-100 selection scores took two values 1 ulp apart in PyTorch
(-0.70531487 and -0.70531493) and one value in ONNX Runtime, which then selected 20-22 other
queries per image, and the export failed the fp32 gate (agreement 0.78) although it was right.

So verification reads the graph's own selection: a temporary copy of the graph (never the
published file) gets the outputs of its ``TopK`` nodes as extra graph outputs; the first one
whose indices are [batch, k] with the model's k queries is the query selection (it precedes
the decoder's and the post-processing's ``TopK`` in any topological order, as the selection
call precedes them in PyTorch: :class:`export.reference._Selection`). The graph's selection
must be a top-k of PyTorch's selection scores within ``Tolerance.selection_ulps`` float32 ulps
of the largest selection score (:func:`selection_gap`); the PyTorch reference is then
recomputed with the graph's selection (``Reference.rerun``), so everything after it is
compared query for query. A selection that is no near-top-k of PyTorch's scores is a wrong
graph and fails. Every precision is read: an fp16 or int8 graph's selection scores differ
from PyTorch's by far more than rounding, and its allowance is 2 x a measured bound of that
error (:mod:`export.tolerances`, where the measurements are). A row of the batch-of-2
check that selected other near-tied queries than the same image at batch 1 is compared with
PyTorch on its own selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.parity import Detections
from export.reference import Reference

__all__ = [
    "TOPK_OUTPUT",
    "SelectionCheck",
    "pick_selection",
    "realign",
    "realign_batch",
    "selection_gap",
    "ulp_of",
    "value_diff_ulps",
    "with_topk_outputs",
]

TOPK_OUTPUT = "selection_check_topk_"  # prefix of the extra outputs of the temporary copy


@dataclass(frozen=True)
class SelectionCheck:
    """The graph's query selection against PyTorch's (:mod:`export.selection`).

    Attributes:
        images: Images whose selection was compared.
        realigned: Images whose graph selection differs from PyTorch's (the reference was
            recomputed with the graph's).
        max_gap_ulps: Worst, over images, of (best score the graph left out - worst score it
            selected), in float32 ulps of the largest selection score (:func:`ulp_of`);
            <= 0 is an exact top-k.
        max_value_diff_ulps: Worst difference, in those ulps, between the graph's selected
            scores and PyTorch's scores of the same queries (information).
        allowed_ulps: The tolerance ``max_gap_ulps`` was held to.
        allowance: Which allowance that is and what it was measured as
            (``export.tolerances.ALLOWANCES`` of the graph's precision).
    """

    images: int
    realigned: int
    max_gap_ulps: float
    max_value_diff_ulps: float
    allowed_ulps: float
    allowance: str = ""


def with_topk_outputs(source: Path, target: Path) -> list[str]:
    """Write a copy of ``source`` to ``target`` whose every ``TopK`` (values, indices) is also a
    graph output; returns the extra outputs' names, values then indices per ``TopK``, in node
    order (none: the graph has no ``TopK``)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(source))
    names: list[str] = []
    for i, node in enumerate(n for n in model.graph.node if n.op_type == "TopK"):
        for j, (kind, dtype) in enumerate((("values", None), ("indices", TensorProto.INT64))):
            name = f"{TOPK_OUTPUT}{i}_{kind}"
            identity = helper.make_node("Identity", [node.output[j]], [name], name=name)
            model.graph.node.append(identity)
            elem = dtype if dtype is not None else _elem_type(model, node.input[0])
            model.graph.output.append(helper.make_tensor_value_info(name, elem, None))
            names.append(name)
    large = model.ByteSize() > 2**31 - 1 - 2**20  # protobuf's 2 GB limit
    onnx.save_model(model, str(target), save_as_external_data=large)
    return names


def _elem_type(model: Any, name: str) -> int:
    """The element type of tensor ``name`` (float32 unless the graph says otherwise)."""
    from onnx import TensorProto

    for value in (*model.graph.value_info, *model.graph.input, *model.graph.output):
        if value.name == name:
            return int(value.type.tensor_type.elem_type)
    return TensorProto.FLOAT


def pick_selection(outputs: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, indices) of the first extra ``TopK`` output pair whose indices are [batch, k]:
    the query selection (module doc); None when the graph has none."""
    for values, indices in zip(outputs[::2], outputs[1::2], strict=True):
        if indices.ndim == 2 and indices.shape[1] == k:
            return values, indices
    return None


def ulp_of(scores: np.ndarray) -> float:
    """The unit the selection is judged in: one float32 ulp of the largest selection score
    in magnitude. Rounding errors of the logits scale with the magnitudes they are computed
    from, not with a k-th score that may sit near 0 (whose own ulp would be far finer than
    the backends' noise)."""
    return float(np.spacing(np.float32(np.abs(scores).max(initial=1e-30))))


def selection_gap(scores: np.ndarray, indices: np.ndarray) -> float:
    """How far ``indices`` is from a top-k of ``scores``, in :func:`ulp_of` units: the best
    score left out minus the worst selected (<= 0: an exact top-k). Indices that are out of
    range or repeated are no selection at all: ``inf``."""
    k, n = len(indices), len(scores)
    if indices.min(initial=0) < 0 or indices.max(initial=0) >= n or len(set(indices)) != k:
        return float("inf")
    chosen = np.zeros(n, bool)
    chosen[indices] = True
    if chosen.all():
        return 0.0
    gap = float(scores[~chosen].max()) - float(scores[chosen].min())
    return gap / ulp_of(scores)


def value_diff_ulps(scores: np.ndarray, indices: np.ndarray, values: np.ndarray) -> float:
    """Largest difference between the graph's selected ``values`` and PyTorch's ``scores``
    of the same queries, in :func:`ulp_of` units (information: the backends' noise)."""
    if indices.max(initial=0) >= len(scores) or indices.min(initial=0) < 0:
        return float("inf")
    diff = np.abs(values.astype(np.float64) - scores[indices].astype(np.float64))
    return float(diff.max(initial=0.0)) / ulp_of(scores)


def realign(
    reference: Reference,
    picked: Sequence[tuple[np.ndarray, np.ndarray] | None],
    allowed: float,
    images: Sequence[int] | None = None,
    allowance: str = "",
) -> tuple[list[Detections], list[Detections], SelectionCheck, list[str]]:
    """The reference's outputs and ``beyond`` recomputed with the graph's query selection
    ``picked`` (values, indices [k]) of each of ``images`` (default: all, in order), the
    check and its failures: an image whose graph selection is no top-k of PyTorch's scores
    within ``allowed`` ulps fails (then its reference is left as it was); ``allowance`` says
    which allowance ``allowed`` is, for the report."""
    images = list(range(len(picked))) if images is None else list(images)
    outputs = [reference.outputs[i] for i in images]
    beyond = [reference.beyond[i] for i in images] if reference.beyond else []
    failures: list[str] = []
    gaps, diffs, realigned = [], [], 0
    for at, (image, found) in enumerate(zip(images, picked, strict=True)):
        if found is None:
            failures.append(f"query selection: image {image}: the graph has no TopK of k queries")
            continue
        values, indices = found
        scores = reference.selection_scores[image]
        gap = selection_gap(scores, indices)
        gaps.append(gap)
        diffs.append(value_diff_ulps(scores, indices, values))
        if gap > allowed:
            failures.append(
                f"query selection: image {image}: the graph's top-{len(indices)} is no top-k of "
                f"PyTorch's selection scores (gap {gap:.4g} ulps > {allowed:g})"
            )
        elif not np.array_equal(indices, reference.selection[image]) and reference.rerun:
            outputs[at], after = reference.rerun(image, indices)
            if beyond:
                beyond[at] = after
            realigned += 1
    check = SelectionCheck(
        images=len(picked),
        realigned=realigned,
        max_gap_ulps=round(max(gaps, default=0.0), 3),
        max_value_diff_ulps=round(max(diffs, default=0.0), 3),
        allowed_ulps=allowed,
        allowance=allowance,
    )
    return outputs, beyond, check, failures


def realign_batch(
    reference: Reference,
    images: Sequence[int],
    found: tuple[np.ndarray, np.ndarray] | None,
    alone: Sequence[tuple[np.ndarray, np.ndarray] | None],
    expected: Sequence[Detections],
    allowed: float,
) -> tuple[list[Detections], list[str]]:
    """What each row of the batch run of ``images`` is compared with, and the failures: the
    same image's graph output at batch 1 (``expected``) where the batch's query selection
    (``found``: values, indices [rows, k]) equals that run's (``alone``, per image), else
    PyTorch recomputed with the batch row's selection (near-ties resolved otherwise in
    another batch shape; checked like the batch-1 selection)."""
    rows = [(found[0][r], found[1][r]) if found else None for r in range(len(images))]
    realigned, _, _, problems = realign(reference, rows, allowed, images=images)
    result = list(expected)
    for row, (image, selected) in enumerate(zip(images, rows, strict=True)):
        single = alone[image]
        if selected is None or single is None or not np.array_equal(selected[1], single[1]):
            result[row] = realigned[row]
    return result, [f"batch of {len(images)}: {problem}" for problem in problems]
