"""``Detector``: an exported RT-DETR ONNX model behind one call, no torch.

``detector(image)`` = :meth:`Detector.prepare` (decode, preprocess) -> :meth:`Detector.run`
(``session.run`` only: the graph does RT-DETR's post-processing) -> :meth:`Detector.decode`
(threshold, label names). The benchmark times the three steps separately.

Example:
    >>> from runtime import Detector
    >>> detector = Detector("runs/exp/model.onnx")  # doctest: +SKIP
    >>> detector.providers  # doctest: +SKIP
    ['CPUExecutionProvider']
    >>> detections = detector("image.jpg", threshold=0.5)  # doctest: +SKIP
    >>> detections.xyxy, detections.data["class_name"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, overload

import numpy as np
from PIL import Image

from runtime.detections import RawDetections
from runtime.images import ImageInput, to_rgb_array
from runtime.metadata import ModelMetadata
from runtime.preprocessing import RGBImage, image_size, preprocess
from runtime.providers import ProviderSpec
from runtime.session import open_model

if TYPE_CHECKING:
    import supervision as sv

    from runtime.engines import Engine

__all__ = ["Detector"]

Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]
_EXPECTED = "an image path, a PIL.Image or an HxWx3 uint8 numpy array (or a list of them)"


def _is_single(image: object) -> bool:
    if isinstance(image, np.ndarray):
        return image.ndim in (2, 3)
    return isinstance(image, (str, Path, Image.Image))


def _as_list(images: ImageInput | Sequence[ImageInput]) -> tuple[list[ImageInput], bool]:
    """``(images as a list, whether a list was given)``; ``ValueError`` for anything else."""
    if _is_single(images):
        return [images], False  # type: ignore[list-item]
    if isinstance(images, (list, tuple)):
        for index, image in enumerate(images):
            if not _is_single(image):
                raise ValueError(f"images[{index}]: expected {_EXPECTED}, got {_describe(image)}")
        return list(images), True
    hint = "; pass a list of HxWx3 arrays for a batch" if isinstance(images, np.ndarray) else ""
    raise ValueError(f"expected {_EXPECTED}, got {_describe(images)}{hint}")


def _rgb_pil_or_array(image: ImageInput, bgr: bool) -> RGBImage:
    if isinstance(image, Image.Image) and image.mode == "RGB":
        return image
    return to_rgb_array(image, bgr=bgr)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.ndim}-D array of shape {value.shape}"
    return type(value).__name__


class Detector:
    """Run an exported RT-DETR model (``python -m export``) with onnxruntime or OpenVINO.

    Args:
        model: path of the ``.onnx`` file written by ``export`` (label map and preprocessing
            are read from its metadata).
        providers: execution providers, e.g. ``["cuda", "cpu"]`` or ORT names; ``None``
            prefers TensorRT > CUDA > CPU among those onnxruntime offers.
        threads: ``intra_op_num_threads`` (``None``: one per physical core).
        strict: raise :class:`~runtime.errors.ProviderError` instead of warning when a
            requested provider is not in use.
        spinning: let onnxruntime's threads busy-wait between calls (lower latency, burns
            CPU); off by default.
        backend: the engine (:mod:`runtime.engines`): ``"onnxruntime"`` (default) or
            ``"openvino"`` (the ``[openvino]`` extra; CPU, ``providers`` None or ``["cpu"]``).
            The preprocessing and the outputs are the same for both.

    Attributes:
        path: the model file.
        metadata: its :class:`~runtime.metadata.ModelMetadata`.
        providers: the execution providers actually in use (``session.get_providers()``).
        session: the engine session (``onnxruntime.InferenceSession`` or
            :class:`~runtime.engines.OpenVinoSession`).
        backend: ``"onnxruntime"`` or ``"openvino"``.

    The instance holds no per-call state: one detector can serve many threads.

    Raises:
        FileNotFoundError: no file at ``model``.
        ModelLoadError: not an ONNX model, or not with the exported contract.
        MetadataError: an ONNX model without rtdetr-deploy metadata.
        ProviderError: ``strict`` and a requested provider is not in use.
        MissingExtraError: ``backend="openvino"`` without OpenVINO installed.

    Example:
        >>> detector = Detector("model.onnx", providers=["cpu"], threads=2)  # doctest: +SKIP
        >>> detections = detector(frame, threshold=0.4, bgr=True)  # doctest: +SKIP
        >>> batch = detector(["a.jpg", "b.jpg"])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | Path,
        providers: Sequence[ProviderSpec] | None = None,
        threads: int | None = None,
        strict: bool = False,
        *,
        spinning: bool = False,
        backend: str = "onnxruntime",
    ) -> None:
        opened = open_model(
            model, providers, threads=threads, spinning=spinning, strict=strict, backend=backend
        )
        self.path = Path(model)
        self.backend = opened.backend
        self.session: Engine = opened.session
        self.metadata: ModelMetadata = opened.metadata
        self.providers: list[str] = opened.providers
        self._image_dtype = opened.image_dtype
        self._max_batch = opened.max_batch

    def __repr__(self) -> str:
        height, width = self.metadata.input_size
        return (
            f"Detector({str(self.path)!r}, backend={self.backend!r}, providers={self.providers}, "
            f"input={height}x{width}, classes={len(self.metadata.id2label)})"
        )

    @property
    def image_dtype(self) -> type[np.floating]:
        """numpy dtype of the graph's ``images`` input (float16 for an fp16 export)."""
        return self._image_dtype

    @property
    def class_names(self) -> list[str]:
        """Label names in class-id order."""
        return self.metadata.class_names

    @overload
    def __call__(
        self, images: ImageInput, threshold: float = ..., *, bgr: bool = ...
    ) -> sv.Detections: ...

    @overload
    def __call__(
        self, images: Sequence[ImageInput], threshold: float = ..., *, bgr: bool = ...
    ) -> list[sv.Detections]: ...

    def __call__(
        self,
        images: ImageInput | Sequence[ImageInput],
        threshold: float = 0.5,
        *,
        bgr: bool = False,
    ) -> sv.Detections | list[sv.Detections]:
        """Detect objects; one image -> ``sv.Detections``, a list -> a list (one batch).

        Args:
            images: a path, a ``PIL.Image`` or an ``HxW[x1|3|4]`` uint8 array (RGB unless
                ``bgr``), or a list of them.
            threshold: keep detections with a score above it.
            bgr: arrays are in OpenCV's BGR order (e.g. ``cv2.imread`` or video frames).
        """
        items, is_list = _as_list(images)
        results = [raw.to_supervision() for raw in self._predict(items, threshold, bgr)]
        return results if is_list else results[0]

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        threshold: float = 0.5,
        *,
        bgr: bool = False,
    ) -> list[RawDetections]:
        """Like calling the detector, but returns :class:`RawDetections` (numpy only), always
        a list (one entry per image)."""
        items, _ = _as_list(images)
        return self._predict(items, threshold, bgr)

    def _predict(self, items: list[ImageInput], threshold: float, bgr: bool) -> list[RawDetections]:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"expected a threshold between 0 and 1, got {threshold}")
        if not items:
            return []
        feed = self._prepare(items, bgr)
        return self.decode(self.run(feed), feed["orig_target_sizes"], threshold)

    def prepare(
        self, images: ImageInput | Sequence[ImageInput], *, bgr: bool = False
    ) -> dict[str, np.ndarray]:
        """Decode and preprocess into the graph's inputs ``{"images", "orig_target_sizes"}``.

        ``orig_target_sizes`` is int64 ``[N, 2]`` as (width, height).
        """
        items, _ = _as_list(images)
        return self._prepare(items, bgr)

    def _prepare(self, items: list[ImageInput], bgr: bool) -> dict[str, np.ndarray]:
        # RGB PIL images are resized as they are; everything else goes through the one loader.
        images = [_rgb_pil_or_array(item, bgr) for item in items]
        sizes = np.array([image_size(image)[::-1] for image in images], dtype=np.int64)
        batch = preprocess(images, self.metadata.preprocessing, dtype=self._image_dtype)
        return {"images": batch, "orig_target_sizes": sizes}

    def run(self, feed: dict[str, np.ndarray]) -> Outputs:
        """``session.run`` only: ``(labels [N, K], boxes [N, K, 4], scores [N, K])``.

        A graph exported with a fixed batch size is run in chunks of that size.
        """
        count = len(feed["images"])
        step = self._max_batch or count
        chunks = []
        for start in range(0, count, step):
            part = {name: value[start : start + step] for name, value in feed.items()}
            chunks.append(self.session.run(["labels", "boxes", "scores"], part))
        if len(chunks) == 1:
            labels, boxes, scores = chunks[0]
            return labels, boxes, scores
        labels, boxes, scores = (np.concatenate(parts) for parts in zip(*chunks, strict=True))
        return labels, boxes, scores

    def decode(
        self, outputs: Outputs, orig_target_sizes: np.ndarray, threshold: float = 0.5
    ) -> list[RawDetections]:
        """Keep scores above ``threshold`` and attach label names, per image."""
        labels, boxes, scores = outputs
        id2label = self.metadata.id2label
        results = []
        for index, (width, height) in enumerate(orig_target_sizes):
            keep = scores[index] > threshold
            class_id = labels[index][keep].astype(np.int64)
            names = [id2label.get(int(c), str(int(c))) for c in class_id]
            results.append(
                RawDetections(
                    xyxy=boxes[index][keep].astype(np.float32),
                    confidence=scores[index][keep].astype(np.float32),
                    class_id=class_id,
                    class_name=np.array(names, dtype=str),
                    image_size=(int(height), int(width)),
                )
            )
        return results
