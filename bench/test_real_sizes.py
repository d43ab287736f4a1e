"""Latency of R18- and R50-sized RT-DETR at 640 px (random weights, latency only).

PyTorch eager vs ONNX Runtime fp32, model-only, batch 1, the same random input for both,
``real_sizes.WARMUP`` + ``real_sizes.ROUNDS`` rounds (R50 is ~1 s per image on 2 CPU cores).
Skipped under ``--fast`` and ``--no-real-sizes``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from bench.backends import OnnxBackend, TorchBackend
from bench.real_sizes import (
    IMAGE_SIZE,
    ROUNDS,
    SIZES,
    WARMUP,
    build_model,
    cached_onnx,
    random_feed,
)
from bench.report import MODEL, Results
from bench.settings import BenchOptions

CASES = [("r18", "pytorch"), ("r18", "onnx-fp32"), ("r50", "pytorch"), ("r50", "onnx-fp32")]


@pytest.fixture(scope="session")
def real_size_backend(bench_options: BenchOptions) -> Any:
    """``get(size, backend)``: built once per session; R50's graph is cached on disk."""
    if bench_options.fast:
        pytest.skip("--fast: R18/R50 at 640 px take minutes on a CPU; run without --fast")
    if not bench_options.real_sizes:
        pytest.skip("--no-real-sizes")

    @cache
    def get(size: str, name: str) -> Any:
        model = build_model(SIZES[size])
        if name == "pytorch":
            params = sum(p.numel() * p.element_size() for p in model.parameters())
            return TorchBackend(
                model, None, device=bench_options.device, size_mb=params / 1e6, batch=1
            )
        return OnnxBackend(
            cached_onnx(SIZES[size], model),
            device=bench_options.device,
            threads=bench_options.threads,
            batch=1,
        )

    return get


@pytest.mark.parametrize(("size", "name"), CASES, ids=[f"{s}-{n}" for s, n in CASES])
def test_real_size_latency(
    benchmark: Any, measure: Any, size: str, name: str, real_size_backend: Any, results: Results
) -> None:
    backend = real_size_backend(size, name)
    latency = measure(
        backend,
        MODEL,
        1,
        backend.model_only,
        random_feed(),
        includes=f"random weights, latency only: {IMAGE_SIZE}x{IMAGE_SIZE} tensor in -> "
        "labels/boxes/scores out",
        group=f"real sizes (random weights, latency only), {IMAGE_SIZE} px, batch 1",
        warmup=WARMUP,
        rounds=ROUNDS,
        label=SIZES[size].label,
    )
    results.real_sizes[(size, name)] = latency
