"""The model input for PyTorch evaluation: the runtime's own preprocessing, one function.

PyTorch evaluation and the deployed runtime must produce the same pixels (shared/DESIGN.md),
so :func:`pixel_values` runs :func:`runtime.preprocessing.preprocess` with
``Preprocessing.from_processor_config(processor.to_dict())``: the parameters (size, filter,
rescale, normalise) are the checkpoint's own processor config, exactly what export writes
into the ONNX metadata and what ``runtime.Detector`` then applies. The tensor is therefore
bit-identical to ``Detector.prepare(images)["images"]`` of the exported fp32 model.

Why not ``processor(images=..., return_tensors="pt")``: transformers' ``RTDetrImageProcessor``
(torchvision backend) and Pillow round the resize differently on ~1% of the pixels (one
uint8 step, see :mod:`runtime.preprocessing`). On a real dataset with non-square images that
alone moved the exported fp32 model's mAP50:95 by -0.0019 against PyTorch, next to a 0.002
gate, with no export defect: the comparison measured two resizers, not the graph.

Used by every evaluation path: ``finetune.evaluate.predict_images`` (per-epoch evaluation,
the test split, the benchmark's PyTorch mAP), ``export.reference`` (the PyTorch side of
export verification), int8 calibration (``export.variants``) and the benchmark's
``TorchBackend.prepare``. Training still goes through the processor
(``finetune.data``): augmentation and labels need it, because it also converts the
annotations (boxes to normalised cxcywh) with the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.metadata import Preprocessing
from runtime.preprocessing import RGBImage, preprocess

if TYPE_CHECKING:
    import torch

__all__ = ["pixel_array", "pixel_values", "preprocessing_of"]


def preprocessing_of(processor: Any) -> Preprocessing:
    """The runtime's ``Preprocessing`` of a checkpoint's image processor (its own config).

    Raises:
        runtime.metadata.MetadataError: the config has no fixed ``{"height", "width"}`` size
            (export refuses such a checkpoint for the same reason).
    """
    return Preprocessing.from_processor_config(processor.to_dict())


def pixel_array(processor: Any, images: Sequence[RGBImage]) -> np.ndarray:
    """RGB uint8 ``HxWx3`` arrays (any sizes) -> float32 ``[N, 3, H, W]``, as the runtime feeds.

    ``runtime.images.to_rgb_array`` makes the arrays from any file or mode (grayscale, RGBA).
    """
    return preprocess(images, preprocessing_of(processor))


def pixel_values(
    processor: Any, images: Sequence[RGBImage], *, device: torch.device | str | None = None
) -> torch.Tensor:
    """:func:`pixel_array` as a float32 tensor, on ``device`` when given."""
    import torch

    tensor = torch.from_numpy(pixel_array(processor, images))
    return tensor if device is None else tensor.to(device)
