"""RT-DETR post-processing, defined once for PyTorch evaluation and the exported graph.

This is the official RT-DETR deploy post-processor: sigmoid over class logits, top-k over
queries x classes, boxes from normalised cxcywh to xyxy in pixels of the original image.
``export`` traces :class:`DeployModel` into ONNX, and training/test evaluation and the
benchmark's PyTorch path call the same module, so parity is a plain array comparison.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DeployModel", "RTDetrPostProcessor"]


class RTDetrPostProcessor(nn.Module):
    """(logits, cxcywh boxes, orig sizes as (width, height)) -> (labels, xyxy boxes, scores)."""

    def __init__(self, num_top_queries: int = 300) -> None:
        super().__init__()
        self.num_top_queries = num_top_queries

    def forward(
        self, logits: torch.Tensor, pred_boxes: torch.Tensor, orig_target_sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        num_classes = logits.shape[-1]
        cx, cy, w, h = pred_boxes.unbind(-1)
        boxes = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
        scale = orig_target_sizes.to(boxes.dtype).repeat(1, 2).unsqueeze(1)  # (w, h, w, h)
        boxes = boxes * scale
        scores = logits.sigmoid().flatten(1)
        k = min(self.num_top_queries, scores.shape[1])
        scores, index = torch.topk(scores, k, dim=-1)
        labels = index % num_classes
        query = index // num_classes
        boxes = boxes.gather(dim=1, index=query.unsqueeze(-1).expand(-1, -1, 4))
        return labels, boxes, scores


class DeployModel(nn.Module):
    """An RT-DETR model with post-processing in the graph: the exported contract.

    Inputs: ``images`` float32 [N, 3, H, W] (preprocessed), ``orig_target_sizes`` int64 [N, 2]
    as (width, height). Outputs: ``labels`` int64 [N, K], ``boxes`` float32 [N, K, 4] (xyxy,
    pixels of the original image), ``scores`` float32 [N, K].
    """

    def __init__(self, model: nn.Module, num_top_queries: int | None = None) -> None:
        super().__init__()
        self.model = model
        k = num_top_queries or int(getattr(model.config, "num_queries", 300))
        self.postprocessor = RTDetrPostProcessor(k)

    def forward(
        self, images: torch.Tensor, orig_target_sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = self.model(pixel_values=images)
        return self.postprocessor(outputs.logits, outputs.pred_boxes, orig_target_sizes)
