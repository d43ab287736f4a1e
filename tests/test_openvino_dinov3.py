"""OpenVINO loads DEIMv2's DINOv3 backbone once exported (:mod:`export.dinov3_fixes`).

Without the register-token patch OpenVINO 2026.4.1 refused every DINOv3 graph whose ViT has no
register tokens (DEIMv2-S/M, and the tests' tiny model): it infers ``[batch, 1, 1]`` for the
``Expand`` of the empty ``[1, 0, hidden]`` register tokens and rejects the embeddings' Concat.
Here only the tiny ViT backbone is traced (under the full model's ``export_patches``, as
``trace_to_onnx`` does), which is what OpenVINO refused; the whole contract graph in ONNX
Runtime and OpenVINO is ``tests/test_family_export.py``'s.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_family_export import IMAGE, OPSET, OTHER, build_uncalibrated

from export.graph_fixes import export_patches

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Measured on this backbone (transformers' init, one thread, feature values up to 3.4):
# OpenVINO and ONNX Runtime are both within 3.4e-4 of PyTorch and within 1e-6 of each other;
# a wrong token layout moves the maps by O(1).
FEATURES_ATOL = 1e-3


class _Features(torch.nn.Module):
    """The DINOv3 backbone's feature maps as a tuple of tensors (what the encoder reads)."""

    def __init__(self, backbone: Any) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.backbone(pixel_values).feature_maps)


def _model(register_tokens: int) -> Any:
    """The tests' tiny DEIMv2/DINOv3 (no register tokens), or one with ``register_tokens``."""
    from transformers import Deimv2ForObjectDetection

    model = build_uncalibrated("deimv2_dinov3")
    if register_tokens == 0:
        return model
    model.config.backbone_config.num_register_tokens = register_tokens
    torch.manual_seed(0)
    return Deimv2ForObjectDetection(model.config).eval()


def _export_backbone(model: Any, path: Path) -> Any:
    """Trace ``model``'s ViT as ``trace_to_onnx`` traces the whole model; the backbone."""
    backbone = model.model.conv_encoder.backbone
    images = torch.rand(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), torch.no_grad(), export_patches(model):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Features(backbone),
            (images,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["images"],
            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}},
        )
    return backbone


@pytest.mark.model
@pytest.mark.parametrize("register_tokens", [0, 2])
def test_dinov3_embeddings_patch_is_exact(register_tokens: int):
    """While exporting, a ViT without register tokens has the patched embeddings, bit for bit
    DINOv3's own; one with register tokens keeps its own; the patch ends with the export."""
    model = _model(register_tokens)
    backbone = model.model.conv_encoder.backbone
    pixels = torch.rand(2, 3, *OTHER, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = backbone.embeddings(pixels)
        with export_patches(model):
            patched = backbone.embeddings(pixels)
            is_patched = "forward" in vars(backbone.embeddings)
    assert is_patched == (register_tokens == 0), "only a ViT without register tokens is patched"
    assert "forward" not in vars(backbone.embeddings), "the patch outlived the export"
    assert torch.equal(plain, patched), "the patched embeddings differ from DINOv3's own"


@pytest.mark.model
def test_dinov3_backbone_loads_and_matches_in_openvino(tmp_path: Path):
    """The exported ViT without register tokens loads in OpenVINO (refused before the fix:
    ModelLoadError, Concat) and gives PyTorch's feature maps at two sizes and batches."""
    pytest.importorskip("openvino", reason="the [openvino] extra (in [dev], so on CI)")
    from export.openvino_session import OpenVinoSession

    model = _model(0)
    path = tmp_path / "dinov3.onnx"
    backbone = _export_backbone(model, path)
    session = OpenVinoSession(path, threads=1)
    names = session.signature.outputs
    for batch, (height, width) in [(1, (IMAGE, IMAGE)), (2, OTHER)]:
        images = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            expected = [f.numpy() for f in _Features(backbone)(images)]
        got = session.run(names, {"images": images.numpy()})
        assert len(got) == len(expected), f"{len(got)} feature maps, PyTorch has {len(expected)}"
        for index, (want, have) in enumerate(zip(expected, got, strict=True)):
            where = f"feature map {index}, batch {batch} {height}x{width}"
            assert have.shape == want.shape, f"{where}: shape {have.shape} != {want.shape}"
            error = float(np.abs(have - want).max())
            assert error <= FEATURES_ATOL, f"{where}: OpenVINO differs by {error}"
