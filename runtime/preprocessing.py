"""Preprocessing driven by the model metadata: RGB uint8 images -> the ``images`` input.

It reproduces ``RTDetrImageProcessor`` (``AutoImageProcessor.from_pretrained(checkpoint)``)
for the ``Preprocessing`` stored in the ONNX file: resize to (height, width) with the stored
PIL filter (antialiased when downscaling, like the processor), optional rescale and
normalise (fused into one multiply-add, as the processor fuses them), channels first, float32.

Choice of resize, measured on the dev machine's 2 shared CPU cores, one thread, median of 20-60
runs, a 1280x720 RGB image to the default 192x192 input; "diff" is against the processor
(torchvision backend) in 0..255 units:

=================================  =======  ===============  ================================
implementation                     ms       max / mean diff  notes
=================================  =======  ===============  ================================
transformers (torchvision, uint8)  3.7      reference        needs torch
PIL ``Image.resize`` (used here)   3.2      1 / 0.0008       the processor's filter
PIL ``reducing_gap=2.0``           3.0      4 / 0.49         box pre-reduce: another function
cv2 ``INTER_AREA``                 2.4      46 / 1.57        box filter: another function
cv2 ``INTER_LINEAR``               0.1      81 / 3.62        no antialiasing: aliases
=================================  =======  ===============  ================================

Only PIL computes the processor's antialiased triangle filter; the one fast cv2 mode reads 4 of
the ~100 source pixels the filter averages when shrinking 1280x720 to 192x192. So one
implementation serves every input type, and the detections equal the transformers pipeline's.
The whole ``preprocess`` (array -> PIL 0.5 ms, resize, rescale into the batch 0.07 ms) costs
4.0 ms for 1280x720, 1.6 ms for 640x480, 0.8 ms for 320x320 and 0.07 ms for an image already
at the model size (not resized); an RGB ``PIL.Image`` skips the array -> PIL copy. Next to the
default model's ~25 ms (``session.run``, one thread) everything ``Detector`` adds is 0.5% for
192x192 inputs, ~4% for 320x320, ~7% for 640x480 and ~15% for 1280x720 frames: the resize
is the cost, and transformers' own pipeline pays as much.

Against the processor the output differs by one uint8 step (1/255 * rescale_factor, divided
by std when normalising) on 0.1-0.4% of the pixels (0.9% for 1280x720 -> 640x640), where PIL
and torchvision round differently, plus float rounding: mean abs diff <= 4e-5 (0..1 units).

Example:
    >>> import numpy as np
    >>> from runtime.metadata import Preprocessing
    >>> from runtime.preprocessing import preprocess
    >>> image = np.zeros((720, 1280, 3), np.uint8)
    >>> preprocess([image], Preprocessing(height=192, width=192)).shape
    (1, 3, 192, 192)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from runtime.metadata import Preprocessing

__all__ = ["RGBImage", "image_size", "preprocess", "resize"]

RGBImage = np.ndarray | Image.Image


def image_size(image: RGBImage) -> tuple[int, int]:
    """``(height, width)`` of an RGB array or PIL image."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    return image.shape[0], image.shape[1]


def resize(image: RGBImage, pre: Preprocessing) -> np.ndarray:
    """Resize to ``(pre.height, pre.width)`` with ``pre.resample``; returns ``HxWx3`` uint8.

    Args:
        image: an RGB ``HxWx3`` uint8 array or an RGB-mode ``PIL.Image`` (resized directly,
            without the round trip through an array).
        pre: the model's preprocessing.

    An image already at that size, or with ``pre.do_resize`` false, is not resized.
    """
    if isinstance(image, Image.Image) and image.mode != "RGB":
        raise ValueError(
            f"expected an RGB PIL image, got mode {image.mode!r} (runtime.images.to_rgb_array "
            "converts any mode)"
        )
    if not pre.do_resize or image_size(image) == (pre.height, pre.width):
        return np.asarray(image)
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    return np.asarray(pil.resize((pre.width, pre.height), resample=pre.resample))


def _scale_and_offset(pre: Preprocessing) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-channel ``scale`` and ``offset`` with ``x * scale + offset`` = rescale + normalise."""
    factor = pre.rescale_factor if pre.do_rescale else 1.0
    if not pre.do_normalize:
        return np.full((3, 1, 1), factor, dtype=np.float32), None
    std = np.asarray(pre.image_std, dtype=np.float64).reshape(3, 1, 1)
    mean = np.asarray(pre.image_mean, dtype=np.float64).reshape(3, 1, 1)
    return (factor / std).astype(np.float32), (-mean / std).astype(np.float32)


def preprocess(
    images: Sequence[RGBImage], pre: Preprocessing, *, dtype: type[np.floating] = np.float32
) -> np.ndarray:
    """Turn RGB images into the model input ``[N, 3, H, W]``.

    Args:
        images: RGB ``HxWx3`` uint8 arrays (``runtime.images.to_rgb_array`` makes them from
            anything) or RGB-mode PIL images, any sizes.
        pre: the model's preprocessing (``ModelMetadata.preprocessing``).
        dtype: dtype of the result (float16 for fp16 exports).

    Raises:
        ValueError: ``pre.do_resize`` is false and an image is not already at the model size
            (a batch needs one size).
    """
    batch = np.empty((len(images), 3, pre.height, pre.width), dtype=np.float32)
    scale, offset = _scale_and_offset(pre)
    for index, image in enumerate(images):
        resized = resize(image, pre)
        if resized.shape[:2] != (pre.height, pre.width):
            raise ValueError(
                f"image {index}: expected {pre.height}x{pre.width} (the model's input size, "
                f"do_resize is false), got {resized.shape[0]}x{resized.shape[1]}"
            )
        np.multiply(resized.transpose(2, 0, 1), scale, out=batch[index])
        if offset is not None:
            batch[index] += offset
    return batch if dtype == np.float32 else batch.astype(dtype)
