"""Export an RT-DETR checkpoint to a verified ONNX model that carries its own label map.

Example:
    ```python
    from export import export_checkpoint

    result = export_checkpoint("runs/exp", "runs/exp/model.onnx", opset=17)
    result.path  # runs/exp/model.onnx, published only after passing verification
    result.report.detections_top_n.agreement  # 1.0
    result.metadata.id2label  # {0: 'circle', 1: 'square', ...}
    ```

The graph contract (input/output names, dtypes, shapes, box format) is in
:mod:`export.contract`. Importing this package is cheap: torch, transformers and onnx are
imported when :func:`export_checkpoint` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from export.errors import ExportError, VerificationError

if TYPE_CHECKING:
    from export.pipeline import ExportResult, VariantResult, export_checkpoint

__all__ = ["ExportError", "ExportResult", "VariantResult", "VerificationError", "export_checkpoint"]

_LAZY = {"ExportResult", "VariantResult", "export_checkpoint"}


def __getattr__(name: str) -> Any:
    # Lazy so that `python -m export` can set OMP_WAIT_POLICY before torch is imported.
    if name in _LAZY:
        from export import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
