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

Near-ties: scores one float32 ulp apart that a backend rounds to one value (or ties that
OpenVINO 2026.4 breaks otherwise, e.g. at another batch shape) still select other queries.
The reference therefore keeps each image's query-selection scores and indices, and
``Reference.rerun`` recomputes an image with a given selection (the graph's, read and checked
by :mod:`export.selection`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
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
    # per image, the query selection: PyTorch's indices [k] and the scores it chose from [N]
    selection: list[np.ndarray] = field(default_factory=list)
    selection_scores: list[np.ndarray] = field(default_factory=list)
    # image, selection indices -> (outputs, beyond) recomputed with that selection
    rerun: Callable[[int, np.ndarray], tuple[Detections, Detections]] | None = None
    # (targets, mAP result) of ``outputs``: export.verify computes PyTorch's mAP once per
    # image set, not once per file and runtime (8 times in an export with three variants)
    maps: list[tuple[Any, dict[str, Any]]] = field(default_factory=list, repr=False)


def median_ms(times: Sequence[float]) -> float | None:
    """Median in ms of all but the first (warm-up) timing."""
    rest = list(times[1:]) or list(times)
    return round(statistics.median(rest) * 1000, 3) if rest else None


def _boundary_tie(selection_scores: Any, k: int) -> bool:
    """Whether the k-th and (k+1)-th best query-selection scores tie (which queries reach
    the decoder then depends on how ties are broken: here as in ONNX ``TopK``)."""
    best = selection_scores.flatten()
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


class _Selection:
    """The query selection of one forward pass: the first ``torch.topk`` of ``k`` over a
    [batch, queries] score tensor (every family's encoder selection; it runs before the
    decoder's and the post-processing's). ``forced``: indices to return instead (the graph's)."""

    def __init__(self, k: int, forced: Any = None) -> None:
        self.k, self.forced = k, forced
        self.scores: Any = None
        self.indices: Any = None

    def claims(self, input: Any, k: int, dim: int) -> bool:
        return self.scores is None and k == self.k and input.dim() == 2 and dim in (1, -1)


def lowest_index_topk(selection: _Selection | None = None) -> Any:
    """A context in which every ``torch.topk`` / ``Tensor.topk`` of this thread (the model's
    query selection and the post-processing's top-K) breaks exact ties by the lower index, as
    ONNX ``TopK``; values are unchanged. A ``TorchFunctionMode``: it patches nothing global,
    so other threads' models are untouched. With ``selection``, the query selection's scores
    and indices are recorded there, and its ``forced`` indices are returned in its place."""
    import torch
    from torch.overrides import TorchFunctionMode

    class _LowestIndexTopK(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None
        ) -> Any:
            kwargs = kwargs or {}
            if func not in (torch.topk, torch.Tensor.topk) or "out" in kwargs:
                return func(*args, **kwargs)
            found = _topk_lowest_index(*args, **kwargs)
            input, k = args[0], (args[1] if len(args) > 1 else kwargs["k"])
            dim = args[2] if len(args) > 2 else kwargs.get("dim", -1)
            if selection is not None and selection.claims(input, k, dim):
                selection.scores = input.detach().clone()
                if selection.forced is not None:
                    index = selection.forced.to(found.indices.dtype)
                    found = torch.return_types.topk((input.gather(1, index), index))
                selection.indices = found.indices.detach().clone()
            return found

    return _LowestIndexTopK()


def torch_reference(
    model: Any, processor: Any, images: Sequence[np.ndarray], num_top_queries: int | None = None
) -> Reference:
    """Preprocess ``images`` as the runtime does (:func:`finetune.pixels.pixel_values`, with
    ``processor``'s config) and run ``DeployModel`` on them, exact ties broken as ONNX
    ``TopK`` breaks them (:func:`lowest_index_topk`, see the module doc). The query
    selection's scores and indices are kept per image, and ``Reference.rerun`` recomputes
    an image with another selection (a graph's, :mod:`export.selection`)."""
    import torch

    from finetune.pixels import pixel_values as preprocess
    from finetune.postprocess import DeployModel

    k = int(getattr(model.config, "num_queries", 300))
    top_k = num_top_queries or k
    # 2K detections: the first K are the graph's outputs (the stable order makes them the
    # same as a top-K's), the next K are what the graph cuts
    deploy = DeployModel(model, 2 * top_k).eval()

    def forward(pv: Any, size: Any, forced: Any = None) -> tuple[Detections, Detections, Any]:
        selection = _Selection(k, forced)
        with torch.inference_mode(), lowest_index_topk(selection):
            labels, boxes, scores = (t[0].numpy() for t in deploy(pv, size))
        top = Detections(labels[:top_k], boxes[:top_k], scores[:top_k])
        return top, Detections(labels[top_k:], boxes[top_k:], scores[top_k:]), selection

    def rerun(image: int, indices: np.ndarray) -> tuple[Detections, Detections]:
        pv, size = torch.from_numpy(pixel_values[image]), torch.from_numpy(sizes[image])
        top, after, _ = forward(pv, size, torch.from_numpy(np.asarray(indices)[None]))
        return top, after

    pixel_values, sizes, outputs, beyond, times, ties = [], [], [], [], [], []
    selected, selection_scores = [], []
    for image in images:
        pv = preprocess(processor, [image])
        size = torch.tensor([[image.shape[1], image.shape[0]]], dtype=torch.int64)
        start = time.perf_counter()
        top, after, selection = forward(pv, size)
        times.append(time.perf_counter() - start)
        pixel_values.append(pv.numpy())
        sizes.append(size.numpy())
        outputs.append(top)
        beyond.append(after)
        if selection.scores is not None:
            ties.append(_boundary_tie(selection.scores, k))
            selection_scores.append(selection.scores[0].numpy())
            selected.append(selection.indices[0].numpy())
    tie_share = round(float(np.mean(ties)), 6) if ties else 0.0
    complete = len(selected) == len(outputs)
    return Reference(
        pixel_values,
        sizes,
        outputs,
        median_ms(times),
        tie_share,
        beyond,
        selection=selected if complete else [],
        selection_scores=selection_scores if complete else [],
        rerun=rerun if complete else None,
    )
