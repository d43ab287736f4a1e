"""Export's side of the contract: opsets and the axes marked dynamic when tracing.

The inputs and outputs themselves (names, dtypes, symbolic shapes) are defined once, in
:mod:`runtime.contract`, and re-exported here; ``docs/contract.md`` is the full contract.
"""

from __future__ import annotations

from export.errors import ExportError
from runtime.contract import (
    BATCH_AXIS,
    INPUT_NAMES,
    INPUTS,
    OUTPUT_NAMES,
    OUTPUTS,
    TOP_K_AXIS,
    TensorSpec,
)

__all__ = [
    "BATCH_AXIS",
    "DEFAULT_OPSET",
    "DYNAMIC_AXES",
    "INPUTS",
    "INPUT_NAMES",
    "OUTPUTS",
    "OUTPUT_NAMES",
    "SUPPORTED_OPSETS",
    "TOP_K_AXIS",
    "TensorSpec",
    "check_opset",
]

DEFAULT_OPSET = 17
# The TorchScript exporter needs opset 16 for GridSample (multi-scale deformable attention);
# 16..20 are exported, checked and verified the same way.
SUPPORTED_OPSETS = range(16, 21)


def check_opset(opset: int) -> None:
    """Raise :class:`ExportError` unless ``opset`` is in :data:`SUPPORTED_OPSETS`."""
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(
            f"opset {opset} is not supported: use {SUPPORTED_OPSETS.start}-"
            f"{SUPPORTED_OPSETS.stop - 1} (16 is the first with GridSample, which RT-DETR's "
            f"deformable attention needs; {DEFAULT_OPSET} is the default)"
        )


# Axes named at export: the batch everywhere, the image height and width, and K on the outputs
# (fixed per model, but named so that a client sees ``K`` instead of a generated
# ``TopKscores_dim_1``; its value is the metadata's ``num_top_queries``).
DYNAMIC_AXES: dict[str, dict[int, str]] = {
    "images": {0: BATCH_AXIS, 2: "height", 3: "width"},
    "orig_target_sizes": {0: BATCH_AXIS},
    "labels": {0: BATCH_AXIS, 1: TOP_K_AXIS},
    "boxes": {0: BATCH_AXIS, 1: TOP_K_AXIS},
    "scores": {0: BATCH_AXIS, 1: TOP_K_AXIS},
}
