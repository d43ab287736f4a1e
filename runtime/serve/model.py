"""``DetectorModel``: a ``kserve.Model`` around ``runtime.Detector``, two ways in, one way out.

- Tensor path: ``images`` FP32 ``[N, 3, H, W]`` (FP16 for an fp16 export) and
  ``orig_target_sizes`` INT64 ``[N, 2]`` as (width, height): the exported graph's own inputs, as
  Triton serves our model repository, so one client works against both.
- Image path: ``image`` BYTES ``[N]``, encoded image files decoded here and preprocessed by
  ``Detector.prepare``, the one preprocessing (EXIF orientation, alpha, 16-bit), under the
  server's pixel limit.

Both answer the graph's outputs, every top-K detection, no threshold: ``labels`` INT64
``[N, K]``, ``boxes`` FP32 ``[N, K, 4]`` (xyxy, pixels of the original image), ``scores`` FP32
``[N, K]``, plus ``class_names`` BYTES ``[N, K]`` (the label map's name of each label). A client
keeps ``scores > threshold`` as ``Detector.predict`` does. Each mistake in a request is an
``InvalidInput`` (HTTP 400) naming the input and the problem.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from PIL import Image

from runtime.detector import Detector
from runtime.images import ImageError, open_image
from runtime.serve.batching import Batcher
from runtime.serve.protocol import input_array
from runtime.sidecar import sidecar_document

__all__ = ["DetectorModel", "RequestTimeout", "ServeLimits"]

TENSOR_INPUTS = ("images", "orig_target_sizes")
IMAGE_INPUT = "image"
_IMAGE_DATATYPES = {np.float32: "FP32", np.float16: "FP16"}


class RequestTimeout(Exception):
    """A request ran past the server's per-request timeout (HTTP 504)."""


@dataclass(frozen=True)
class ServeLimits:
    """Per-request limits: ``max_pixels`` per decoded image, ``timeout_s`` per request."""

    max_pixels: int = 40_000_000
    timeout_s: float = 30.0


def decode_image(data: bytes, index: int, max_pixels: int) -> Image.Image:
    """One encoded image file -> an EXIF-upright, loaded ``PIL.Image`` (any mode; the
    Detector's loader converts modes), refusing more than ``max_pixels`` before decoding."""
    try:
        return open_image(
            data, name=f"input 'image'[{index}]", max_pixels=max_pixels, limit_name="--max-pixels"
        )
    except ImageError as exc:
        raise InvalidInput(str(exc)) from None


class DetectorModel(Model):
    """The served detector (see the module docstring).

    Args:
        name: the model name in ``/v2/models/{name}``.
        detector: the loaded ``Detector`` (its engine does the work).
        batcher: batches concurrent requests in front of ``detector.run``.
        limits: pixel limit and per-request timeout.
    """

    def __init__(
        self, name: str, detector: Detector, batcher: Batcher, limits: ServeLimits
    ) -> None:
        super().__init__(name)
        self.detector, self.batcher, self.limits = detector, batcher, limits
        self.image_datatype = _IMAGE_DATATYPES[detector.image_dtype]
        self.document = sidecar_document(detector.path, detector.metadata)
        self.names = np.array(
            [detector.metadata.id2label.get(i, str(i)) for i in range(self._label_count())],
            dtype=object,
        )
        self.ready = True

    def _label_count(self) -> int:
        return max(self.detector.metadata.id2label, default=-1) + 1

    def get_input_types(self) -> list[dict[str, Any]]:
        height, width = self.detector.metadata.input_size
        return [
            {"name": "images", "datatype": self.image_datatype, "shape": [-1, 3, height, width]},
            {"name": "orig_target_sizes", "datatype": "INT64", "shape": [-1, 2]},
            {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]},
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        k = self.detector.metadata.num_top_queries
        return [
            {"name": "labels", "datatype": "INT64", "shape": [-1, k]},
            {"name": "boxes", "datatype": "FP32", "shape": [-1, k, 4]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, k]},
            {"name": "class_names", "datatype": "BYTES", "shape": [-1, k]},
        ]

    async def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None, **_: Any
    ) -> InferResponse:
        """Validate, prepare (image path) in a thread, run in the batcher, answer."""
        arrays = self._arrays(payload)
        try:
            labels, boxes, scores = await asyncio.wait_for(
                self._infer(arrays), self.limits.timeout_s
            )
        except asyncio.TimeoutError:
            raise RequestTimeout(
                f"request took longer than the server's {self.limits.timeout_s:g} s (--timeout)"
            ) from None
        return self._response(payload, labels, boxes, scores)

    async def _infer(self, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        if IMAGE_INPUT in arrays:
            encoded = arrays[IMAGE_INPUT]
            if encoded.ndim != 1:
                raise InvalidInput(f"input 'image': shape {list(encoded.shape)}, expected [N]")
            if len(encoded) == 0:
                raise InvalidInput("input 'image': empty batch (N = 0)")
            # decoded on the engine's thread when its batch runs (Batcher.submit_lazy)
            return await self.batcher.submit_lazy(len(encoded), lambda: self._prepare(encoded))
        return await self.batcher.submit(self._tensor_feed(arrays))

    def _arrays(self, payload: InferRequest) -> dict[str, np.ndarray]:
        names = [tensor.name for tensor in payload.inputs]
        for name in names:
            if name not in (*TENSOR_INPUTS, IMAGE_INPUT):
                raise InvalidInput(
                    f"unknown input '{name}'; expected 'images' and 'orig_target_sizes' "
                    "(preprocessed tensors) or 'image' (encoded image files)"
                )
        if len(set(names)) != len(names):
            raise InvalidInput(f"inputs {names}: an input is given twice")
        if IMAGE_INPUT in names and len(names) > 1:
            raise InvalidInput("input 'image' goes alone, without 'images'/'orig_target_sizes'")
        if IMAGE_INPUT not in names:
            for name in TENSOR_INPUTS:
                if name not in names:
                    raise InvalidInput(
                        f"missing input '{name}': the tensor path needs 'images' "
                        f"{self.image_datatype} [N, 3, H, W] and 'orig_target_sizes' INT64 [N, 2]"
                    )
        arrays = {}
        for tensor in payload.inputs:
            expected = self._datatype(tensor.name)
            if tensor.datatype != expected:
                raise InvalidInput(
                    f"input '{tensor.name}': datatype {tensor.datatype}, expected {expected}"
                )
            arrays[tensor.name] = input_array(tensor)
        return arrays

    def _datatype(self, name: str) -> str:
        return {"images": self.image_datatype, "orig_target_sizes": "INT64"}.get(name, "BYTES")

    def _tensor_feed(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images, sizes = arrays["images"], arrays["orig_target_sizes"]
        height, width = self.detector.metadata.input_size
        if images.ndim != 4 or images.shape[1:] != (3, height, width):
            raise InvalidInput(
                f"input 'images': shape {list(images.shape)}, expected [N, 3, {height}, {width}]"
            )
        if len(images) == 0:
            raise InvalidInput("input 'images': empty batch (N = 0)")
        if sizes.shape != (len(images), 2):
            raise InvalidInput(
                f"input 'orig_target_sizes': shape {list(sizes.shape)}, expected "
                f"[{len(images)}, 2] (one (width, height) per image)"
            )
        if (sizes <= 0).any():
            raise InvalidInput("input 'orig_target_sizes': sizes must be positive (width, height)")
        if not np.isfinite(images).all():
            raise InvalidInput("input 'images': contains NaN or infinity")
        return {"images": images, "orig_target_sizes": sizes}

    def _prepare(self, encoded: np.ndarray) -> dict[str, np.ndarray]:
        images = [
            decode_image(bytes(data), index, self.limits.max_pixels)
            for index, data in enumerate(encoded)
        ]
        return self.detector.prepare(images)

    def _response(
        self, payload: InferRequest, labels: np.ndarray, boxes: np.ndarray, scores: np.ndarray
    ) -> InferResponse:
        labels = labels.astype(np.int64)
        known = (labels >= 0) & (labels < len(self.names))
        names = np.where(known, self.names[np.clip(labels, 0, len(self.names) - 1)], "")
        names = np.vectorize(lambda n: n.encode(), otypes=[object])(names)
        values = {"labels": labels, "boxes": boxes.astype(np.float32),
                  "scores": scores.astype(np.float32), "class_names": names}  # fmt: skip
        outputs = []
        for spec in self.get_output_types():
            value = values[spec["name"]]
            output = InferOutput(spec["name"], list(value.shape), spec["datatype"])
            output.set_data_from_numpy(value, binary_data=payload.use_binary_outputs)
            outputs.append(output)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )
