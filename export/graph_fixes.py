"""Family-specific patches applied only while :func:`export.onnx_export.trace_to_onnx` traces.

One entry point, :func:`export_patches`, looked up by ``model.config.model_type``. A patch swaps
a function for an export-friendly one with the same math and restores it on exit: on the model's
own modules where they hold it (RF-DETR, D-FINE, DEIMv2; never on a class), in
``modeling_rt_detr_v2`` for RT-DETRv2, whose attention calls a module-level function (so an
RT-DETRv2 run in another thread during an export would see the patched, equivalent function).

Measured with transformers 5.24, torch 2.14.1, ``torch.onnx.export(dynamo=False, opset 17)`` and
ONNX Runtime 1.32 (CPU), comparing raw outputs (``logits``, ``pred_boxes``) per query:

* ``rf_detr`` needs a patch (:func:`_rf_detr_position_embeddings`): without it the export stops
  at ``aten::_upsample_bicubic2d_aa``.
* ``rt_detr_v2``, ``d_fine`` and ``deimv2`` with ``decoder_method="discrete"`` need one
  (:func:`_discrete_sampling_grid`): their graphs were right at the trace size only.
* ``deimv2`` with a DINOv3 backbone needs two (:mod:`export.dinov3_fixes`): its graph ran
  at the trace size only, and OpenVINO could not load it where the ViT has no register tokens
  (DEIMv2-S and -M: an ``Expand`` of the empty register-token tensor).
* With the default decoder method, ``d_fine`` and ``deimv2`` (HGNetV2) need none. The reported
  divergence (raw logits off by 3.06 / 4.06, boxes by 0.98, on the very trace input) comes from
  ties, not from the graph, and RT-DETRv2's default config shows it too (logits 0.71, boxes
  0.99): with random init the encoder's activations vanish (std 1.4e-10 in D-FINE at 640 px),
  the 8400 query-selection scores take 2 (D-FINE) or 8 (RT-DETRv2) distinct values, and
  ``torch.topk`` and ONNX ``TopK`` break ties differently (``TopK`` takes the lowest indices, as
  its spec says; ``torch.topk`` on CPU returned indices from 5571 up for an all-zero row of
  8400), so 583 of the 600 selected queries (D-FINE) come from other encoder positions, with
  other anchors. With batch norms set to batch statistics (untied scores), the same default
  configs select the same 300 positions in both backends and, per position, logits agree to
  2.6e-3 (D-FINE), 3.4e-3 (DEIMv2), 6.8e-5 (RT-DETRv2) and boxes to 1.1e-6; the per-query order
  can still differ where two selection scores are within ONNX Runtime's rounding (gaps of 5e-6).
  Small configs agree to 3.2e-5 (logits) and 7e-7 (boxes) per query; see
  ``tests/test_family_export.py``.
* ``rt_detr`` needs none.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch

from export.dinov3_fixes import deimv2_dinov3_patches
from export.patching import per_instance, swapped, swapped_on_instances, together

__all__ = ["PATCHED_MODEL_TYPES", "antialiased_bicubic_weights", "export_patches"]


def antialiased_bicubic_weights(in_size: int, out_size: Any, dtype: torch.dtype) -> torch.Tensor:
    """The ``[out_size, in_size]`` matrix of ``F.interpolate(mode="bicubic", antialias=True,
    align_corners=False)`` along one axis, built from tensor ops so that it traces.

    Same kernel as ATen's ``_upsample_bicubic2d_aa`` (Keys cubic with ``a = -0.5``, support
    ``2 * max(scale, 1)`` input pixels, taps outside the input dropped and the rest normalised
    to sum 1): in float64 ``W_h @ X @ W_w.T`` equals ATen's result to 5e-15; in float32 to
    3e-6 on unit-variance input (ATen's own float32 result is 1.6e-5 from float64). At
    ``out_size == in_size`` it is exactly the identity (weights 1 and 0).

    ``out_size`` may be a Python int or, while tracing, a 0-d size tensor: the weights are then
    computed in the graph and follow the input's height and width.
    """
    out = torch.as_tensor(out_size)
    scale = torch.full((), in_size, dtype=dtype) / out.to(dtype)
    stretch = torch.clamp(scale, min=1.0)  # downscaling widens the kernel by the scale
    center = scale * (torch.arange(out, dtype=dtype) + 0.5)
    taps = torch.arange(in_size, dtype=dtype) + 0.5
    x = ((taps[None, :] - center[:, None]) / stretch).abs()
    a = -0.5
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    weights = torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))
    return weights / weights.sum(dim=1, keepdim=True)


def _rf_detr_position_embeddings(model: Any) -> contextlib.AbstractContextManager[None]:
    """RF-DETR: DINOv2 position embeddings resized by two matrix products instead of
    ``aten::_upsample_bicubic2d_aa``.

    What is wrong: ``RfDetrDinov2Embeddings.interpolate_pos_encoding`` always interpolates when
    tracing (``F.interpolate(mode="bicubic", antialias=True)``), and the TorchScript exporter has
    no symbolic for the antialiased bicubic at any opset: the export fails with "Exporting the
    operator 'aten::_upsample_bicubic2d_aa' to ONNX opset version 17 is not supported".

    The fix: the same resampling as ``W_h @ P @ W_w.T`` with the weights of
    :func:`antialiased_bicubic_weights`, computed in the graph from the traced input size, so
    the graph keeps dynamic height and width and uses only opset-16 ops (Range, Where, MatMul).
    Exact up to float32 rounding (3e-6 on unit-variance data, see the weights' docstring); at
    the pretraining grid and a square input, where eager PyTorch skips the interpolation, the
    weights are the identity. Measured on a small RF-DETR: no export before; after, raw logits
    within 6e-7 and boxes within 6e-8 of PyTorch at the pretraining grid (64 px) and at
    96x128 px; the patched module run eagerly is within 6e-7 of the unpatched one.

    Rejected alternative: opset 18's ``Resize(mode="cubic", antialias=1)``. ONNX Runtime 1.32
    matches ATen only with ``cubic_coeff_a=-0.5`` and ``exclude_outside=1`` (2.5e-5); with the
    exporter's usual ``-0.75`` it is off by 0.43 on unit-variance data, and opsets 16-17 (this
    project's default) have no antialiased Resize at all.
    """
    from transformers.models.rf_detr.modeling_rf_detr import RfDetrDinov2Embeddings

    embeddings_modules = [m for m in model.modules() if isinstance(m, RfDetrDinov2Embeddings)]

    def patched(module: RfDetrDinov2Embeddings) -> Callable[..., torch.Tensor]:
        num_positions = module.position_embeddings.shape[1] - 1
        grid = math.isqrt(num_positions)
        if grid * grid != num_positions:
            raise ValueError(f"RF-DETR position embeddings are not a square grid: {num_positions}")

        def interpolate_pos_encoding(
            embeddings: torch.Tensor, height: Any, width: Any
        ) -> torch.Tensor:
            class_pos_embed = module.position_embeddings[:, :1]
            patch_pos_embed = module.position_embeddings[:, 1:]
            dim = embeddings.shape[-1]
            target_dtype = patch_pos_embed.dtype
            grid_embed = patch_pos_embed.reshape(grid, grid, dim).permute(2, 0, 1)  # [dim, g, g]
            rows = antialiased_bicubic_weights(grid, height // module.patch_size, torch.float32)
            cols = antialiased_bicubic_weights(grid, width // module.patch_size, torch.float32)
            # W_h @ P @ W_w.T per channel, written as two 2-D MatMuls over all channels at
            # once: OpenVINO 2026.4's CPU plugin refuses the broadcast form (rank 2 @ rank 3:
            # "Can't create dummy inputs if argument shapes ranks are not equal"; with the
            # weights unsqueezed to rank 3 its FullyConnected fusion breaks at run time).
            h_out, w_out = rows.shape[0], cols.shape[0]
            grid32 = grid_embed.to(torch.float32)  # [dim, g, g]
            by_cols = (grid32.reshape(dim * grid, grid) @ cols.t()).reshape(dim, grid, w_out)
            by_rows = by_cols.transpose(1, 2).reshape(dim * w_out, grid) @ rows.t()
            resized = by_rows.reshape(dim, w_out, h_out).transpose(1, 2)  # [dim, h, w]
            resized = resized.to(target_dtype).permute(1, 2, 0).reshape(1, -1, dim)
            return torch.cat((class_pos_embed, resized), dim=1)

        return interpolate_pos_encoding

    return per_instance(embeddings_modules, "interpolate_pos_encoding", patched)


def _discrete_deformable_attention(
    value: torch.Tensor,
    value_spatial_shapes: Any,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    num_points_list: list[int],
    method: str = "default",
) -> torch.Tensor:
    """``multi_scale_deformable_attention_v2`` of RT-DETRv2 / D-FINE / DEIMv2 (one function,
    identical in the three files of transformers 5.24), with ``method="discrete"``'s
    ``torch.tensor([[width, height]])`` replaced by a stack of the (traced) sizes.

    The only change: ``torch.tensor`` of traced sizes is recorded as a constant, so the graph
    kept the trace size's (width, height) per level and, at any other input size, scaled the
    sampling points with the wrong grid (below). ``torch.stack`` of the same integers gives the
    same int64 [1, 2] tensor and the same float32 products, so the math is unchanged.
    """
    if method != "discrete":
        raise ValueError(f"only the discrete method is patched, not {method!r}")
    batch_size, _, num_heads, hidden_dim = value.shape
    _, num_queries, num_heads, _, _ = sampling_locations.shape
    value_list = (
        value.permute(0, 2, 3, 1)
        .flatten(0, 1)
        .split([height * width for height, width in value_spatial_shapes], dim=-1)
    )
    sampling_grids = sampling_locations.permute(0, 2, 1, 3, 4).flatten(0, 1)
    sampling_grids = sampling_grids.split(num_points_list, dim=-2)
    sampling_value_list = []
    for level_id, (height, width) in enumerate(value_spatial_shapes):
        value_l_ = value_list[level_id].reshape(batch_size * num_heads, hidden_dim, height, width)
        sampling_grid_l_ = sampling_grids[level_id]
        grid_size = torch.stack(
            [
                torch.as_tensor(width, device=value.device),
                torch.as_tensor(height, device=value.device),
            ]
        ).reshape(1, 2)
        sampling_coord = (sampling_grid_l_ * grid_size + 0.5).to(torch.int64)
        sampling_coord_x = sampling_coord[..., 0].clamp(0, width - 1)
        sampling_coord_y = sampling_coord[..., 1].clamp(0, height - 1)
        sampling_coord = torch.stack([sampling_coord_x, sampling_coord_y], dim=-1)
        sampling_coord = sampling_coord.reshape(
            batch_size * num_heads, num_queries * num_points_list[level_id], 2
        )
        sampling_idx = (
            torch.arange(sampling_coord.shape[0], device=value.device)
            .unsqueeze(-1)
            .repeat(1, sampling_coord.shape[1])
        )
        sampling_value_l_ = value_l_[
            sampling_idx, :, sampling_coord[..., 1], sampling_coord[..., 0]
        ]
        sampling_value_l_ = sampling_value_l_.transpose(1, 2).reshape(
            batch_size * num_heads, hidden_dim, num_queries, num_points_list[level_id]
        )
        sampling_value_list.append(sampling_value_l_)
    attention_weights = attention_weights.permute(0, 2, 1, 3).reshape(
        batch_size * num_heads, 1, num_queries, sum(num_points_list)
    )
    output = (
        (torch.concat(sampling_value_list, dim=-1) * attention_weights)
        .sum(-1)
        .view(batch_size, num_heads * hidden_dim, num_queries)
    )
    return output.transpose(1, 2).contiguous()


def _discrete_sampling_grid(model: Any) -> contextlib.AbstractContextManager[None]:
    """RT-DETRv2 / D-FINE / DEIMv2 with ``decoder_method="discrete"``: the per-level sampling
    grid size follows the input instead of being the trace size's.

    What is wrong: the discrete deformable attention scales its sampling points by
    ``torch.tensor([[width, height]])``; the tracer records ``torch.tensor`` of traced sizes as
    a constant. The graph is right at the trace size only: a small RT-DETRv2 traced at 64 px
    and run at 96x128 px had raw logits off by 7.3e-3, boxes by 4.5e-4 and a detection's box
    by 322 px (labels and top-k scores still close, so top-10 parity alone can miss it).

    A small D-FINE: logits off by 2.0 at 96x128 px.

    The fix: :func:`_discrete_deformable_attention`, the same function with the grid size
    stacked from the traced sizes; after it, the same RT-DETRv2 at 96x128 px is within 4.2e-7
    (logits) and 1.8e-7 (boxes), detections within 1.2e-4 px. Only the discrete method is
    touched; the default (``grid_sample``) path already follows the input size.
    """
    if getattr(model.config, "decoder_method", "default") != "discrete":
        return contextlib.nullcontext()
    if model.config.model_type == "rt_detr_v2":
        # RT-DETRv2 calls the module-level function by name: swapped there for the export.
        from transformers.models.rt_detr_v2 import modeling_rt_detr_v2

        return swapped(
            modeling_rt_detr_v2,
            "multi_scale_deformable_attention_v2",
            _discrete_deformable_attention,
        )
    # D-FINE and DEIMv2 hold the function per attention module, as ``ms_deformable_attn_core``.
    return swapped_on_instances(model, "ms_deformable_attn_core", _discrete_deformable_attention)


# model_type -> patch factory; RT-DETR (v1) is measured to export exactly without one.
_PATCHES: dict[str, Callable[[Any], contextlib.AbstractContextManager[None]]] = {
    "rt_detr_v2": _discrete_sampling_grid,
    "d_fine": _discrete_sampling_grid,
    "deimv2": together(_discrete_sampling_grid, deimv2_dinov3_patches),
    "rf_detr": _rf_detr_position_embeddings,
}
PATCHED_MODEL_TYPES = tuple(_PATCHES)


def export_patches(model: Any) -> contextlib.AbstractContextManager[None]:
    """The export-time patches for ``model``'s family (a no-op context for the others).

    Use around ``torch.onnx.export``; the model is restored when the context exits, also on
    an exception.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    patch = _PATCHES.get(str(model_type))
    return patch(model) if patch is not None else contextlib.nullcontext()
