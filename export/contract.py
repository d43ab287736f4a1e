"""The exported model's contract: what every ``.onnx`` file written by ``export`` looks like.

Post-processing is inside the graph (as in the official RT-DETR deploy export), so a client in
any language needs no RT-DETR knowledge: resize and rescale the image as the metadata says,
feed it with the original size, read labelled boxes in pixels of the original image.

Inputs:
    ``images``: float32 ``[N, 3, H, W]``, RGB, preprocessed exactly as the checkpoint's image
    processor does it (resize to the metadata ``input_size``, rescale, optional normalise;
    every parameter is in the metadata). ``N`` is dynamic; ``H`` and ``W`` are dynamic axes in
    the graph too, but the model was trained at ``input_size`` and is verified there.

    ``orig_target_sizes``: int64 ``[N, 2]``, the size of each ORIGINAL image as
    ``(width, height)`` (not ``(height, width)``). Boxes are scaled to it.

Outputs (``K`` = ``num_top_queries`` of the metadata, the model's ``num_queries`` by default):
    ``labels``: int64 ``[N, K]``, class ids; names are in the metadata ``id2label``.

    ``boxes``: float32 ``[N, K, 4]``, ``(x_min, y_min, x_max, y_max)`` in pixels of the original
    image (absolute, not normalised; not clipped to the image).

    ``scores``: float32 ``[N, K]``, sigmoid confidences, sorted in descending order per image.
    There is no score threshold and no NMS: filter with ``scores >= threshold``.

Metadata (ONNX ``metadata_props``, schema in :mod:`runtime.metadata`): ``id2label``,
``input_size``, ``preprocessing``, ``source_checkpoint``, ``opset``, ``toolkit_version``,
``precision`` and ``num_top_queries``.
"""

from __future__ import annotations

from dataclasses import dataclass

from export.errors import ExportError

__all__ = [
    "BATCH_AXIS",
    "DEFAULT_OPSET",
    "DYNAMIC_AXES",
    "INPUTS",
    "INPUT_NAMES",
    "OUTPUTS",
    "OUTPUT_NAMES",
    "SUPPORTED_OPSETS",
    "TensorSpec",
    "check_opset",
]

DEFAULT_OPSET = 17
# The TorchScript exporter needs opset 16 for GridSample (multi-scale deformable attention);
# 16..20 are exported, checked and verified the same way.
SUPPORTED_OPSETS = range(16, 21)

BATCH_AXIS = "batch"


def check_opset(opset: int) -> None:
    """Raise :class:`ExportError` unless ``opset`` is in :data:`SUPPORTED_OPSETS`."""
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(
            f"opset {opset} is not supported: use {SUPPORTED_OPSETS.start}-"
            f"{SUPPORTED_OPSETS.stop - 1} (16 is the first with GridSample, which RT-DETR's "
            f"deformable attention needs; {DEFAULT_OPSET} is the default)"
        )


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, ONNX element type name and symbolic shape."""

    name: str
    dtype: str
    shape: tuple[str | int, ...]
    description: str

    @property
    def rank(self) -> int:
        return len(self.shape)


INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(
        "images",
        "float32",
        (BATCH_AXIS, 3, "height", "width"),
        "preprocessed RGB images (see metadata 'preprocessing')",
    ),
    TensorSpec(
        "orig_target_sizes", "int64", (BATCH_AXIS, 2), "original image sizes as (width, height)"
    ),
)
OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("labels", "int64", (BATCH_AXIS, "K"), "class ids (metadata 'id2label')"),
    TensorSpec(
        "boxes", "float32", (BATCH_AXIS, "K", 4), "xyxy boxes in pixels of the original image"
    ),
    TensorSpec("scores", "float32", (BATCH_AXIS, "K"), "confidences, sorted descending"),
)
INPUT_NAMES: list[str] = [spec.name for spec in INPUTS]
OUTPUT_NAMES: list[str] = [spec.name for spec in OUTPUTS]

# Axes marked dynamic at export: the batch everywhere, and the image height and width.
DYNAMIC_AXES: dict[str, dict[int, str]] = {
    "images": {0: BATCH_AXIS, 2: "height", 3: "width"},
    "orig_target_sizes": {0: BATCH_AXIS},
    "labels": {0: BATCH_AXIS},
    "boxes": {0: BATCH_AXIS},
    "scores": {0: BATCH_AXIS},
}
