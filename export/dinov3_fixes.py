"""DEIMv2 with a DINOv3 backbone (the S/M/L/X layout): its two export patches.

Used by :func:`export.graph_fixes.export_patches` for ``deimv2``; each patch applies only where
the model has the module it patches (the HGNetV2 sizes have no DINOv3 backbone).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from export.patching import per_instance, together

__all__ = ["deimv2_dinov3_patches"]


def _scaled_patches(patches: Any, exponent: int) -> Any:
    """``int(patches * 2**exponent)`` in integer arithmetic, so that a traced size stays a
    traced size (``int()`` of it would be recorded as the trace size's constant)."""
    return patches * 2**exponent if exponent >= 0 else patches // 2**-exponent


def _deimv2_dinov3_sizes(model: Any) -> contextlib.AbstractContextManager[None]:
    """The semantic feature maps are resized to sizes that follow the input instead of the
    trace size's.

    What is wrong: ``Deimv2DINOv3ConvEncoder.forward`` computes each resize target as
    ``int(height_patches * 2 ** (num_scales - 2 - i))``; ``int()`` of a traced size is recorded
    as a constant. Measured on a small DEIMv2/DINOv3 traced at 64 px: right at 64 px (logits
    within 1e-5), and at 96x128 px ONNX Runtime stops with "Concat ... Non concat axis
    dimensions must match".

    The fix: the same forward with the target sizes in integer arithmetic
    (:func:`_scaled_patches`: ``n * 2**k`` or ``n // 2**-k``, equal to ``int(n * 2**k)`` for
    the non-negative sizes here), so the graph keeps them symbolic. Nothing else changes.
    After it the same model is within 9e-6 (logits) and 2.4e-7 (boxes) at 96x128 px too.
    """
    import torch.nn.functional as F
    from transformers.models.deimv2.modeling_deimv2 import Deimv2DINOv3ConvEncoder

    encoders = [m for m in model.modules() if isinstance(m, Deimv2DINOv3ConvEncoder)]

    def patched(module: Deimv2DINOv3ConvEncoder) -> Callable[..., list[torch.Tensor]]:
        def forward(pixel_values: torch.Tensor, **kwargs: Any) -> list[torch.Tensor]:
            feature_maps = module.backbone(pixel_values, **kwargs).feature_maps
            patch_size = module.backbone.config.patch_size
            height_patches = pixel_values.shape[2] // patch_size
            width_patches = pixel_values.shape[3] // patch_size
            num_scales = len(feature_maps)
            semantic_features = []
            for i, feature in enumerate(feature_maps):
                size = [
                    _scaled_patches(height_patches, num_scales - 2 - i),
                    _scaled_patches(width_patches, num_scales - 2 - i),
                ]
                semantic_features.append(
                    F.interpolate(feature, size=size, mode="bilinear", align_corners=False)
                )
            detail_features = module.spatial_tuning_adapter(pixel_values)
            return [
                module.fusion_proj[i](torch.cat([semantic.to(detail.device), detail], dim=1))
                for i, (semantic, detail) in enumerate(
                    zip(semantic_features, detail_features, strict=False)
                )
            ]

        return forward

    return per_instance(encoders, "forward", patched)


def _dinov3_without_empty_register_tokens(model: Any) -> contextlib.AbstractContextManager[None]:
    """A DINOv3 ViT with no register tokens (DEIMv2's S and M presets, ``num_register_tokens=0``)
    leaves the empty register-token tensor out of its embeddings' ``torch.cat``.

    What is wrong: ``DINOv3ViTEmbeddings.forward`` always concatenates ``[cls_token,
    register_tokens.expand(batch, -1, -1), patches]``. With no register tokens the middle one
    is a ``[1, 0, hidden]`` weight, traced as ``Expand(weight, [batch, 1, 1])``. ONNX Runtime
    broadcasts that to ``[batch, 0, hidden]``, as numpy does; OpenVINO 2026.4.1 infers
    ``[batch, 1, 1]`` for the Expand of a zero-size tensor and refuses the Concat ("Conversion
    is failed for: Concat-17 ... Shape inference input shapes {[?,1,192],[?,1,1],[?,?,192]}"),
    so it cannot load any such graph: DEIMv2-S at 640 px and the tests' tiny DINOv3 model alike.
    A three-node ONNX graph (``Expand`` of a ``[1, 0, 4]`` initializer, then ``Concat``)
    reproduces it; the same graph with a ``[1, 2, 4]`` initializer, or without the Expand,
    loads.

    The fix: the same forward, with the register tokens concatenated only when there are any.
    Concatenating an empty tensor is the identity, so the embeddings are bit-for-bit the same
    (the prefix length downstream, ``1 + num_register_tokens``, is unchanged). Models with
    register tokens are not touched. Measured after it: DEIMv2-S at 640 px (random weights,
    settled) passes export's fp32 verification in OpenVINO as in ONNX Runtime, and the tiny
    model's contract graph matches PyTorch in both (``tests/test_openvino_dinov3.py``).
    """
    from transformers.models.dinov3_vit.modeling_dinov3_vit import DINOv3ViTEmbeddings

    embeddings = [
        m
        for m in model.modules()
        if isinstance(m, DINOv3ViTEmbeddings) and m.register_tokens.shape[1] == 0
    ]

    def patched(module: DINOv3ViTEmbeddings) -> Callable[..., torch.Tensor]:
        def forward(
            pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None
        ) -> torch.Tensor:
            target_dtype = module.patch_embeddings.weight.dtype
            patches = module.patch_embeddings(pixel_values.to(dtype=target_dtype))
            patches = patches.flatten(2).transpose(1, 2)
            if bool_masked_pos is not None:
                mask_token = module.mask_token.to(patches.dtype)
                patches = torch.where(bool_masked_pos.unsqueeze(-1), mask_token, patches)
            cls_token = module.cls_token.expand(pixel_values.shape[0], -1, -1)
            return torch.cat([cls_token, patches], dim=1)

        return forward

    return per_instance(embeddings, "forward", patched)


deimv2_dinov3_patches = together(_deimv2_dinov3_sizes, _dinov3_without_empty_register_tokens)
