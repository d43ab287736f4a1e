"""Compute efficiency: FLOPs counted from the graph, and this machine's fp32/int8 peaks, measured.

``graph_gflops`` runs ONNX shape inference with the batch fixed to 1 and counts the
multiply-adds of every ``Conv``, ``ConvTranspose``, ``MatMul`` and ``Gemm`` (2 FLOPs each; 77%
of ONNX Runtime's kernel time on R50 is convolutions); elementwise ops, softmax, GridSample
and the post-processing are left out, so the figure is a slight undercount. Quantized graphs
are counted on their fp32 source (the same arithmetic, in int8).

The peaks are measured, not looked up (a theoretical ISA x clock bound needs the sustained
clock, which a VM does not reliably expose): ``peak_kernels`` gives the fastest GEMM of each
precision on 2048x2048 matrices at the benchmark's thread count, fp32 ``torch.mm``
(oneDNN/MKL sgemm) and int8 ``torch._int_mm`` (s8 x s8 -> s32) and ONNX Runtime
``MatMulInteger`` (u8 x s8 -> s32, MLAS: the kernel family its int8 QDQ graphs run), and
``bench.test_real_sizes`` times them in the SAME interleaved rounds as the rows, so that a
slow spell of a shared machine lands on the peak as on the rows. The peak is the best round
after warm-up (``peak_gflops``); a row's rate is its p50, so a correct row cannot exceed its
peak. A row that does is a wrong measurement: ``percent_of_peak`` refuses it
(:class:`ImpossibleFigure`) rather than print it. Why: one run printed fp32 rows at 109-122%
of a peak measured once, alone, after the rows (147 GFLOP/s there, 185-194 before), and int8
rows as a % of the fp32 peak (178-303%). An int8 row is divided by the int8 peak (its float
parts run slower than that, so it reads low).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ImpossibleFigure",
    "PeakKernel",
    "graph_gflops",
    "peak_gflops",
    "peak_kernels",
    "peak_of",
    "percent_of_peak",
]

PEAK_SIZE = 2048  # square GEMM: large enough to run at the kernel's full rate


def _shape(shapes: dict[str, list[int]], name: str) -> list[int] | None:
    dims = shapes.get(name)
    return dims if dims and all(d > 0 for d in dims) else None


_COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _measured_shapes(model: Any, names: list[str]) -> dict[str, list[int]]:
    """Shapes of the tensors ``names`` from one ONNX Runtime run on zeros (the input axes
    already fixed in ``model``). Static inference stops where a shape depends on computed
    values: HGNetV2's stem pads by computed amounts, so D-FINE's and DEIMv2's graphs lost every
    shape after their first convolution and counted 0.0 GFLOPs."""
    import onnx
    import onnxruntime as ort

    from runtime.session import session_options

    graph = onnx.ModelProto()
    graph.CopyFrom(model)
    initializers = {i.name for i in graph.graph.initializer}
    wanted = [n for n in names if n not in initializers]
    graph.graph.output.extend(onnx.ValueInfoProto(name=name) for name in wanted)
    session = ort.InferenceSession(
        graph.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"]
    )
    feed = {}
    for value in session.get_inputs():
        dtype = np.int64 if "int64" in value.type else np.float32
        feed[value.name] = np.ones([d if isinstance(d, int) else 1 for d in value.shape], dtype)
    outputs = session.run(wanted, feed)
    return {name: list(array.shape) for name, array in zip(wanted, outputs, strict=True)}


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
    counted = [n for n in inferred.graph.node if n.op_type in _COUNTED]
    unknown = {name for n in counted for name in (n.input[0], n.input[1], n.output[0])
               if not _shape(shapes, name)}  # fmt: skip
    if unknown:
        shapes.update(_measured_shapes(model, sorted(unknown)))
    flops = 0.0
    for node in inferred.graph.node:
        if node.op_type in _COUNTED[:2]:
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


class ImpossibleFigure(ValueError):
    """A rate above the measured peak of its precision: the measurement is wrong."""


@dataclass(frozen=True)
class PeakKernel:
    """One GEMM whose best throughput bounds a precision: ``call()`` does ``flops`` FLOPs."""

    key: str
    precision: str  # "fp32" or "int8"
    label: str
    flops: float
    call: Callable[[], object]


def _torch_kernels(size: int) -> list[PeakKernel]:
    import torch

    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(size, size, generator=generator), torch.rand(size, size, generator=generator)
    flops = 2.0 * size**3
    kernels = [PeakKernel("peak-fp32-torch", "fp32", f"torch.mm fp32 {size}²", flops,
                          lambda: torch.mm(a, b))]  # fmt: skip
    qa = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator)
    qb = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator)
    try:
        torch._int_mm(qa[:32, :32], qb[:32, :32])
    except (RuntimeError, AttributeError, NotImplementedError):
        return kernels  # no int8 GEMM in this torch build on this device
    label = f"torch._int_mm s8s8 {size}²"
    kernels.append(PeakKernel("peak-int8-torch", "int8", label, flops,
                              lambda: torch._int_mm(qa, qb)))  # fmt: skip
    return kernels


def _onnxruntime_kernel(size: int, threads: int) -> PeakKernel:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from runtime.session import session_options

    node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
    graph = helper.make_graph(
        [node],
        "int8_peak",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [size, size]),
         helper.make_tensor_value_info("B", TensorProto.INT8, [size, size])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [size, size])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(
        model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    feed = {"A": rng.integers(0, 256, (size, size), dtype=np.uint8),
            "B": rng.integers(-128, 128, (size, size), dtype=np.int8)}  # fmt: skip
    label = f"onnxruntime MatMulInteger u8s8 {size}²"
    return PeakKernel("peak-int8-onnxruntime", "int8", label, 2.0 * size**3,
                      lambda: session.run(None, feed))  # fmt: skip


def peak_kernels(
    threads: int, size: int = PEAK_SIZE, precisions: Collection[str] = ("fp32", "int8")
) -> dict[str, PeakKernel]:
    """The GEMMs timed beside the rows (see the module docstring), by key, for the
    ``precisions`` some row has (``--fast`` has no int8 real-size row: its two int8 GEMMs
    would be 2/3 of the peaks' time for nothing). torch runs at ``torch.get_num_threads()``
    (the suite sets it to ``--threads``), ONNX Runtime at ``threads`` (spinning off, as the
    rows)."""
    kernels = _torch_kernels(size)
    if "int8" in precisions:
        kernels.append(_onnxruntime_kernel(size, threads))
    return {kernel.key: kernel for kernel in kernels if kernel.precision in precisions}


def peak_gflops(
    kernels: dict[str, PeakKernel], times: dict[str, Sequence[float]]
) -> dict[str, tuple[float, str]]:
    """Per precision, the best throughput (GFLOP/s or GOP/s) over its kernels' timed rounds
    (after warm-up) and the kernel that reached it."""
    best: dict[str, tuple[float, str]] = {}
    for key, kernel in kernels.items():
        if not times.get(key):
            continue
        rate = kernel.flops / min(times[key]) / 1e9
        if rate > best.get(kernel.precision, (0.0, ""))[0]:
            best[kernel.precision] = (rate, kernel.label)
    return best


def peak_of(precision: str, peaks: dict[str, tuple[float, str]]) -> tuple[float | None, str | None]:
    """The peak a row of ``precision`` is divided by, and its kernel: its OWN precision's
    (an int8 row against the fp32 peak read 178-303%); none measured, no percentage."""
    peak, kernel = peaks.get(precision, (None, None))
    return peak, kernel


def percent_of_peak(rate: float, peak: float) -> float:
    """``rate`` as a % of ``peak``; :class:`ImpossibleFigure` above 100% (a wrong measurement:
    a p50 cannot beat the best round of the fastest kernel of its precision)."""
    if not peak > 0:
        raise ImpossibleFigure(f"peak {peak} GFLOP/s: not a measured peak")
    percent = rate / peak * 100
    if percent > 100:
        raise ImpossibleFigure(
            f"{rate:.0f} GFLOP/s is {percent:.0f}% of the measured peak {peak:.0f}: the "
            "measurement is wrong (not printed)"
        )
    return percent
