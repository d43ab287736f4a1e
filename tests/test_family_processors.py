"""Each family's preprocessing, from its definition to the runtime (tracker issue 17).

Upstream DEIMv2 normalises with ImageNet mean/std for its DINOv3 sizes only (its
``deimv2_dinov3_*`` configs; transformers' converter saves such a processor for DINOv3 only);
D-FINE, DEIMv2's HGNetV2 sizes and RT-DETR(v2) resize and rescale only; RF-DETR normalises.
``Family.processor`` picks the processor by backbone; the checkpoint carries it, export copies
it into the metadata and ``runtime.Detector`` applies it. The end-to-end test exports a tiny
DEIMv2/DINOv3 checkpoint with ``decoder_method="discrete"`` (one export serves both checks):
the graph has no GridSample, and ``Detector`` equals PyTorch on the normalised pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from test_family_export import IMAGE, SCORES_ATOL, build

from finetune.families import FAMILIES

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # (mean, std)
BOXES_PX_ATOL = 1e-3  # xyxy pixels of a 64 px image (test_family_export: 6e-4 px at 640 px)


def _dinov3_config() -> object:
    """A DEIMv2 config with a DINOv3 backbone (only its backbone's model_type matters)."""
    from transformers import Deimv2Config, DINOv3ViTConfig

    return Deimv2Config(backbone_config=DINOv3ViTConfig(hidden_size=32, num_attention_heads=2))


@pytest.mark.unit
@pytest.mark.parametrize(
    ("family", "config", "normalises"),
    [
        ("rt_detr", None, False),
        ("rt_detr_v2", None, False),
        ("d_fine", "scratch", False),  # HGNetV2, as upstream D-FINE: no Normalize
        ("deimv2", "scratch", False),  # HGNetV2: upstream's N/Pico/Femto/Atto, no Normalize
        ("deimv2", "dinov3", True),  # DINOv3: upstream's S/M/L/X, ImageNet mean/std
        ("rf_detr", "scratch", True),  # DINOv2: RfDetrImageProcessor's ImageNet mean/std
        ("lw_detr", "scratch", True),  # its ViT: ImageNet mean/std, as transformers' converter
    ],
)
def test_family_processor_follows_the_backbone(family, config, normalises):
    record = FAMILIES[family]
    if config == "scratch":
        config = record.scratch_config({0: "a"})
    elif config == "dinov3":
        config = _dinov3_config()
    processor = record.processor(96, config)
    assert dict(processor.size) == {"height": 96, "width": 96}
    assert (processor.do_rescale, processor.rescale_factor) == (True, 1 / 255)
    assert bool(processor.do_normalize) is normalises
    if normalises:
        assert (list(processor.image_mean), list(processor.image_std)) == IMAGENET


@pytest.mark.slow
def test_deimv2_dinov3_export_and_detector_normalise_like_pytorch(tmp_path: Path) -> None:
    """The family's processor goes into the checkpoint, export copies it into the metadata and
    ``Detector`` applies it: its detections are PyTorch's on the processor's pixels. Exported
    with ``decoder_method="discrete"`` through ``export_checkpoint`` (the CLI's path): no
    GridSample, recorded in the metadata (one trace for both checks, ~10 CPU-s)."""
    from transformers import AutoModelForObjectDetection

    from export import export_checkpoint
    from finetune.postprocess import DeployModel
    from runtime import Detector

    model = build("deimv2_dinov3")  # calibrated: its query selection has a margin
    processor = FAMILIES["deimv2"].processor(IMAGE, model.config)
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    result = export_checkpoint(
        folder, tmp_path / "model.onnx", verify=False, decoder_method="discrete"
    )

    pre = result.metadata.preprocessing
    assert pre.do_normalize and (list(pre.image_mean), list(pre.image_std)) == IMAGENET
    graph = onnx.load(str(result.path))
    assert not [n for n in graph.graph.node if n.op_type == "GridSample"]
    assert result.metadata.extra["decoder_method"] == "discrete"

    # an image at the model size: neither side resizes, so the pixels differ by float rounding
    image = np.random.default_rng(0).integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)
    got = Detector(result.path).predict(image, threshold=0.0)[0]
    discrete = AutoModelForObjectDetection.from_pretrained(folder, decoder_method="discrete")
    deploy = DeployModel(discrete.eval()).eval()
    sizes = torch.tensor([[IMAGE, IMAGE]])
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        labels, boxes, scores = (t[0].numpy() for t in deploy(pixels, sizes))
        plain = deploy(torch.from_numpy(image).permute(2, 0, 1)[None] / 255.0, sizes)[2][0]
    assert np.array_equal(got.class_id, labels)
    assert np.abs(got.xyxy - boxes).max() <= BOXES_PX_ATOL
    assert np.abs(got.confidence - scores).max() <= SCORES_ATOL
    # the check has teeth: the same image without normalisation scores otherwise
    assert np.abs(plain.numpy() - scores).max() > 100 * SCORES_ATOL
