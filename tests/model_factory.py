"""Tiny RT-DETR checkpoints made at test time (random init, seconds to build)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import RTDetrForObjectDetection

from finetune.model import basic_resnet, small_config, small_processor

TINY_CLASSES = ("circle", "square", "triangle")


def tiny_config(classes: tuple[str, ...] = TINY_CLASSES, **overrides: object):
    """A ~0.2M-parameter RT-DETR: same architecture as the embedded model, narrower."""
    values = {
        "backbone_config": basic_resnet(8, 1),
        "encoder_in_channels": [16, 32, 64],
        "encoder_hidden_dim": 32,
        "encoder_ffn_dim": 64,
        "encoder_attention_heads": 2,
        "d_model": 32,
        "decoder_in_channels": [32, 32, 32],
        "decoder_ffn_dim": 64,
        "decoder_layers": 1,
        "decoder_attention_heads": 2,
        "decoder_n_points": 2,
        "num_queries": 20,
        "num_denoising": 10,
    }
    values.update(overrides)
    return small_config(dict(enumerate(classes)), **values)


def _condition(model: RTDetrForObjectDetection) -> None:
    """Make random-init detections comparable across runtimes.

    With transformers' small init (conv/linear std ~0.01, batch-norm weights ~0.02) the tiny
    model's activations shrink to ~1e-10 before the encoder's query selection: every query
    score equals the class bias, the top-k choice is arbitrary, and PyTorch and onnxruntime
    pick different queries. PyTorch's default conv/linear init, batch-norm weights at 1 and a
    20x sharper encoder score head give untied queries and scores spread over ~0.2.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d) or type(module).__name__.endswith(
                "FrozenBatchNorm2d"
            ):
                module.weight.fill_(1.0)
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.reset_parameters()
        model.model.enc_score_head.weight.mul_(20)


def write_tiny_checkpoint(
    folder: Path, classes: tuple[str, ...] = TINY_CLASSES, image_size: int = 64, seed: int = 0
) -> Path:
    """Save a random-init, well-conditioned tiny RT-DETR and its image processor."""
    torch.manual_seed(seed)
    model = RTDetrForObjectDetection(tiny_config(classes)).eval()
    _condition(model)
    model.save_pretrained(folder)
    small_processor(image_size).save_pretrained(folder)
    return folder
