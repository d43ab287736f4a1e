"""Turn whatever the caller has into an RGB ``HxWx3`` uint8 array.

One loader for training, export verification, the benchmark and the runtime, so that
grayscale, RGBA, palette and EXIF-rotated files are treated the same everywhere.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "ImageInput", "open_image", "to_rgb_array"]

ImageInput = str | Path | Image.Image | np.ndarray


class ImageError(ValueError):
    """An image that cannot be read or has an unsupported shape; names the file."""


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit (``I;16*``) or 32-bit integer (``I``) grayscale -> 8-bit ``L``, scaled.

    Pillow's ``convert("RGB")`` clips such pixels to 255 instead of scaling them: a 16-bit
    PNG became an all-white image and silently gave 0 detections. Values are taken as
    0..65535 (what PNG and TIFF store) and rounded to 0..255.
    """
    values = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.rint(np.clip(values, 0, 65535) * (255 / 65535)).astype(np.uint8))


def _from_pil(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I"):  # I;16, I;16B, I;16L, I
        image = _high_bit_depth_to_l(image)
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "P", "PA"):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        image = image.convert("RGB")
    return np.array(image)  # a writable copy: torch warns on read-only arrays


def open_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_pixels: int | None = None,
    limit_name: str = "",
) -> Image.Image:
    """Decode an image file (a path, or its bytes) into an EXIF-upright, loaded ``PIL.Image``.

    The one decoder of files, for ``to_rgb_array`` and the server's ``image`` input.

    Args:
        source: the file's path or its encoded bytes.
        name: what the errors call it (default: the path, or "image bytes").
        max_pixels: refuse larger images from their header, before decoding them.
        limit_name: where the limit is set (e.g. a command-line flag), named in that error.

    Raises:
        ImageError: it is not an image Pillow reads, does not decode, or is too large.
    """
    name = name or (str(source) if isinstance(source, (str, Path)) else "image bytes")
    size = f"; {len(source)} bytes" if isinstance(source, bytes) else ""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as pil:
            width, height = pil.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageError(
                    f"{name}: {width}x{height} = {width * height} pixels, more than the "
                    f"limit of {max_pixels}" + (f" ({limit_name})" if limit_name else "")
                )
            pil = ImageOps.exif_transpose(pil)
            pil.load()
            return pil
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(
            f"{name}: image is larger than Pillow's limit of {Image.MAX_IMAGE_PIXELS} "
            "pixels (decompression-bomb protection); if the file is trusted, raise "
            "PIL.Image.MAX_IMAGE_PIXELS"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: cannot decode image (not an image file Pillow can read{size})"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: cannot decode image ({exc}{size})") from None


def to_rgb_array(image: ImageInput, *, bgr: bool = False) -> np.ndarray:
    """Return ``image`` as a contiguous RGB uint8 array of shape ``(H, W, 3)``.

    Args:
        image: a file path, a ``PIL.Image`` (any mode) or a uint8 array ``HxW``, ``HxWx1``,
            ``HxWx3`` or ``HxWx4``.
        bgr: the array is in OpenCV's BGR(A) channel order (ignored for paths and PIL images).

    Raises:
        ImageError: the file is missing or does not decode, or the array has the wrong
            dtype or shape.
    """
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ImageError(f"{path}: no such image file")
        return _from_pil(open_image(path))
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ImageError(f"expected a uint8 image array, got dtype {image.dtype}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise ImageError(
                f"expected an image array of shape HxW, HxWx1, HxWx3 or HxWx4, got {image.shape}"
            )
        if image.shape[2] == 1:
            return np.ascontiguousarray(np.repeat(image, 3, axis=2))
        if bgr:
            image = image[:, :, [2, 1, 0, 3][: image.shape[2]]]
        if image.shape[2] == 4:
            return _from_pil(Image.fromarray(np.ascontiguousarray(image), "RGBA"))
        return np.ascontiguousarray(image)
    raise ImageError(
        "expected an image path, a PIL.Image or an HxWx3 uint8 numpy array, "
        f"got {type(image).__name__}"
    )
