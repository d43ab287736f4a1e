"""bench.flops: FLOPs counted from a graph, and the measured peak a row's rate is divided by.

The peak's timing is checked on a simulated time-sliced machine (an injected clock): no
wall-clock figure is asserted here.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.unit


def _save(graph: object, folder: Path) -> Path:
    import onnx
    from onnx import helper

    path = folder / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_graph_flops_count_conv_and_matmul(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    from bench.flops import graph_gflops

    weight = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")  # 8 out, 3x3
    matrix = numpy_helper.from_array(np.zeros((8, 5), np.float32), "m")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),  # 8x16x16 out
            helper.make_node("Transpose", ["y"], ["t"], perm=[0, 2, 3, 1]),  # N,16,16,8
            helper.make_node("MatMul", ["t", "m"], ["z"]),  # N,16,16,5
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [weight, matrix],
    )
    path = _save(graph, tmp_path)
    conv = 2 * (8 * 16 * 16) * (3 * 3 * 3)
    matmul = 2 * (16 * 16 * 5) * 8
    assert graph_gflops(path) * 1e9 == pytest.approx(conv + matmul)
    assert graph_gflops(path, batch=2) * 1e9 == pytest.approx(2 * (conv + matmul))


def test_graph_flops_measure_shapes_that_static_inference_cannot_know(tmp_path: Path) -> None:
    """A Pad by computed amounts (HGNetV2's stem does this) hides every later shape from ONNX
    shape inference; graph_gflops measures them with one run instead of counting 0."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from bench.flops import graph_gflops

    weight = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    mask = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "mask")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMin", ["x"], ["low"], keepdims=0),  # 1.0 on the ones fed
            helper.make_node("Cast", ["low"], ["one"], to=TensorProto.INT64),
            helper.make_node("Mul", ["mask", "one"], ["pads"]),  # a value, not a shape
            helper.make_node("Pad", ["x", "pads"], ["padded"]),  # 16x16 -> 18x18, unknown
            helper.make_node("Conv", ["padded", "w"], ["y"], pads=[1, 1, 1, 1]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight, mask],
    )
    path = _save(graph, tmp_path)
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)), data_prop=True)
    padded = next(v for v in inferred.graph.value_info if v.name == "padded")
    assert not padded.type.tensor_type.shape.dim[2].HasField("dim_value")  # statically unknown
    assert graph_gflops(path) * 1e9 == pytest.approx(2 * (8 * 18 * 18) * (3 * 3 * 3))


def test_percent_of_peak_refuses_a_figure_above_100() -> None:
    from bench.flops import ImpossibleFigure, percent_of_peak

    assert percent_of_peak(50.0, 200.0) == pytest.approx(25.0)
    assert percent_of_peak(200.0, 200.0) == pytest.approx(100.0)
    with pytest.raises(ImpossibleFigure, match="110% of the measured peak 200"):
        percent_of_peak(220.0, 200.0)
    with pytest.raises(ImpossibleFigure):
        percent_of_peak(10.0, 0.0)  # no peak measured: no percentage either


def test_peak_is_the_best_single_gemm_of_the_fastest_kernel_per_precision() -> None:
    from bench.flops import PeakKernel, peak_gflops

    def kernel(key: str, precision: str, samples: list[float]) -> PeakKernel:
        return PeakKernel(key, precision, key, 2e9, lambda: None, samples=samples)

    kernels = {"f": kernel("f", "fp32", [0.04, 0.02, 0.05]),
               "i1": kernel("i1", "int8", [0.01, 0.02]),
               "i2": kernel("i2", "int8", [0.004, 0.009]),
               "never-run": kernel("never-run", "int8", [])}  # fmt: skip
    assert peak_gflops(kernels) == {
        "fp32": (pytest.approx(100.0), "f, best of 3 GEMMs timed one by one"),
        "int8": (pytest.approx(500.0), "i2, best of 2 GEMMs timed one by one"),
    }


def test_peak_kernels_compute_the_gemm_they_are_credited_with() -> None:
    import torch

    from bench.flops import peak_kernels

    kernels = peak_kernels(threads=1, sizes={64: 3})
    assert {k.precision for k in kernels.values()} == {"fp32", "int8"}
    assert all(k.flops == 2 * 64**3 for k in kernels.values())
    (product,) = kernels["peak-int8-onnxruntime-64"].call()
    assert product.shape == (64, 64) and product.dtype == np.int32
    assert tuple(kernels["peak-fp32-torch-64"].call().shape) == (64, 64)
    if "peak-int8-torch-64" in kernels:
        assert kernels["peak-int8-torch-64"].call().dtype == torch.int32
    assert all(len(k.samples) == 3 for k in kernels.values() if k.key != "peak-int8-torch-64")
    # --fast's real sizes have fp32 rows only: no int8 GEMM is built or timed for them
    fp32_only = peak_kernels(threads=1, sizes={64: 1, 128: 1}, precisions={"fp32"})
    assert list(fp32_only) == ["peak-fp32-torch-64", "peak-fp32-torch-128"]


def test_a_row_is_divided_by_the_peak_of_its_own_precision() -> None:
    from bench.flops import peak_of

    peaks = {"fp32": (200.0, "torch.mm"), "int8": (800.0, "MatMulInteger")}
    assert peak_of("int8", peaks) == (800.0, "MatMulInteger")
    assert peak_of("fp32", peaks) == (200.0, "torch.mm")
    assert peak_of("int8", {"fp32": (200.0, "torch.mm")}) == (None, None)  # never fp32's


class TimeSliced:
    """A clock of a machine shared round-robin by ``jobs`` runnable jobs: a call runs at
    ``gflops`` until the end of the scheduler slice it is in, then waits ``jobs - 1`` slices
    for each slice boundary it crosses. A call that ends inside its slice is never slowed."""

    def __init__(self, gflops: float = 200.0, slice_s: float = 0.004, jobs: int = 15) -> None:
        self.gflops, self.slice_s, self.jobs, self.now = gflops, slice_s, jobs, 0.0

    def clock(self) -> float:
        return self.now

    def work(self, flops: float):
        def run() -> None:
            end = self.now + flops / self.gflops / 1e9
            crossed = int(end // self.slice_s) - int(self.now // self.slice_s)
            self.now = end + crossed * (self.jobs - 1) * self.slice_s

        return run


def test_the_peak_is_not_lowered_by_time_slicing_that_spares_a_short_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Load 15 on 2 cores once printed a tiny row at 52 GFLOP/s against a peak of 31: the
    peak was one 2048² GEMM per round (~0.1 s, preempted in every round) and the row a few ms
    (inside one slice). Here the benchmark's own kernels (``PEAK_SIZES``) and rounds
    (``real_sizes.interleaved``, ``--fast``'s count) run on a simulated machine doing 200
    GFLOP/s in every GEMM: the peak must be 200 and a row doing 100 GFLOP/s read 50%."""
    import time

    from bench.flops import peak_gflops, peak_kernels, percent_of_peak
    from bench.real_sizes import FAST_ROUNDS, interleaved

    machine = TimeSliced()
    monkeypatch.setattr(time, "perf_counter", machine.clock)
    kernels = {key: replace(kernel, gemm=machine.work(kernel.flops))
               for key, kernel in peak_kernels(threads=1, precisions={"fp32"}).items()}  # fmt: skip
    row_flops = 0.1e9  # a tiny graph, 1 ms at half the machine's rate
    calls = {"row": machine.work(2 * row_flops), **{k: v.call for k, v in kernels.items()}}
    times = interleaved(calls, rounds=FAST_ROUNDS)
    (peak, kernel) = peak_gflops(kernels)["fp32"]
    assert peak == pytest.approx(machine.gflops), kernel
    row = row_flops / statistics.median(times["row"]) / 1e9
    assert percent_of_peak(row, peak) == pytest.approx(50.0)
