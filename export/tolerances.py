"""The margins verification holds each precision to, and why (measured).

One :class:`export.parity.Tolerance` per precision (``fp32``, ``fp16``, ``int8``: the
``int8-sym`` file is an ``int8`` graph), the score threshold and the top-N of the detection
comparison, and, per precision, the allowance of the query-selection check
(``selection_ulps``, :mod:`export.selection`) with the measurement it comes from
(:data:`ALLOWANCES`, copied into the report's ``query_selection.allowance``).
"""

from __future__ import annotations

from export.parity import Tolerance

__all__ = ["ALLOWANCES", "SCORE_THRESHOLD", "TOLERANCES", "TOP_N"]

SCORE_THRESHOLD = 0.3
TOP_N = 10

# Margins set from measurements on the small model (192 px, 100 test images): fp32 matched
# detections differ by <= 1e-6 in score and 1e-4 px; fp16 by 0.005 and 0.4 px (IoU >= 0.986,
# mAP -0.0015); int8 by 0.099 and 4.3 px (IoU >= 0.90, mAP +-0.006). Agreement was 1.0 for all.
#
# selection_ulps, the query-selection allowance, is sound by construction: a graph whose every
# selection score is within E of PyTorch's selects, with its own exact TopK, a set whose worst
# member is at most 2E below the best query it left out (for i chosen, j not: g_i >= g_j, so
# s_j - s_i <= 2E). So the allowance on that gap is 2 x a measured bound E of the precision's
# selection-score error (|graph score - PyTorch score| over all queries, read from the TopK's
# input on the intact files), in float32 ulps of the largest selection score (unit of
# export.selection.ulp_of; 2**20 ulps are 6-12 % of that score).
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
        score_atol=1e-2,
        box_px=2.0,
        min_iou=0.95,
        min_agreement=0.95,
        max_map_drop=0.005,
        selection_ulps=2**16,
    ),
    "int8": Tolerance(
        score_atol=0.15,
        box_px=8.0,
        min_iou=0.8,
        min_agreement=0.9,
        max_map_drop=0.01,
        selection_ulps=2**20,
    ),
}

ALLOWANCES: dict[str, str] = {
    "fp32": "fp32: 512 ulps = 2 x 256, the largest selection-score error measured "
    "(247 ulps, calibrated tiny D-FINE; DEIMv2 200, RF-DETR 11.5, RT-DETRv2 7, untrained 0-1; "
    "ONNX Runtime 1.32 and OpenVINO 2026.4)",
    "fp16": "fp16: ...",
    "int8": "int8: ...",
}
