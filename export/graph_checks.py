"""Structural checks of an exported graph, before any of it is run.

``onnx.checker`` with ``full_check=True`` and the graph's inputs and outputs against
:mod:`export.contract` (:func:`check_graph`: every file), and TensorRT's int8 shape
(:func:`symmetric_problems`: ``model.int8-sym.onnx``). Parity with PyTorch is
:mod:`export.verify`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.contract import INPUTS, OUTPUTS, TOP_K_AXIS, TensorSpec
from runtime.errors import first_line

__all__ = ["check_graph", "symmetric_problems"]


def _contract_problems(graph_values: Sequence[Any], specs: Sequence[TensorSpec]) -> list[str]:
    import onnx

    problems = []
    names = [v.name for v in graph_values]
    if names != [s.name for s in specs]:
        return [f"expected {[s.name for s in specs]}, graph has {names}"]
    for value, spec in zip(graph_values, specs, strict=True):
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        dims = list(tensor.shape.dim)
        if dtype != spec.dtype:
            problems.append(f"{spec.name}: dtype {dtype}, contract says {spec.dtype}")
        if len(dims) != spec.rank:
            problems.append(f"{spec.name}: rank {len(dims)}, contract says {spec.rank}")
        elif not dims[0].dim_param:
            problems.append(f"{spec.name}: batch axis is fixed to {dims[0].dim_value}")
        elif TOP_K_AXIS in spec.shape and dims[1].dim_param != TOP_K_AXIS:
            problems.append(f"{spec.name}: axis 1 is not named {TOP_K_AXIS!r}")
    return problems


def check_graph(path: Path) -> list[str]:
    """``onnx.checker`` (full check) and the contract; returns the problems found."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return [f"onnx.checker: {first_line(exc)}"]
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    return _contract_problems(inputs, INPUTS) + _contract_problems(graph.output, OUTPUTS)


def symmetric_problems(path: Path) -> list[str]:
    """Why the graph at ``path`` is not shaped for TensorRT's int8: TensorRT takes only
    symmetric quantization, so every QuantizeLinear/DequantizeLinear needs a signed int8
    zero point of 0 (an absent zero point is uint8 0 by the ONNX spec: also refused)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name: i for i in graph.initializer}
    problems, count = [], 0
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        count += 1
        zero = initializers.get(node.input[2]) if len(node.input) > 2 else None
        if zero is None:
            problems.append(f"{node.name}: no int8 zero point")
            continue
        if zero.data_type != onnx.TensorProto.INT8 or numpy_helper.to_array(zero).any():
            problems.append(f"{node.name}: zero point is not int8 0")
    if not count:
        problems.append("no QuantizeLinear/DequantizeLinear node: not an int8 QDQ graph")
    return problems[:5] + ([f"... {len(problems) - 5} more"] if len(problems) > 5 else [])
