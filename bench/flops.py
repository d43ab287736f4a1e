"""Compute efficiency: FLOPs counted from the graph, and this machine's fp32/int8 peaks, measured.

``graph_gflops`` runs ONNX shape inference with the batch fixed to 1 and counts the
multiply-adds of every ``Conv``, ``ConvTranspose``, ``MatMul`` and ``Gemm`` (2 FLOPs each; 77%
of ONNX Runtime's kernel time on R50 is convolutions); elementwise ops, softmax, GridSample
and the post-processing are left out, so the figure is a slight undercount. Quantized graphs
are counted on their fp32 source (the same arithmetic, in int8).

The peaks are measured, not looked up (a theoretical ISA x clock bound needs the sustained
clock, which a VM does not reliably expose): ``peak_kernels`` gives the GEMMs of each precision
at the benchmark's thread count, fp32 ``torch.mm`` (oneDNN/MKL sgemm) and int8
``torch._int_mm`` (s8 x s8 -> s32) and ONNX Runtime ``MatMulInteger`` (u8 x s8 -> s32, MLAS:
the kernel family its int8 QDQ graphs run), each at the sides of ``PEAK_SIZES``, and
``bench.test_real_sizes`` runs them in the SAME interleaved rounds as the rows, so that a slow
spell of a shared machine lands on the peak as on the rows. Each round runs each GEMM several
times and times every GEMM by itself (``PeakKernel.call``), with the rows' clock
(``time.perf_counter`` around one call); the peak is the best single GEMM of the fastest
kernel (``peak_gflops``). A row's rate is its p50, so a correct row cannot exceed its peak. A
row that does is a wrong measurement: ``percent_of_peak`` refuses it (:class:`ImpossibleFigure`)
rather than print it.

Why short GEMMs timed one by one: the peak was one 2048² GEMM per round, best of 3 rounds
(~0.1 s idle). Under time-slicing (load 15 on 2 cores) every such call was preempted while a
tiny row of a few ms ran inside one slice: a row came out at 52 GFLOP/s against a "peak" of
31. Measured here (Intel Xeon Emerald Rapids, 2 threads, load 8-9), best single call: 2048²
25 GFLOP/s, 1024² 17, 512² 218, 256² 271; a GEMM as short as a row gets the same chances of
an undisturbed slice as the row (``tests/test_bench_flops.py`` simulates it). Earlier: fp32
rows at 109-122% of a peak measured once, alone, after the rows (147 GFLOP/s there, 185-194
before), and int8 rows as a % of the fp32 peak (178-303%). An int8 row is divided by the int8
peak (its float parts run slower than that, so it reads low).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import partial
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

# Square GEMM side -> GEMMs per round, each timed alone: 256² is 0.12 ms and 1024² ~10 ms at
# 2 threads idle, shorter than a scheduler slice or a tiny row; 1024² for a large kernel's rate
# (~6 GFLOP per round and precision, a third of the former single 2048² GEMM).
PEAK_SIZES = {256: 32, 512: 8, 1024: 2}


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
    """One GEMM whose best throughput bounds a precision: ``gemm()`` does ``flops`` FLOPs.
    ``call()`` (what the interleaved rounds run) does it ``repeats`` times and appends each
    one's seconds to ``samples`` (see the module docstring)."""

    key: str
    precision: str  # "fp32" or "int8"
    label: str
    flops: float
    gemm: Callable[[], object]
    repeats: int = 1
    samples: list[float] = field(default_factory=list, compare=False, repr=False)

    def call(self) -> object:
        """Run the GEMM ``repeats`` times, each timed alone; the last product."""
        product = None
        for _ in range(self.repeats):
            start = time.perf_counter()
            product = self.gemm()
            self.samples.append(time.perf_counter() - start)
        return product


def _torch_kernels(sizes: dict[int, int]) -> list[PeakKernel]:
    import torch

    generator = torch.Generator().manual_seed(0)
    kernels = []
    for size, repeats in sizes.items():
        a, b = (torch.rand(size, size, generator=generator) for _ in range(2))
        label = f"torch.mm fp32 {size}²"
        gemm = partial(torch.mm, a, b)
        kernels.append(
            PeakKernel(f"peak-fp32-torch-{size}", "fp32", label, 2.0 * size**3, gemm, repeats)
        )
    try:
        torch._int_mm(*(torch.zeros(32, 32, dtype=torch.int8) for _ in range(2)))
    except (RuntimeError, AttributeError, NotImplementedError):
        return kernels  # no int8 GEMM in this torch build on this device
    for size, repeats in sizes.items():
        qa, qb = (torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator)
                  for _ in range(2))  # fmt: skip
        label = f"torch._int_mm s8s8 {size}²"
        gemm = partial(torch._int_mm, qa, qb)
        kernels.append(
            PeakKernel(f"peak-int8-torch-{size}", "int8", label, 2.0 * size**3, gemm, repeats)
        )
    return kernels


def _onnxruntime_kernel(size: int, repeats: int, threads: int) -> PeakKernel:
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
    return PeakKernel(f"peak-int8-onnxruntime-{size}", "int8", label, 2.0 * size**3,
                      lambda: session.run(None, feed), repeats)  # fmt: skip


def peak_kernels(
    threads: int,
    sizes: dict[int, int] | None = None,
    precisions: Collection[str] = ("fp32", "int8"),
) -> dict[str, PeakKernel]:
    """The GEMMs timed beside the rows (see the module docstring), by key, at the sides and
    repeats of ``sizes`` (default ``PEAK_SIZES``), for the ``precisions`` some row has
    (``--fast`` has no int8 real-size row: its int8 GEMMs would be 2/3 of the peaks' time for
    nothing). torch runs at ``torch.get_num_threads()`` (the suite sets it to ``--threads``),
    ONNX Runtime at ``threads`` (spinning off, as the rows)."""
    sizes = PEAK_SIZES if sizes is None else sizes
    kernels = _torch_kernels(sizes)
    if "int8" in precisions:
        kernels += [_onnxruntime_kernel(size, n, threads) for size, n in sizes.items()]
    return {kernel.key: kernel for kernel in kernels if kernel.precision in precisions}


def peak_gflops(kernels: dict[str, PeakKernel]) -> dict[str, tuple[float, str]]:
    """Per precision, the best throughput (GFLOP/s or GOP/s) of any single GEMM its kernels
    timed (``PeakKernel.samples``) and the kernel that reached it, with how many GEMMs it
    timed."""
    best: dict[str, tuple[float, str]] = {}
    for kernel in kernels.values():
        if not kernel.samples:
            continue
        rate = kernel.flops / min(kernel.samples) / 1e9
        if rate > best.get(kernel.precision, (0.0, ""))[0]:
            label = f"{kernel.label}, best of {len(kernel.samples)} GEMMs timed one by one"
            best[kernel.precision] = (rate, label)
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
