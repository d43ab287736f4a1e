"""Tiny RT-DETR checkpoints made at test time (random init, seconds to build)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import RTDetrForObjectDetection

from finetune.model import small_config, small_processor

TINY_CLASSES = ("circle", "square", "triangle")


def tiny_config(classes: tuple[str, ...] = TINY_CLASSES, **overrides: object):
    """A ~0.2M-parameter RT-DETR: same architecture as the embedded model, narrower."""
    from transformers import RTDetrResNetConfig

    backbone = RTDetrResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )
    values = {
        "backbone_config": backbone,
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


def write_tiny_checkpoint(
    folder: Path, classes: tuple[str, ...] = TINY_CLASSES, image_size: int = 64, seed: int = 0
) -> Path:
    """Save a random-init tiny RT-DETR and its image processor with ``save_pretrained``."""
    torch.manual_seed(seed)
    model = RTDetrForObjectDetection(tiny_config(classes)).eval()
    model.save_pretrained(folder)
    small_processor(image_size).save_pretrained(folder)
    return folder
