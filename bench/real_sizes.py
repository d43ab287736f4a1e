"""R18- and R50-sized RT-DETR at 640 px with random weights: latency only.

The configs are built in code (no network) as transformers' defaults for
``PekingU/rtdetr_r18vd`` and ``PekingU/rtdetr_r50vd``: ResNet-vd backbones (deep stem,
average-pool shortcuts), hybrid encoder, 300 queries, 80 classes. R50 is ``RTDetrConfig()``'s
own default; R18 uses basic blocks [2, 2, 2, 2], encoder inputs [128, 256, 512], expansion
0.5 and 3 decoder layers. Weights are random (seeded), so accuracy means nothing: only
the latency is reported, and labelled so.

The exported graph is cached under ``~/.cache/rtdetr-deploy/bench/`` (``$RTDETR_DEPLOY_CACHE``),
keyed by the config and the torch and toolkit versions: tracing R50 takes a minute. Its int8
variant is made with export's own recipe (``export.variants.to_int8``), calibrated on
``CALIBRATION_IMAGES`` generated images, and cached beside it; random weights make its
accuracy meaningless, so it is labelled latency-only like the rest.

Timing: every runtime and precision of one size is timed in interleaved rounds (A B C A B
C ..., the order rotated each round), ``WARMUP`` + ``ROUNDS`` calls each, so that a slow spell
of a shared machine lands on every row alike; p50 and the spread (p5-p95) are reported.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import RTDetrConfig, RTDetrForObjectDetection

from bench.settings import cache_dir
from finetune.model import basic_resnet

__all__ = [
    "IMAGE_SIZE",
    "ROUNDS",
    "SIZES",
    "WARMUP",
    "RealSize",
    "build_model",
    "cached_int8",
    "cached_onnx",
    "interleaved",
    "random_feed",
]

IMAGE_SIZE = 640
WARMUP, ROUNDS = 1, 10  # interleaved; R50 at 640 px is 1-3 s per call on 2 CPU cores
CALIBRATION_IMAGES = 8
OPSET = 17
COCO_CLASSES = 80


def _r18() -> RTDetrConfig:
    return RTDetrConfig(
        backbone_config=basic_resnet(64, 2),
        encoder_in_channels=[128, 256, 512],
        hidden_expansion=0.5,
        decoder_layers=3,
        num_labels=COCO_CLASSES,
    )


def _r50() -> RTDetrConfig:
    return RTDetrConfig(num_labels=COCO_CLASSES)


@dataclass(frozen=True)
class RealSize:
    """A published RT-DETR size, rebuilt with random weights."""

    key: str
    label: str
    config: Callable[[], RTDetrConfig]


SIZES = {
    "r18": RealSize("r18", "RT-DETR-R18 (rtdetr_r18vd config, random weights)", _r18),
    "r50": RealSize("r50", "RT-DETR-R50 (rtdetr_r50vd config, random weights)", _r50),
}


def build_model(size: RealSize, seed: int = 0) -> RTDetrForObjectDetection:
    """The model with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    return RTDetrForObjectDetection(size.config()).eval()


def _cache_key(size: RealSize) -> str:
    from export.onnx_export import toolkit_version

    text = json.dumps(
        {
            "config": size.config().to_dict(),
            "torch": torch.__version__,
            "toolkit": toolkit_version(),
            "image_size": IMAGE_SIZE,
            "opset": OPSET,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_onnx(
    size: RealSize, model: RTDetrForObjectDetection, folder: Path | None = None
) -> Path:
    """The exported graph of ``model`` (``export``'s tracer and metadata), built once."""
    from export.files import staging_path
    from export.onnx_export import toolkit_version, trace_to_onnx, write_metadata
    from runtime.metadata import ModelMetadata, Preprocessing

    folder = folder or cache_dir()
    path = folder / f"rtdetr_{size.key}-{IMAGE_SIZE}px-{_cache_key(size)}.onnx"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = staging_path(path)
    try:
        trace_to_onnx(model, tmp, opset=OPSET, input_size=(IMAGE_SIZE, IMAGE_SIZE))
        metadata = ModelMetadata(
            id2label={i: f"class_{i}" for i in range(COCO_CLASSES)},
            preprocessing=Preprocessing(height=IMAGE_SIZE, width=IMAGE_SIZE),
            source_checkpoint=f"{size.label}: built in code by bench/real_sizes.py",
            opset=OPSET,
            toolkit_version=toolkit_version(),
            num_top_queries=int(model.config.num_queries),
        )
        write_metadata(tmp, metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def random_feed(batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """A preprocessed-looking input (values in [0, 1]) at 640x640, the same for every backend."""
    rng = np.random.default_rng(seed)
    images = rng.random((batch, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    sizes = np.full((batch, 2), IMAGE_SIZE, dtype=np.int64)
    return {"images": images, "orig_target_sizes": sizes}


def _calibration_images(count: int, seed: int = 0) -> list[np.ndarray]:
    """Generated photo-like RGB images (smooth colour fields, grain, a few boxes), 640 px."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        small = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(small).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC))
        image = image.astype(np.int16) + rng.integers(-10, 11, image.shape, dtype=np.int16)
        for _ in range(4):
            y, x = rng.integers(0, IMAGE_SIZE - 160, 2)
            h, w = rng.integers(40, 160, 2)
            image[y : y + h, x : x + w] = rng.integers(0, 256, 3)
        images.append(image.clip(0, 255).astype(np.uint8))
    return images


def cached_int8(size: RealSize, fp32: Path) -> Path:
    """``fp32``'s int8 variant, export's recipe, calibrated on generated images; built once."""
    from dataclasses import replace

    from export.files import staging_path
    from export.onnx_export import read_metadata, write_metadata
    from export.variants import RECIPE, to_int8
    from finetune.model import small_processor

    path = fp32.with_name(f"{fp32.stem}.{RECIPE.replace(' ', '-')}.onnx")  # per recipe
    if path.is_file():
        return path
    tmp = staging_path(path)
    try:
        extra = to_int8(
            fp32,
            tmp,
            small_processor(IMAGE_SIZE),
            _calibration_images(CALIBRATION_IMAGES),
            num_decoder_layers=size.config().decoder_layers,
        )
        metadata = read_metadata(fp32)
        write_metadata(tmp, replace(metadata, precision="int8", extra={**metadata.extra, **extra}))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def interleaved(
    calls: dict[str, Callable[[], object]], *, warmup: int = WARMUP, rounds: int = ROUNDS
) -> dict[str, list[float]]:
    """Seconds per call of each function, timed in interleaved rounds (order rotated)."""
    import time

    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times
