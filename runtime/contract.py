"""The exported graph's inputs and outputs: one definition for export, runtime and the sidecar.

Post-processing is inside the graph (as in the official RT-DETR deploy export), so a client in
any language needs no RT-DETR knowledge: preprocess the image as the metadata says, feed it with
the original size, read labelled boxes in pixels of the original image. ``docs/contract.md``
is the full text for clients outside Python.

Symbolic axes: ``batch`` (dynamic), ``height``/``width`` (dynamic in the graph, but the model is
trained and verified at the metadata's ``input_size``) and ``K`` (``num_top_queries``, fixed
per model; named ``K`` in the graph so that clients see what it is). This module is stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BATCH_AXIS",
    "INPUTS",
    "INPUT_NAMES",
    "OUTPUTS",
    "OUTPUT_NAMES",
    "TOP_K_AXIS",
    "TensorSpec",
]

BATCH_AXIS = "batch"
TOP_K_AXIS = "K"


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

    def resolved_shape(self, sizes: dict[str, int]) -> list[str | int]:
        """The shape with the symbolic axes named in ``sizes`` replaced by their values."""
        return [sizes.get(dim, dim) if isinstance(dim, str) else dim for dim in self.shape]


INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(
        "images",
        "float32",
        (BATCH_AXIS, 3, "height", "width"),
        "RGB images, NCHW, preprocessed as the metadata 'preprocessing' says",
    ),
    TensorSpec(
        "orig_target_sizes",
        "int64",
        (BATCH_AXIS, 2),
        "size of each original image as (width, height), after EXIF orientation",
    ),
)
OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("labels", "int64", (BATCH_AXIS, TOP_K_AXIS), "class ids; names in 'id2label'"),
    TensorSpec(
        "boxes",
        "float32",
        (BATCH_AXIS, TOP_K_AXIS, 4),
        "(x_min, y_min, x_max, y_max) in pixels of the original image, not clipped",
    ),
    TensorSpec(
        "scores",
        "float32",
        (BATCH_AXIS, TOP_K_AXIS),
        "sigmoid confidences, sorted descending; no threshold, no NMS",
    ),
)
INPUT_NAMES: list[str] = [spec.name for spec in INPUTS]
OUTPUT_NAMES: list[str] = [spec.name for spec in OUTPUTS]
