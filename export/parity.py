"""Compare two sets of detections (PyTorch vs ONNX) per query and per detection.

Per-query differences (``max_abs_diff``) are reported but not judged: where two queries have
nearly the same score, top-k may order them differently in the two backends and the arrays
then differ at that position although the detections are the same. Judgement is made on
detections: each PyTorch detection must find an ONNX detection with the same label, a box
within a tolerance and a close score, and the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Detections", "Tolerance", "agreement", "max_abs_diff"]


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
    """

    score_atol: float
    box_px: float
    min_iou: float
    min_agreement: float
    max_map_drop: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Detections:
    """Top-k outputs of one image: labels [K], boxes [K, 4] xyxy pixels, scores [K] (sorted)."""

    labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


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
) -> tuple[int, list[float], list[float], list[float]]:
    """Greedy one-to-one matching of ``ref[keep]`` (by score) into ``cand[pool]``.

    Returns (matched count, score diffs, box diffs in px, IoUs) of the matched pairs.
    """
    ri, ci = np.flatnonzero(keep), np.flatnonzero(pool)
    if len(ri) == 0 or len(ci) == 0:
        return 0, [], [], []
    rb, cb = ref.boxes[ri].astype(np.float64), cand.boxes[ci].astype(np.float64)
    iou = _iou(rb, cb)
    diff = np.abs(rb[:, None, :] - cb[None, :, :]).max(-1)
    same = ref.labels[ri][:, None] == cand.labels[ci][None, :]
    close = np.abs(ref.scores[ri][:, None] - cand.scores[ci][None, :]) <= max(tol.score_atol, 0)
    ok = same & close & ((iou >= tol.min_iou) | (diff <= tol.box_px))
    used = np.zeros(len(ci), bool)
    scores, boxes, ious = [], [], []
    for r in np.argsort(-ref.scores[ri], kind="stable"):
        candidates = np.flatnonzero(ok[r] & ~used)
        if len(candidates):
            c = candidates[np.argmax(iou[r, candidates])]
            used[c] = True
            scores.append(float(abs(ref.scores[ri[r]] - cand.scores[ci[c]])))
            boxes.append(float(diff[r, c]))
            ious.append(float(iou[r, c]))
    return len(scores), scores, boxes, ious


def agreement(
    reference: Sequence[Detections],
    candidate: Sequence[Detections],
    tol: Tolerance,
    *,
    threshold: float | None = None,
    top: int | None = None,
) -> dict[str, float | int]:
    """How many detections above ``threshold`` (or the ``top`` per image) agree, both ways.

    Returns ``agreement`` (the smaller of ``recall`` = share of reference detections found
    in the candidate and ``precision`` = the other way), the counts, and the worst score
    difference, box difference (px) and IoU among matched pairs.
    """
    found = [0, 0]
    total = [0, 0]
    scores: list[float] = []
    boxes: list[float] = []
    ious: list[float] = []
    for ref, cand in zip(reference, candidate, strict=True):
        for side, (a, b) in enumerate(((ref, cand), (cand, ref))):
            if threshold is not None:
                keep = a.scores >= threshold
                cut = threshold
            else:
                n = min(top or len(a.scores), len(a.scores))
                keep = np.arange(len(a.scores)) < n
                cut = float(a.scores[n - 1]) if n else np.inf
            pool = b.scores >= cut - tol.score_atol
            matched, s, bx, io = _match(a, keep, b, pool, tol)
            found[side] += matched
            total[side] += int(keep.sum())
            if side == 0:
                scores, boxes, ious = scores + s, boxes + bx, ious + io
    recall = found[0] / total[0] if total[0] else 1.0
    precision = found[1] / total[1] if total[1] else 1.0
    return {
        "reference_detections": total[0],
        "candidate_detections": total[1],
        "recall": round(recall, 6),
        "precision": round(precision, 6),
        "agreement": round(min(recall, precision), 6),
        "max_score_diff": round(max(scores, default=0.0), 6),
        "max_box_diff_px": round(max(boxes, default=0.0), 6),
        "min_iou": round(min(ious, default=1.0), 6),
    }


def max_abs_diff(reference: Sequence[Detections], candidate: Sequence[Detections]) -> dict:
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
    return {
        "scores": round(scores, 8),
        "boxes_px": round(boxes, 6),
        "sorted_scores": round(sorted_scores, 8),
        "labels_equal_fraction": round(labels, 6),
    }
