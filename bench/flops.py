"""Compute efficiency: FLOPs counted from the graph, and this machine's fp32 peak, measured.

``graph_gflops`` runs ONNX shape inference with the batch fixed to 1 and counts the
multiply-adds of every ``Conv``, ``ConvTranspose``, ``MatMul`` and ``Gemm`` (2 FLOPs each; 77%
of ONNX Runtime's kernel time on R50 is convolutions); elementwise ops, softmax, GridSample
and the post-processing are left out, so the figure is a slight undercount. Quantized graphs
are counted on their fp32 source (the same arithmetic, in int8).

``fp32_peak_gflops`` is measured, not looked up: the best of several ``torch.mm`` runs on
2048x2048 float32 matrices with the benchmark's thread count (oneDNN/MKL's sgemm, the
fastest fp32 kernel on the machine). A theoretical peak (clock x FMA units x SIMD width)
needs the sustained clock, which a VM does not reliably expose; sgemm reaches ~90% of it on
current x86 CPUs, so fractions of the measured peak read a little high against theory.
"""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path

import numpy as np

__all__ = ["fp32_peak_gflops", "graph_gflops"]


def _shape(shapes: dict[str, list[int]], name: str) -> list[int] | None:
    dims = shapes.get(name)
    return dims if dims and all(d > 0 for d in dims) else None


def graph_gflops(path: Path, batch: int = 1, axes: dict[str, int] | None = None) -> float:
    """GFLOPs of one forward pass of the ONNX graph at ``batch`` (see the module docstring).

    Args:
        path: the graph.
        batch: the batch size given to the leading symbolic axis of every input.
        axes: sizes of the other symbolic input axes by name; default read from the file's
            rtdetr-deploy metadata (``height``/``width`` = its ``input_size``).
    """
    import onnx

    model = onnx.load(str(path))
    if axes is None:
        axes = {}
        props = {p.key: p.value for p in model.metadata_props}
        if props:
            from runtime.metadata import ModelMetadata

            axes = ModelMetadata.from_props(props, source=str(path)).axis_sizes
    for value in model.graph.input:
        for index, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_param:
                size = batch if index == 0 else axes.get(dim.dim_param)
                if size is not None:
                    dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    flops = 0.0
    for node in inferred.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            out, weight = _shape(shapes, node.output[0]), _shape(shapes, node.input[1])
            if out and weight:  # weight [Cout, Cin/groups, kh, kw]: each output reads Cin/g*k*k
                flops += 2 * np.prod(out) * np.prod(weight[1:])
        elif node.op_type in ("MatMul", "Gemm"):
            a, out = _shape(shapes, node.input[0]), _shape(shapes, node.output[0])
            if a and out:
                transposed = node.op_type == "Gemm" and any(
                    att.name == "transA" and att.i for att in node.attribute
                )
                k = a[-2] if transposed else a[-1]
                flops += 2 * np.prod(out) * k
    return float(flops) / 1e9


@cache
def fp32_peak_gflops(threads: int, size: int = 2048, repeats: int = 10) -> float:
    """Best ``torch.mm`` float32 throughput with ``threads`` threads (see the docstring)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.rand(size, size), torch.rand(size, size)
        torch.mm(a, b)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return 2 * size**3 / best / 1e9
