"""Trace :class:`~finetune.postprocess.DeployModel` to ONNX and stamp the metadata into it.

Why ``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter): measured with torch
2.14 on RT-DETR, it writes opsets 16-20 with a dynamic batch (and dynamic H/W), passes
``onnx.checker`` with ``full_check=True`` and matches PyTorch to ~1e-5. The dynamo exporter only
writes opset 18 and silently fixes the batch size, so it is not used.

Why not optimum: ``optimum-onnx`` 0.1.0 (the package holding optimum's ``rt_detr`` ONNX
config since optimum 2.0) pins ``transformers<4.58`` and fails to import with transformers 5,
which this project needs. Its export would also stop at logits and normalised boxes, without
the post-processing this contract puts in the graph.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path
from typing import Any

from export.contract import DYNAMIC_AXES, INPUT_NAMES, OUTPUT_NAMES
from runtime.metadata import ModelMetadata, Preprocessing

__all__ = ["build_metadata", "read_metadata", "toolkit_version", "trace_to_onnx", "write_metadata"]

TRACE_BATCH = 2  # trace with a batch > 1 so that nothing specialises on batch 1


def toolkit_version() -> str:
    """The installed ``rtdetr-deploy`` version, ``0.1.0`` when running from a checkout."""
    try:
        return importlib.metadata.version("rtdetr-deploy")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


def build_metadata(
    loaded: Any,
    *,
    opset: int,
    precision: str = "fp32",
    num_top_queries: int | None = None,
    extra: dict[str, str] | None = None,
) -> ModelMetadata:
    """Metadata from the checkpoint itself: its ``id2label`` and its image processor."""
    config = loaded.model.config
    return ModelMetadata(
        id2label=dict(loaded.id2label),
        preprocessing=Preprocessing.from_processor_config(loaded.processor.to_dict()),
        source_checkpoint=str(Path(loaded.folder).resolve()),
        opset=opset,
        toolkit_version=toolkit_version(),
        precision=precision,
        num_top_queries=int(num_top_queries or getattr(config, "num_queries", 300)),
        # the family (finetune.families): for people and tools; no client needs family code;
        # and its decoder's sampling where the family has the option (e.g. "discrete": no
        # GridSample in the graph)
        extra={
            "model_type": str(config.model_type),
            **_decoder_method(config),
            **(extra or {}),
        },
    )


def _decoder_method(config: Any) -> dict[str, str]:
    """``{"decoder_method": ...}`` for a family that has the option, else empty."""
    from finetune.families import family_of

    if not family_of(config).decoder_methods:
        return {}
    return {"decoder_method": str(getattr(config, "decoder_method", "default"))}


def trace_to_onnx(
    model: Any,
    path: Path,
    *,
    opset: int,
    input_size: tuple[int, int],
    num_top_queries: int | None = None,
) -> None:
    """Export ``DeployModel(model)`` to ``path`` (the contract of :mod:`export.contract`).

    Args:
        model: An ``RTDetrForObjectDetection`` (or another family of
            :mod:`export.graph_fixes`) in eval mode.
        path: Where to write the graph (a temporary name: the caller verifies, then renames).
        opset: ONNX opset (see ``export.contract.SUPPORTED_OPSETS``).
        input_size: (height, width) of the traced example input.
        num_top_queries: ``K`` of the outputs; the model's ``num_queries`` by default.
    """
    import torch

    from export.graph_fixes import export_patches
    from finetune.postprocess import DeployModel

    deploy = DeployModel(model, num_top_queries).eval()
    height, width = input_size
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(TRACE_BATCH, 3, height, width, generator=generator)
    sizes = torch.tensor([[640, 480], [width, height]], dtype=torch.int64)
    # Family-specific export patches (export.graph_fixes), undone when tracing ends.
    with warnings.catch_warnings(), torch.no_grad(), export_patches(model):
        # TracerWarnings about Python values in the model's code are expected: the graph is
        # verified against PyTorch at several batch sizes afterwards.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            deploy,
            (images, sizes),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes=DYNAMIC_AXES,
            do_constant_folding=True,
        )


def write_metadata(path: Path, metadata: ModelMetadata) -> None:
    """Replace the ``metadata_props`` of the ONNX file at ``path`` with ``metadata``."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.to_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def read_metadata(path: Path) -> ModelMetadata:
    """Parse the metadata of the ONNX file at ``path`` (as the runtime does)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return ModelMetadata.from_props(props, source=str(path))
