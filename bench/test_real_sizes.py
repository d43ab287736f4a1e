"""Latency of R18- and R50-sized RT-DETR at 640 px, every runtime and precision that applies.

Random weights, latency only (labelled so): PyTorch eager, ONNX Runtime fp32 and int8
(export's recipe, calibrated on generated images), OpenVINO fp32 and int8 where installed;
model-only, batch 1, the same random input for all, timed in interleaved rounds
(``real_sizes.interleaved``), with achieved GFLOP/s (FLOPs counted from the graph) and the
fraction of this machine's measured peak of the row's precision (``bench.flops``: fp32
sgemm for fp32 rows, the fastest int8 GEMM for int8 rows), the peak GEMMs timed in the same
interleaved rounds at the same thread count. A row above its peak fails the test (a wrong
measurement, never printed). torch.compile is not run at
these sizes: its first call takes minutes per model on a small CPU, past the suite's budget
(the default model's compile row shows it). Skipped under ``--fast`` and ``--no-real-sizes``.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.backends import OnnxBackend, TorchBackend
from bench.flops import (
    ImpossibleFigure,
    graph_gflops,
    peak_gflops,
    peak_kernels,
    peak_of,
    percent_of_peak,
)
from bench.ov_backend import OpenVinoBackend, openvino_version
from bench.real_sizes import (
    IMAGE_SIZE,
    ROUNDS,
    SIZES,
    WARMUP,
    build_model,
    cached_int8,
    cached_onnx,
    interleaved,
    random_feed,
)
from bench.report import MODEL, Latency, Results
from bench.settings import BenchOptions


def _backends(size: str, options: BenchOptions, results: Results) -> dict[str, Any]:
    """Every row that applies to this device, built from one seeded model."""
    model = build_model(SIZES[size])
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    fp32 = cached_onnx(SIZES[size], model)
    found: dict[str, Any] = {
        "pytorch": TorchBackend(model, None, device=options.device, size_mb=params / 1e6, batch=1),
        "onnx-fp32": OnnxBackend(fp32, device=options.device, threads=options.threads, batch=1),
    }
    if options.device != "cpu":
        return found
    int8 = cached_int8(SIZES[size], fp32)
    found["onnx-int8"] = OnnxBackend(
        int8, device="cpu", threads=options.threads, batch=1, name="onnx-int8"
    )
    if openvino_version() is None:
        note = "real sizes: OpenVINO rows skipped (not installed: pip install -e '.[openvino]')"
        if note not in results.notes:
            results.notes.append(note)
        return found
    for precision, path in (("fp32", fp32), ("int8", int8)):
        key = f"openvino-{precision}"
        found[key] = OpenVinoBackend(path, threads=options.threads, batch=1, name=key)
    return found


@pytest.mark.parametrize("size", list(SIZES))
def test_real_size_latency(
    benchmark: Any, size: str, bench_options: BenchOptions, results: Results
) -> None:
    if bench_options.fast:
        pytest.skip("--fast: R18/R50 at 640 px take minutes on a CPU; run without --fast")
    if not bench_options.real_sizes:
        pytest.skip("--no-real-sizes")
    backends = _backends(size, bench_options, results)
    feed = random_feed()
    kernels = peak_kernels(bench_options.threads)
    calls = {name: (lambda b=b: b.model_only(feed)) for name, b in backends.items()}
    calls.update({key: kernel.call for key, kernel in kernels.items()})
    benchmark.group = f"real sizes (random weights, latency only), {IMAGE_SIZE} px, batch 1"
    benchmark.extra_info.update({"label": SIZES[size].label, "rows": list(calls)})
    times = benchmark.pedantic(interleaved, args=(calls,), rounds=1, iterations=1)
    gflops = graph_gflops(backends["onnx-fp32"].detector.path)
    peaks = peak_gflops(kernels, times)
    impossible = []
    for name, backend in backends.items():
        peak, kernel = peak_of(backend.precision, peaks)
        latency = Latency(
            name, MODEL, 1, times[name],
            {
                "label": SIZES[size].label, "runtime": backend.runtime,
                "precision": backend.precision, "threads": bench_options.threads,
                "gflops": gflops, "peak_gflops": peak, "peak_kernel": kernel,
                "peak_how": f"best of {ROUNDS} interleaved rounds after {WARMUP} warm-up, "
                f"{bench_options.threads} threads", "warmup": WARMUP, "rounds": ROUNDS,
                "includes": f"random weights, latency only: {IMAGE_SIZE}x{IMAGE_SIZE} tensor in "
                "-> labels/boxes/scores out; interleaved rounds",
            },
        )  # fmt: skip
        results.real_sizes[(size, name)] = latency
        if peak and latency.p50_ms:
            try:
                percent_of_peak(gflops / latency.p50_ms * 1000, peak)
            except ImpossibleFigure as exc:
                impossible.append(f"{size} {name}: {exc}")
    assert not impossible, "rows above their measured peak:\n" + "\n".join(impossible)
