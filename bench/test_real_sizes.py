"""Latency of each family's published sizes, on every runtime and precision that passes its gate.

Per size (``--families``; under ``--fast`` each family's tiny scratch size): random weights,
latency only (labelled so). Rows: PyTorch eager (the reference), ONNX Runtime fp32 and int8
(export's recipe with the family's float islands, calibrated on generated images), OpenVINO
fp32 and int8 where installed; int8 rows are not run under ``--fast`` (quantizing and
verifying five families would add a minute to CI; the benchmarked model's int8 rows run
there), nor OpenVINO rows after the first size (``BenchOptions.openvino_rows``). Each
row is gated (:mod:`bench.family_gates`: export's verification in that runtime against
PyTorch); a row that fails is reported FAILED with the reason, never ranked, and
still timed where the runtime can run it (measured: int8 fails the agreement check on random
weights, 0.54-0.65 against 0.9 for RT-DETR-R18, because int8 reorders their near-tied
scores, while the same recipe passes on the trained benchmarked model; its speed is still
worth seeing, marked FAILED). An ONNX Runtime fp32 row that fails fails the test: that graph
is the toolkit's contract.

Model-only, batch 1, the same random input for all rows, timed in interleaved rounds
(``real_sizes.interleaved``), with achieved GFLOP/s (FLOPs counted from the graph) and the
fraction of this machine's measured peak of the row's precision (``bench.flops``), the peak
GEMMs timed in the same rounds at the same thread count. A row above its peak fails the test
(a wrong measurement, never printed). torch.compile is not run at these sizes: its first
call takes minutes per model on a small CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.backends import OnnxBackend, TorchBackend
from bench.family_gates import PASSED, Gate, gate_row, reference_for
from bench.flops import (
    ImpossibleFigure,
    graph_gflops,
    peak_gflops,
    peak_kernels,
    peak_of,
    percent_of_peak,
)
from bench.published_sizes import PublishedSize, size_of, tiny
from bench.real_sizes import (
    FAST_ROUNDS,
    ROUNDS,
    WARMUP,
    _frozen_norms,
    build_model,
    cached_int8,
    cached_onnx,
    generated_images,
    interleaved,
    processor_of,
    random_feed,
    settle,
    tracer_sources,
)
from bench.report import MODEL, Latency, Results
from bench.settings import BenchOptions
from runtime.engines import openvino_version
from runtime.errors import ModelLoadError, first_line

RUNTIMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


@dataclass
class Rows:
    """One size's rows: the fp32 graph, the gated backends, every row's gate and kind."""

    fp32: Path
    params_m: float
    backends: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, Gate] = field(default_factory=dict)
    kinds: dict[str, tuple[str, str]] = field(default_factory=dict)  # runtime, precision


def _files(size: PublishedSize, fp32: Path, options: BenchOptions) -> dict[str, Any]:
    """Row name -> (runtime, precision, graph or the Gate of a failed build)."""
    rows: dict[str, Any] = {"onnx-fp32": ("onnxruntime", "fp32", fp32)}
    if options.device != "cpu":
        return rows
    int8: Path | Gate | None = None
    if not options.fast:
        try:
            int8 = cached_int8(size, fp32)
        except (RuntimeError, ValueError, OSError) as exc:  # a converter crash is a result
            int8 = Gate("FAILED", f"int8 build: {first_line(exc, with_type=True)}")
        rows["onnx-int8"] = ("onnxruntime", "int8", int8)
    if openvino_version() is not None and options.openvino_rows(size.key):
        rows["openvino-fp32"] = ("openvino", "fp32", fp32)
        if int8 is not None:
            rows["openvino-int8"] = ("openvino", "int8", int8)
    return rows


def _rows(size: PublishedSize, options: BenchOptions, results: Results) -> Rows:
    """Build, export, gate and open every row of one size."""
    model = build_model(size)
    fp32 = cached_onnx(size, model)
    images = generated_images(2, size.image_size, seed=7)
    reference = reference_for(model, processor_of(size), images)
    params = [p.numel() * p.element_size() for p in model.parameters()]
    rows = Rows(fp32, sum(p.numel() for p in model.parameters()) / 1e6)
    rows.backends["pytorch"] = TorchBackend(
        model, None, device=options.device, size_mb=sum(params) / 1e6, batch=1
    )
    rows.gates["pytorch"] = Gate(PASSED, "the reference")
    rows.kinds["pytorch"] = ("PyTorch eager", "fp32")
    for name, (runtime, precision, graph) in _files(size, fp32, options).items():
        rows.kinds[name] = (RUNTIMES[runtime], precision)
        if isinstance(graph, Gate):
            rows.gates[name] = graph
            continue
        gate = gate_row(
            graph, reference, images, runtime=runtime, precision=precision, threads=options.threads
        )
        rows.gates[name] = gate
        engine = {"engine": "openvino"} if runtime == "openvino" else {}
        device = "cpu" if runtime == "openvino" else options.device
        try:
            rows.backends[name] = OnnxBackend(
                graph, device=device, threads=options.threads, batch=1, name=name, **engine
            )
        except (ModelLoadError, RuntimeError) as exc:  # runtime.Detector cannot open it
            reason = f"runtime.Detector: {first_line(exc, with_type=True)}"[:300]
            rows.gates[name] = Gate("FAILED", gate.reason if not gate.passed else reason)
    note = None
    if openvino_version() is None and options.device == "cpu":
        note = "real sizes: OpenVINO rows skipped (not installed: pip install -e '.[openvino]')"
    elif options.fast and options.device == "cpu" and not options.openvino_rows(size.key):
        note = (
            f"real sizes, --fast: OpenVINO rows for {options.families[0]} only (every family's "
            "graph is checked in OpenVINO by tests/test_family_export.py)"
        )
    if note and note not in results.notes:
        results.notes.append(note)
    return rows


@pytest.mark.slow
def test_real_size_latency(
    benchmark: Any, size_key: str, bench_options: BenchOptions, results: Results
) -> None:
    size = size_of(size_key)
    rows = _rows(size, bench_options, results)
    feed = random_feed(size.image_size)
    rounds = FAST_ROUNDS if bench_options.fast else ROUNDS
    precisions = {precision for _, precision in rows.kinds.values()}
    kernels = peak_kernels(bench_options.threads, precisions=precisions)
    calls = {name: (lambda b=b: b.model_only(feed)) for name, b in rows.backends.items()}
    calls.update({key: kernel.call for key, kernel in kernels.items()})
    benchmark.group = "real sizes (random weights, latency only), native input size, batch 1"
    benchmark.extra_info.update({"label": size.label, "rows": list(calls)})
    times = benchmark.pedantic(
        interleaved, args=(calls,), kwargs={"rounds": rounds}, rounds=1, iterations=1
    )
    gflops = graph_gflops(rows.fp32)
    peaks = peak_gflops(kernels)
    impossible = []
    for name, gate in rows.gates.items():
        runtime, precision = rows.kinds[name]
        peak, kernel = peak_of(precision, peaks)
        latency = Latency(
            name, MODEL, 1, times.get(name),
            {
                "label": size.label, "family": size.model_type, "image_size": size.image_size,
                "runtime": runtime, "precision": precision,
                "gate": gate.describe(), "gate_cached": gate.cached,
                "params_m": rows.params_m, "threads": bench_options.threads,
                "gflops": gflops, "peak_gflops": peak, "peak_kernel": kernel,
                "peak_how": f"in the rows' {rounds} interleaved rounds after {WARMUP} "
                f"warm-up, {bench_options.threads} threads",
                "warmup": WARMUP, "rounds": rounds,
                "includes": f"random weights, latency only: {size.image_size}x{size.image_size} "
                "tensor in -> labels/boxes/scores out; interleaved rounds",
            },
        )  # fmt: skip
        results.real_sizes[(size_key, name)] = latency
        if peak and latency.p50_ms:
            try:
                percent_of_peak(gflops / latency.p50_ms * 1000, peak)
            except ImpossibleFigure as exc:
                impossible.append(f"{size.label} {name}: {exc}")
    assert not impossible, "rows above their measured peak:\n" + "\n".join(impossible)
    fp32_gate = rows.gates["onnx-fp32"]
    assert fp32_gate.passed, f"{size.label}, ONNX Runtime fp32: {fp32_gate.describe()}"


@pytest.mark.model
def test_settle_normalises_the_frozen_batch_norms() -> None:
    """settle sets frozen batch norms (transformers' ``*FrozenBatchNorm2d``, the published
    sizes' backbones) to the settling images' statistics, as it sets the others: left at the
    identity, D-FINE-M's backbone output decayed to std 2.5e-7 and its fp32 selection scores
    were 55,000 ulps from fp64 (bench/real_sizes.settle). A tiny D-FINE with frozen backbone
    norms, 64 px: every frozen norm's output has per-channel mean 0 and variance 1 on the
    settling images (channels with variance above eps), and the backbone's output does not
    vanish."""
    import torch

    from finetune.families import family_of
    from finetune.pixels import pixel_values

    size = tiny("d_fine")
    config = size.config()
    config.freeze_backbone_batch_norms = True
    torch.manual_seed(0)
    model = family_of(config).model(config)
    frozen = _frozen_norms(model)
    assert len(frozen) >= 10, [type(m).__name__ for m in frozen]
    pixels = pixel_values(processor_of(size), generated_images(2, 64, seed=3))
    settle(model, pixels)
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}

    def keep(module: Any, args: tuple[Any, ...], output: torch.Tensor) -> None:
        inputs[id(module)], outputs[id(module)] = args[0], output

    def keep_deepest(module: Any, args: tuple[Any, ...]) -> None:
        inputs[0] = args[0]  # the backbone's deepest feature map

    hooks = [m.register_forward_hook(keep) for m in frozen]
    hooks.append(model.model.encoder_input_proj[-1].register_forward_pre_hook(keep_deepest))
    with torch.no_grad():
        model(pixel_values=pixels)
    for hook in hooks:
        hook.remove()
    assert len(outputs) == len(frozen)
    for module in frozen:
        out, seen = outputs[id(module)], inputs[id(module)].var(dim=(0, 2, 3), unbiased=False)
        live = seen > 1e-3  # eps 1e-5 dominates below; a constant channel stays constant
        assert live.float().mean() > 0.9
        torch.testing.assert_close(
            out.mean(dim=(0, 2, 3)), torch.zeros_like(seen), atol=1e-4, rtol=0
        )
        variance = out.var(dim=(0, 2, 3), unbiased=False)[live]
        torch.testing.assert_close(variance, torch.ones_like(variance), atol=2e-2, rtol=0)
    assert float(inputs[0].std()) > 0.1


@pytest.mark.unit
def test_graph_cache_key_covers_the_tracer_and_its_patches(monkeypatch) -> None:
    """A cached real-size graph is keyed by every module the tracer imports: the DINOv3
    register-token fix (export.dinov3_fixes) was benchmarked as the old graph while the key
    hashed only the config and versions. Its patch modules, DeployModel and the metadata
    are in the closure; a changed source gives a new key."""
    from bench import real_sizes

    names = {f"{p.parent.name}/{p.name}" for p in tracer_sources()}
    assert {
        "export/onnx_export.py",
        "export/graph_fixes.py",
        "export/dinov3_fixes.py",
        "export/patching.py",
        "finetune/postprocess.py",
        "runtime/metadata.py",
    } <= names
    size = size_of("deimv2-s")
    key = real_sizes._cache_key(size)
    monkeypatch.setattr(real_sizes, "tracer_digest", lambda: "a changed graph fix")
    assert real_sizes._cache_key(size) != key
