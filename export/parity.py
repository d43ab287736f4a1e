"""Compare two sets of detections (PyTorch vs ONNX) per query and per detection.

Per-query differences (``max_abs_diff``) are reported but not judged: where two queries have
nearly the same score, top-k may order them differently in the two backends and the arrays
then differ at that position although the detections are the same. Judgement is made on
detections, as sets: each PyTorch detection must find an ONNX detection with the same label,
a box within a tolerance and a close score, and the other way round.

Ties. Exact ties are broken the same way on both sides (the PyTorch reference breaks them as
ONNX ``TopK``, the lower index first: :mod:`export.reference`, where the measurements are).
What remains is the top-K boundary, where two scores within rounding of each other may rank
K and K+1 in one backend and the other way round in the other. The graph outputs only its K
best detections, so:

* a reference detection that finds no match and scores within ``score_atol`` of the
  candidate's K-th (lowest output) score may rank after K there and be cut: it belongs to
  the tie group at the boundary and is excluded from the count (``boundary_excluded``);
  above that group every reference detection must be found (the candidate output everything
  scoring more than its K-th);
* every candidate detection must be found, among the reference's K outputs or among the
  detections the reference ranked after K (``Reference.beyond``): a swap at the boundary
  matches there, a genuinely different detection matches nowhere and fails.

The top-N and threshold cuts need no exclusion: the other side is searched among all its
detections down to the cut minus ``score_atol``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "Agreement",
    "Detections",
    "QueryDifferences",
    "Tolerance",
    "agreement",
    "max_abs_diff",
]


@dataclass(frozen=True)
class Tolerance:
    """When two detections are "the same", and how many must be.

    Attributes:
        score_atol: Largest score difference of a matched pair; also the margin around a
            score threshold (a detection at 0.3001 may appear at 0.2999 in the other backend).
        box_px: Boxes match when every coordinate is within this many pixels...
        min_iou: ...or when their IoU is at least this.
        min_agreement: Fraction of detections (both directions) that must find a match.
        max_map_drop: Largest allowed mAP50:95 drop (absolute) against PyTorch.
        selection_ulps: The graph's query selection must be a top-k of PyTorch's selection
            scores within this many float32 ulps of the largest one, and the reference is
            recomputed with it (:mod:`export.selection`): 2 x a measured bound of the
            precision's selection-score error (:mod:`export.tolerances`); None: not read
            (judged on detections alone).
    """

    score_atol: float
    box_px: float
    min_iou: float
    min_agreement: float
    max_map_drop: float
    selection_ulps: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True)
class Detections:
    """Top-k outputs of one image: labels [K], boxes [K, 4] xyxy pixels, scores [K] (sorted)."""

    labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class Agreement:
    """How two sets of detections agree (:func:`agreement`).

    Attributes:
        reference_detections: Reference detections compared (tie group excluded).
        candidate_detections: Candidate detections compared (tie group excluded).
        boundary_excluded: Unmatched detections left out, both ways, as the tie group at the
            other side's top-K boundary (module doc).
        recall: Share of the reference's found in the candidate.
        precision: Share of the candidate's found in the reference.
        agreement: The smaller of the two: what the gate compares with ``min_agreement``.
        max_score_diff: Worst score difference of a matched pair.
        max_box_diff_px: Worst box coordinate difference of a matched pair, pixels.
        min_iou: Worst IoU of a matched pair.
    """

    reference_detections: int
    candidate_detections: int
    boundary_excluded: int
    recall: float
    precision: float
    agreement: float
    max_score_diff: float
    max_box_diff_px: float
    min_iou: float


@dataclass(frozen=True)
class QueryDifferences:
    """Per-query differences of the output arrays (:func:`max_abs_diff`; information)."""

    scores: float
    boxes_px: float
    sorted_scores: float
    labels_equal_fraction: float


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes a [A, 4] and b [B, 4]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _match(
    ref: Detections, keep: np.ndarray, cand: Detections, pool: np.ndarray, tol: Tolerance
) -> tuple[np.ndarray, list[float], list[float], list[float]]:
    """Greedy one-to-one matching of ``ref[keep]`` (by score) into ``cand[pool]``.

    Returns (indices into ``ref`` of the unmatched kept detections, then the score diffs, box
    diffs in px and IoUs of the matched pairs).
    """
    ri, ci = np.flatnonzero(keep), np.flatnonzero(pool)
    if len(ri) == 0 or len(ci) == 0:
        return ri, [], [], []
    rb, cb = ref.boxes[ri].astype(np.float64), cand.boxes[ci].astype(np.float64)
    iou = _iou(rb, cb)
    diff = np.abs(rb[:, None, :] - cb[None, :, :]).max(-1)
    same = ref.labels[ri][:, None] == cand.labels[ci][None, :]
    close = np.abs(ref.scores[ri][:, None] - cand.scores[ci][None, :]) <= max(tol.score_atol, 0)
    ok = same & close & ((iou >= tol.min_iou) | (diff <= tol.box_px))
    used = np.zeros(len(ci), bool)
    found = np.zeros(len(ri), bool)
    scores, boxes, ious = [], [], []
    for r in np.argsort(-ref.scores[ri], kind="stable"):
        candidates = np.flatnonzero(ok[r] & ~used)
        if len(candidates):
            c = candidates[np.argmax(iou[r, candidates])]
            used[c] = found[r] = True
            scores.append(float(abs(ref.scores[ri[r]] - cand.scores[ci[c]])))
            boxes.append(float(diff[r, c]))
            ious.append(float(iou[r, c]))
    return ri[~found], scores, boxes, ious


def _cut(a: Detections, threshold: float | None, top: int | None) -> tuple[np.ndarray, float]:
    """Which of ``a`` are compared (``keep``), and the score they were cut at."""
    if threshold is not None:
        return a.scores >= threshold, threshold
    n = min(top or len(a.scores), len(a.scores))
    return np.arange(len(a.scores)) < n, float(a.scores[n - 1]) if n else np.inf


def _joined(a: Detections, b: Detections | None) -> Detections:
    if b is None or not len(b.scores):
        return a
    return Detections(*(np.concatenate(pair) for pair in zip(
        (a.labels, a.boxes, a.scores), (b.labels, b.boxes, b.scores), strict=True)))  # fmt: skip


def agreement(
    reference: Sequence[Detections],
    candidate: Sequence[Detections],
    tol: Tolerance,
    *,
    threshold: float | None = None,
    top: int | None = None,
    beyond: Sequence[Detections] | None = None,
) -> Agreement:
    """How many detections above ``threshold`` (or the ``top`` per image) agree, both ways.

    ``beyond``: per image, the reference's detections ranked after its K outputs; a
    candidate's detection may match one of them (a tie at the top-K boundary, module doc).

    Returns ``agreement`` (the smaller of ``recall`` = share of reference detections found
    in the candidate and ``precision`` = the other way), the counts, how many unmatched
    reference detections were left out as the tie group at the candidate's top-K boundary,
    and the worst score difference, box difference (px) and IoU among matched pairs.
    """
    found = [0, 0]
    total = [0, 0]
    excluded = 0
    scores: list[float] = []
    boxes: list[float] = []
    ious: list[float] = []
    extra = list(beyond) if beyond is not None else [None] * len(reference)
    for ref, cand, after in zip(reference, candidate, extra, strict=True):
        # reference -> candidate: an unmatched detection within the margin of the
        # candidate's lowest output may rank after K there (cut, not wrong): excluded
        keep, cut = _cut(ref, threshold, top)
        missed, s, bx, io = _match(ref, keep, cand, cand.scores >= cut - tol.score_atol, tol)
        boundary = float(cand.scores.min()) + tol.score_atol if len(cand.scores) else np.inf
        tied = int((ref.scores[missed] <= boundary).sum())
        excluded += tied
        found[0] += int(keep.sum()) - len(missed)
        total[0] += int(keep.sum()) - tied
        scores, boxes, ious = scores + s, boxes + bx, ious + io
        # candidate -> reference (and what the reference ranked after K): all must match
        keep, cut = _cut(cand, threshold, top)
        pool = _joined(ref, after)
        missed, *_ = _match(cand, keep, pool, pool.scores >= cut - tol.score_atol, tol)
        found[1] += int(keep.sum()) - len(missed)
        total[1] += int(keep.sum())
    recall = found[0] / total[0] if total[0] else 1.0
    precision = found[1] / total[1] if total[1] else 1.0
    return Agreement(
        reference_detections=total[0],
        candidate_detections=total[1],
        boundary_excluded=excluded,
        recall=round(recall, 6),
        precision=round(precision, 6),
        agreement=round(min(recall, precision), 6),
        max_score_diff=round(max(scores, default=0.0), 6),
        max_box_diff_px=round(max(boxes, default=0.0), 6),
        min_iou=round(min(ious, default=1.0), 6),
    )


def max_abs_diff(
    reference: Sequence[Detections], candidate: Sequence[Detections]
) -> QueryDifferences:
    """Per-query comparison of the raw output arrays (information; see the module doc)."""
    scores = max(
        float(np.abs(r.scores - c.scores).max()) for r, c in zip(reference, candidate, strict=True)
    )
    boxes = max(
        float(np.abs(r.boxes - c.boxes).max()) for r, c in zip(reference, candidate, strict=True)
    )
    labels = np.mean(
        [float((r.labels == c.labels).mean()) for r, c in zip(reference, candidate, strict=True)]
    )
    sorted_scores = max(
        float(np.abs(np.sort(r.scores) - np.sort(c.scores)).max())
        for r, c in zip(reference, candidate, strict=True)
    )
    return QueryDifferences(
        scores=round(scores, 8),
        boxes_px=round(boxes, 6),
        sorted_scores=round(sorted_scores, 8),
        labels_equal_fraction=round(labels, 6),
    )
