"""The PyTorch side of verification: ``DeployModel`` outputs on preprocessed images.

Computed once per export and shared by the fp32 model and every variant. The images are
preprocessed by :func:`finetune.pixels.pixel_values` (the runtime's preprocessing with the
checkpoint's processor config: the tensor ``runtime.Detector`` will feed the exported graph),
and the same ``pixel_values`` are then fed to ONNX Runtime, so a difference between the two
backends is the graph's alone, measured on the input the deployed model really gets.

Ties: the reference is computed with ``torch.topk`` breaking exact ties as ONNX ``TopK`` does
(the lower index first, as its spec says; :func:`lowest_index_topk`). An untrained or barely
trained model of any family has vanishing encoder activations, so its query-selection scores
tie exactly: measured on each family's untrained ``scratch:FAMILY`` model (192 px) and the tiny
test configs (64 px), all 756 (84) encoder scores took ONE value, bit-identical in PyTorch,
ONNX Runtime 1.32 and OpenVINO 2026.4, and ``torch.topk`` (CPU) returned other indices than
``TopK``: 3-59 % of the final labels differed and boxes by up to 613 px. With the reference's
ties broken by the lower index, the same exports agree with PyTorch per query, in both runtimes,
within 2.4e-6 in score and 1.2e-4 px (640x480 originals), labels all equal (RT-DETR,
RT-DETRv2 and its discrete decoder, D-FINE, DEIMv2, RF-DETR). So exact ties need no tolerance;
what is left (two scores within rounding of each other at the top-K boundary) is
:func:`export.parity.agreement`'s.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from export.parity import Detections

__all__ = ["Reference", "lowest_index_topk", "median_ms", "torch_reference"]


@dataclass
class Reference:
    """PyTorch outputs on the verification images, computed once for every variant."""

    pixel_values: list[np.ndarray]  # [1, 3, H, W] float32 per image
    sizes: list[np.ndarray]  # [1, 2] int64 (width, height) per image
    outputs: list[Detections]
    latency_ms: float | None  # median model-only latency, batch 1, after one warm-up
    selection_ties: float = 0.0  # share of images whose encoder top-k boundary is a tie
    # per image, the detections ranked K+1..2K (what the graph cuts): a graph's K-th
    # detection that is the reference's K+1-th is a tie at the boundary, not an error
    beyond: list[Detections] = field(default_factory=list)


def median_ms(times: Sequence[float]) -> float | None:
    """Median in ms of all but the first (warm-up) timing."""
    rest = list(times[1:]) or list(times)
    return round(statistics.median(rest) * 1000, 3) if rest else None


def _boundary_tie(encoder_scores: Any, k: int) -> bool:
    """Whether the k-th and (k+1)-th best encoder scores tie (which queries reach the
    decoder then depends on how ties are broken: here as in ONNX ``TopK``)."""
    best = encoder_scores.max(-1).values.flatten()
    if best.numel() <= k:
        return False
    top = best.topk(k + 1).values
    return bool(top[k - 1] - top[k] <= 1e-6 * max(1.0, abs(float(top[k]))))


def _topk_lowest_index(
    input: Any, k: int, dim: int = -1, largest: bool = True, sorted: bool = True
) -> Any:
    """``torch.topk`` with ONNX ``TopK``'s order of equal values: the lower index first (a
    stable sort keeps equal values in index order)."""
    import torch

    values, indices = torch.sort(input, dim=dim, descending=largest, stable=True)
    return torch.return_types.topk((values.narrow(dim, 0, k), indices.narrow(dim, 0, k)))


def lowest_index_topk() -> Any:
    """A context in which every ``torch.topk`` / ``Tensor.topk`` of this thread (the model's
    query selection and the post-processing's top-K) breaks exact ties by the lower index, as
    ONNX ``TopK``; values are unchanged. A ``TorchFunctionMode``: it patches nothing global,
    so other threads' models are untouched."""
    import torch
    from torch.overrides import TorchFunctionMode

    class _LowestIndexTopK(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None
        ) -> Any:
            kwargs = kwargs or {}
            if func in (torch.topk, torch.Tensor.topk) and "out" not in kwargs:
                return _topk_lowest_index(*args, **kwargs)
            return func(*args, **kwargs)

    return _LowestIndexTopK()


def torch_reference(
    model: Any, processor: Any, images: Sequence[np.ndarray], num_top_queries: int | None = None
) -> Reference:
    """Preprocess ``images`` as the runtime does (:func:`finetune.pixels.pixel_values`, with
    ``processor``'s config) and run ``DeployModel`` on them, exact ties broken as ONNX
    ``TopK`` breaks them (:func:`lowest_index_topk`, see the module doc)."""
    import torch

    from finetune.pixels import pixel_values as preprocess
    from finetune.postprocess import DeployModel

    k = int(getattr(model.config, "num_queries", 300))
    top_k = num_top_queries or k
    # 2K detections: the first K are the graph's outputs (the stable order makes them the
    # same as a top-K's), the next K are what the graph cuts
    deploy = DeployModel(model, 2 * top_k).eval()
    encoder: list[Any] = []
    head = getattr(getattr(model, "model", None), "enc_score_head", None)
    hook = head.register_forward_hook(lambda m, i, o: encoder.append(o)) if head else None
    pixel_values, sizes, outputs, beyond, times, ties = [], [], [], [], [], []
    try:
        with torch.inference_mode(), lowest_index_topk():
            for image in images:
                pv = preprocess(processor, [image])
                size = torch.tensor([[image.shape[1], image.shape[0]]], dtype=torch.int64)
                start = time.perf_counter()
                labels, boxes, scores = deploy(pv, size)
                times.append(time.perf_counter() - start)
                pixel_values.append(pv.numpy())
                sizes.append(size.numpy())
                labels, boxes, scores = labels[0].numpy(), boxes[0].numpy(), scores[0].numpy()
                outputs.append(Detections(labels[:top_k], boxes[:top_k], scores[:top_k]))
                beyond.append(Detections(labels[top_k:], boxes[top_k:], scores[top_k:]))
                ties.extend(_boundary_tie(e, k) for e in encoder[-1:])
    finally:
        if hook is not None:
            hook.remove()
    tie_share = round(float(np.mean(ties)), 6) if ties else 0.0
    return Reference(pixel_values, sizes, outputs, median_ms(times), tie_share, beyond)
