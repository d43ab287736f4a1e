"""Helper logic of the benchmark suite (bench/): claims, variants, report, real-size configs.

No model runs here; ``pytest bench/ --fast`` runs the suite itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.artifacts import find_variants
from bench.claims import FAILED, NOT_HERE, NOT_MEASURED, VERIFIED, evaluate_claims
from bench.report import (
    E2E,
    MODEL,
    Accuracy,
    BackendRow,
    Latency,
    Results,
    render_markdown,
    write_report,
)

pytestmark = pytest.mark.unit


def _latency(backend: str, kind: str, ms: float | None, batch: int = 1) -> Latency:
    times = None if ms is None else [ms / 1000] * 5
    return Latency(backend, kind, batch, times, {"threads": 2})


def _results(torch_ms: float | None, onnx_ms: float | None) -> Results:
    results = Results()
    results.backends["pytorch"] = BackendRow("pytorch", "PyTorch eager", "fp32")
    results.backends["onnx-fp32"] = BackendRow("onnx-fp32", "ONNX Runtime", "fp32")
    for name, ms in (("pytorch", torch_ms), ("onnx-fp32", onnx_ms)):
        results.latency[(name, MODEL, 1)] = _latency(name, MODEL, ms)
        results.latency[(name, E2E, 1)] = _latency(name, E2E, None if ms is None else ms * 2)
    return results


def test_latency_percentiles() -> None:
    latency = Latency("onnx-fp32", MODEL, 4, [0.010, 0.012, 0.011, 0.030, 0.010])
    assert latency.p50_ms == pytest.approx(11.0)
    assert latency.p95_ms == pytest.approx(26.4)
    assert latency.images_per_s == pytest.approx(4 / 0.011)
    disabled = Latency("onnx-fp32", MODEL, 1, None)  # --benchmark-disable
    assert disabled.p50_ms is None and disabled.images_per_s is None


@pytest.mark.parametrize(
    ("torch_ms", "onnx_ms", "status", "fails_suite"),
    [
        (20.0, 10.0, VERIFIED, False),
        (10.0, 10.0, VERIFIED, False),
        (10.0, 20.0, FAILED, True),
        (None, None, NOT_MEASURED, False),
    ],
)
def test_onnx_not_slower_claim(
    torch_ms: float | None, onnx_ms: float | None, status: str, fails_suite: bool
) -> None:
    claim = evaluate_claims(_results(torch_ms, onnx_ms), device="cpu", target_fps=30)[0]
    assert (claim.status, claim.failed) == (status, fails_suite)
    if torch_ms and onnx_ms:
        assert f"{torch_ms / onnx_ms:.2f}x" in claim.detail


@pytest.mark.parametrize(
    ("r18_ms", "status"), [(None, NOT_MEASURED), (500.0, NOT_HERE), (4.0, VERIFIED)]
)
def test_paper_claims(r18_ms: float | None, status: str) -> None:
    results = _results(20.0, 10.0)
    if r18_ms is not None:
        _family_row(results, "rt_detr-r18", "onnx-fp32", r18_ms, "passed")
    claims = {
        c.claim.split(":")[0]: c for c in evaluate_claims(results, device="cpu", target_fps=30)
    }
    assert claims["RT-DETR-R18"].status == status
    assert claims["RT-DETR-R34"].status == NOT_MEASURED  # never built
    assert not claims["RT-DETR-R18"].failed  # hardware-dependent: reported, never failed


def test_real_time_claim_uses_end_to_end_fps() -> None:
    claims = evaluate_claims(_results(20.0, 10.0), device="cpu", target_fps=30)
    real_time = {c.claim.split(" runs")[0]: c.status for c in claims if "real time" in c.claim}
    # end-to-end is 2x model-only here: PyTorch 40 ms = 25 FPS, ONNX 20 ms = 50 FPS
    assert real_time == {"PyTorch eager fp32": NOT_HERE, "ONNX Runtime fp32": VERIFIED}


def test_find_variants(tmp_path: Path) -> None:
    onnx = tmp_path / "model.onnx"
    (tmp_path / "model.int8.onnx").write_bytes(b"")
    (tmp_path / "model.int8.verify.json").write_text("{}")
    failures = {"passed": False, "failures": ["agreement 0.7 < 0.9"]}
    (tmp_path / "model.fp16.verify.failed.json").write_text(json.dumps(failures))
    variants = find_variants(onnx)
    assert variants["int8"].status == "verified"
    assert variants["fp16"].status == "FAILED"
    assert "agreement 0.7 < 0.9" in variants["fp16"].reason
    assert find_variants(tmp_path / "other.onnx")["int8"].status == "missing"


def test_write_report(tmp_path: Path) -> None:
    results = _results(20.0, 10.0)
    results.backends["onnx-int8"] = BackendRow(
        "onnx-int8", "ONNX Runtime", "int8", "FAILED", "export verification failed"
    )
    metrics = {"map": 0.5, "map_50": 0.8}
    results.accuracy["pytorch"] = Accuracy("pytorch", metrics, 10, 1.0)
    results.accuracy["onnx-fp32"] = Accuracy("onnx-fp32", metrics, 10, 1.0, 0.0, 0.002)
    results.claims = evaluate_claims(results, device="cpu", target_fps=30)
    md, js, png = write_report(results, tmp_path)
    text = md.read_text()
    assert (
        "| ONNX Runtime | fp32 | — | 0.5000 | +0.0000 | 1.0000 | — | 10.00 / 10.00 | 20.00 | "
        "50.0 | — | 2.00x | — | — |"
    ) in text
    assert "FAILED: export verification failed" in text
    rows = {r["name"]: r for r in json.loads(js.read_text())["rows"]}
    assert rows["onnx-fp32"]["speedup_vs_pytorch"] == pytest.approx(2.0)
    assert png.stat().st_size > 0


def _gated(results: Results, name: str, runtime: str, precision: str, ms: float, failures=()):
    results.backends[name] = BackendRow(name, runtime, precision)
    results.latency[(name, MODEL, 1)] = _latency(name, MODEL, ms)
    results.accuracy[name] = Accuracy(
        name, {"map": 0.5, "map_50": 0.8}, 10, 0.99, 0.0, 0.01, failures=list(failures)
    )
    if failures:
        results.backends[name].status = "FAILED"
        results.backends[name].reason = "; ".join(failures)


def test_decision_is_the_fastest_row_that_passed_the_gates() -> None:
    results = _results(40.0, 10.0)
    results.accuracy["pytorch"] = Accuracy("pytorch", {"map": 0.5, "map_50": 0.8}, 10, 1.0)
    _gated(results, "onnx-fp32", "ONNX Runtime", "fp32", 10.0)
    _gated(results, "onnx-int8", "ONNX Runtime", "int8", 8.0)
    _gated(results, "openvino-int8", "OpenVINO", "int8", 5.0, ["consistency 0.71 < 0.9"])
    results.backends["pytorch-compile"] = BackendRow(
        "pytorch-compile", "PyTorch compile", "fp32", "skipped", "--fast: takes minutes"
    )
    ranked, unranked = results.decision()
    # openvino-int8 is faster but failed its gates; eager is last
    assert [r["name"] for r in ranked] == ["onnx-int8", "onnx-fp32", "pytorch"]
    assert [r["name"] for r in unranked] == ["openvino-int8"]  # skipped rows are not listed
    text = render_markdown(results)
    assert text.index("**Decision: ship ONNX Runtime int8**") < text.index("| backend |")
    assert "5.00x PyTorch eager" in text
    assert "not ranked: OpenVINO int8: FAILED: consistency 0.71 < 0.9" in text
    assert "Runner-up: ONNX Runtime fp32, 10.00 ms p50 (1.25x the winner's time)." in text


def test_interleaved_rounds_rotate_the_order() -> None:
    from bench.real_sizes import interleaved

    calls: list[str] = []
    times = interleaved({n: (lambda n=n: calls.append(n)) for n in "abc"}, warmup=1, rounds=3)
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}


# Parameters (millions) the authors publish: RT-DETR paper (R18 20, R50 42); RT-DETRv2 README
# (S 20, M 36); D-FINE README (N 4, S 10, M 19); DEIMv2 README (S 9.71); RF-DETR README
# (N 30.5, S 32.1); LW-DETR paper (tiny 12.1, small 14.6). The rebuilt configs must land within
# 5%.
PUBLISHED_PARAMS_M = {
    "rt_detr-r18": 20, "rt_detr-r50": 42, "rt_detr_v2-s": 20, "rt_detr_v2-m": 36,
    "d_fine-n": 3.8, "d_fine-s": 10, "d_fine-m": 19, "deimv2-s": 9.71,
    "rf_detr-n": 30.5, "rf_detr-s": 32.1, "lw_detr-t": 12.1, "lw_detr-s": 14.6,
}  # fmt: skip


@pytest.mark.parametrize(("size", "paper_params_m"), list(PUBLISHED_PARAMS_M.items()))
def test_published_size_configs_match_the_published_parameter_counts(
    size: str, paper_params_m: float
) -> None:
    import torch

    from bench.published_sizes import SIZES
    from finetune.families import family_of

    config = SIZES[size].config()
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = family_of(config).model(config)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    assert params_m == pytest.approx(paper_params_m, rel=0.05)
    assert set(PUBLISHED_PARAMS_M) == set(SIZES)  # every size has its published figure


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("d_fine", ["d_fine-n", "d_fine-s", "d_fine-m"]),
        ("rf_detr-s, RT_DETR", ["rt_detr-r18", "rt_detr-r50", "rf_detr-s"]),  # SIZES order
        ("deimv2-s,deimv2", ["deimv2-s"]),
        ("none", []),
    ],
)
def test_families_selection(text: str, keys: list[str]) -> None:
    from bench.published_sizes import SIZES, select

    assert select(text) == keys
    assert select("all") == list(SIZES)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("d_fine,yolo", "unknown 'yolo'; expected 'all', 'none', a family (d_fine, deimv2"),
        ("d_fine-x", "unknown 'd_fine-x'"),
        (" , ", "empty (say 'none' to time no real size)"),
    ],
)
def test_families_selection_refuses_unknown_names(text: str, message: str) -> None:
    from bench.published_sizes import SelectionError, select

    with pytest.raises(SelectionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        select(text)


def test_fast_times_each_selected_family_at_its_tiny_size() -> None:
    from bench.published_sizes import DEFAULT_SELECTION, resolve_sizes, size_of
    from finetune.families import FAMILIES

    assert resolve_sizes(None, fast=True) == tuple(f"{f}-tiny" for f in FAMILIES)
    assert resolve_sizes("d_fine-n,rf_detr", fast=True) == ("d_fine-tiny", "rf_detr-tiny")
    assert resolve_sizes(None, fast=False) == ("rt_detr-r18", "rt_detr-r50")
    assert DEFAULT_SELECTION == "rt_detr"
    tiny = size_of("rf_detr-tiny")
    assert (tiny.model_type, tiny.image_size) == ("rf_detr", FAMILIES["rf_detr"].scratch_size)
    assert tiny.config().model_type == "rf_detr"


def test_real_size_graph_cache_is_keyed_by_the_preprocessing(monkeypatch) -> None:
    """The settled weights and the graph's metadata depend on the image processor: a changed
    processor (DEIMv2's DINOv3 sizes came to normalise) must not reuse a cached graph."""
    from bench import real_sizes
    from bench.published_sizes import SIZES

    size = SIZES["deimv2-s"]
    processor = real_sizes.processor_of(size)
    assert processor.do_normalize  # ImageNet's mean/std, as upstream's DINOv3 configs
    assert list(processor.image_mean) == pytest.approx([0.485, 0.456, 0.406])
    key = real_sizes._cache_key(size)
    assert real_sizes._cache_key(size) == key  # deterministic
    other = real_sizes.processor_of(SIZES["d_fine-s"]).__class__(
        **{**processor.to_dict(), "do_normalize": False}
    )
    monkeypatch.setattr(real_sizes, "processor_of", lambda _: other)
    assert real_sizes._cache_key(size) != key


def test_fast_gives_openvino_rows_to_the_first_size_only() -> None:
    from bench.settings import BenchOptions

    sizes = ("rt_detr-tiny", "d_fine-tiny", "rf_detr-tiny")
    fast = BenchOptions(fast=True, families=sizes)
    assert [fast.openvino_rows(key) for key in sizes] == [True, False, False]
    full = BenchOptions(families=("rt_detr-r18", "d_fine-n"))
    assert full.openvino_rows("rt_detr-r18") and full.openvino_rows("d_fine-n")
    assert not BenchOptions(device="cuda", families=sizes).openvino_rows("rt_detr-tiny")
    assert not BenchOptions(fast=True).openvino_rows("rt_detr-tiny")  # --families none


def _family_row(results: Results, size: str, backend: str, ms: float | None, gate: str) -> None:
    info = {"label": size.upper(), "image_size": 640, "runtime": backend.split("-")[0],
            "precision": backend.partition("-")[2] or "fp32", "gate": gate,
            "gflops": 10.0}  # fmt: skip
    times = None if ms is None else [ms / 1000] * 3
    results.real_sizes[(size, backend)] = Latency(backend, MODEL, 1, times, info)


def test_family_rows_that_failed_their_gate_are_shown_and_never_ranked(tmp_path: Path) -> None:
    from bench.family_report import fastest_per_size

    results = Results()
    _family_row(results, "d_fine-n", "pytorch", 400.0, "passed")
    _family_row(results, "d_fine-n", "onnx-fp32", 100.0, "passed")
    _family_row(results, "d_fine-n", "openvino-fp32", None, "FAILED: openvino: Concat")
    _family_row(results, "deimv2-s", "pytorch", 300.0, "passed")
    _family_row(results, "deimv2-s", "onnx-int8", 50.0, "FAILED: agreement 0.2 < 0.9")
    best = fastest_per_size(results)
    assert {size: name for size, (name, _) in best.items()} == {
        "d_fine-n": "onnx-fp32", "deimv2-s": "pytorch"
    }  # fmt: skip
    text = render_markdown(results)
    assert "| openvino | fp32 | FAILED: openvino: Concat | not run |" in text
    assert "| onnx | int8 | FAILED: agreement 0.2 < 0.9 | 50 (50-50) |" in text
    assert "- D_FINE-N: onnx fp32 100 ms (10.0 FPS)" in text
    assert "- DEIMV2-S: pytorch fp32 300 ms" in text
    paths = write_report(results, tmp_path)
    assert [p.name for p in paths] == [
        "bench_report.md",
        "bench_report.json",
        "bench_real_sizes.png",
    ]
    assert paths[-1].stat().st_size > 10_000  # a rendered chart, not an empty canvas


def test_onnx_slower_than_eager_fails_only_where_the_project_claims_it() -> None:
    results = Results()
    for size in ("rt_detr-tiny", "rt_detr-r18", "d_fine-n"):
        _family_row(results, size, "pytorch", 10.0, "passed")
        _family_row(results, size, "onnx-fp32", 20.0, "passed")  # slower
    claims = {
        c.claim.split(":")[0]: c for c in evaluate_claims(results, device="cpu", target_fps=30)
    }
    assert [name for name, c in claims.items() if c.failed] == ["RT_DETR-R18 at 640 px"]
    assert claims["D_FINE-N at 640 px"].status == "not on this hardware"  # reported
    assert "0.50x" in claims["D_FINE-N at 640 px"].detail
    assert "RT_DETR-TINY at 640 px" not in claims  # --fast's tiny rows: no claim
    _family_row(results, "d_fine-s", "pytorch", 20.0, "passed")
    _family_row(results, "d_fine-s", "onnx-fp32", 10.0, "FAILED: query selection")  # faster
    failed = next(c for c in evaluate_claims(results, device="cpu", target_fps=30)
                  if c.claim.startswith("D_FINE-S"))  # fmt: skip
    assert failed.status == "not measured" and "FAILED: query selection" in failed.detail


def test_paper_claim_ignores_rows_that_failed_the_accuracy_gates() -> None:
    results = _results(20.0, 10.0)
    _family_row(results, "rt_detr-r18", "onnx-fp32", 500.0, "passed")
    _family_row(results, "rt_detr-r18", "openvino-int8", 100.0, "passed")
    _family_row(results, "rt_detr-r18", "onnx-int8", None, "FAILED: agreement 0.5 < 0.9")
    # its runtime and precision failed on the benchmarked model: not quoted, however fast
    _gated(results, "openvino-int8", "OpenVINO", "int8", 5.0, ["consistency 0.44 < 0.9"])
    claims = {
        c.claim.split(":")[0]: c for c in evaluate_claims(results, device="cpu", target_fps=30)
    }
    assert "measured 2.00 FPS, onnx-fp32" in claims["RT-DETR-R18"].detail
    text = render_markdown(results)
    assert "| openvino | int8 | passed | 100 (100-100) | 10.00 | — | 100 | — | 3 |" in text
    assert "| onnx | int8 | FAILED: agreement 0.5 < 0.9 | not run | — | — | — | — | 0 |" in text


def _real_size_row(results: Results, backend: str, precision: str, ms: float, peak: float):
    results.real_sizes[("rt_detr-r18", backend)] = Latency(
        backend, MODEL, 1, [ms / 1000] * 3,
        {"label": "RT-DETR-R18", "runtime": "ONNX Runtime", "precision": precision, "gflops": 10.0,
         "peak_gflops": peak, "peak_kernel": f"{precision} gemm", "peak_how": "best of 3"},
    )  # fmt: skip


def test_real_sizes_int8_row_is_divided_by_the_int8_peak() -> None:
    from bench.family_report import impossible_rows

    results = Results()
    _real_size_row(results, "onnx-fp32", "fp32", 100.0, 200.0)  # 100 GFLOP/s of 200
    _real_size_row(results, "onnx-int8", "int8", 50.0, 800.0)  # 200 GOP/s of 800 (not of 200)
    text = render_markdown(results)
    assert "| 100 | 50% |" in text
    assert "| 200 | 25% |" in text and "100%" not in text
    assert "fp32 200 GFLOP/s (fp32 gemm, best of 3); int8 800 GOP/s (int8 gemm" in text
    assert impossible_rows(results) == []


def test_real_sizes_refuse_a_row_above_its_peak() -> None:
    from bench.family_report import impossible_rows

    results = Results()
    _real_size_row(results, "onnx-fp32", "fp32", 40.0, 200.0)  # 250 GFLOP/s > peak 200
    text = render_markdown(results)
    assert "| 250 | refused: above peak |" in text and "125%" not in text.split("Refused")[0]
    assert impossible_rows(results) == [
        "RT-DETR-R18 onnx-fp32: 250 GFLOP/s is 125% of the measured peak 200: the measurement is "
        "wrong (not printed)"
    ]


def _outcome(fn: Any, *args: Any) -> tuple[str, str]:
    """How ``fn(*args)`` ends: ("failed"/"skipped", message) or ("returned", ""). Caught here,
    so a skip where a failure belongs fails this test instead of skipping it."""
    try:
        fn(*args)
    except pytest.fail.Exception as exc:
        return "failed", str(exc)
    except pytest.skip.Exception as exc:
        return "skipped", str(exc)
    return "returned", ""


def test_require_fails_a_broken_row_and_skips_one_not_asked_for() -> None:
    from bench.backends import Unavailable, require

    backends = {
        "onnx-int8": Unavailable("onnx-int8", "int8", "FAILED", "build: RuntimeError: boom"),
        "onnx-fp16": Unavailable("onnx-fp16", "fp16", "skipped", "GPU only, not run on cpu"),
        "openvino-int8": Unavailable("openvino-int8", "int8", "missing", "not exported"),
    }
    assert _outcome(require, backends, "onnx-int8") == (
        "failed", "onnx-int8: FAILED: build: RuntimeError: boom"
    )  # fmt: skip
    assert _outcome(require, backends, "onnx-fp16")[0] == "skipped"
    assert _outcome(require, backends, "openvino-int8")[0] == "skipped"
    assert _outcome(require, backends, "pytorch-compile")[0] == "skipped"


def test_a_converter_crash_or_a_missing_requested_variant_is_failed(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from bench.backends import _variant_row

    onnx = tmp_path / "model.onnx"
    crash = {"model": "model.int8.onnx", "passed": False, "failures": ["build: ValueError: x"]}
    (tmp_path / "model.int8.verify.failed.json").write_text(json.dumps(crash))
    variants = find_variants(onnx, requested=("int8", "fp16"))
    assert variants["int8"].status == "FAILED" and "build: ValueError: x" in variants["int8"].reason
    assert variants["fp16"].status == "FAILED"  # asked for, neither file nor failure report
    assert find_variants(onnx)["fp16"].status == "missing"  # not asked for: not judged
    cpu = SimpleNamespace(variants=("int8",), device="cpu")
    _, row = _variant_row("onnx-fp16", "fp16", variants["fp16"], cpu, requested=("fp16",))
    assert row is not None and row.status == "FAILED"  # failed, though not run on a CPU
    _, row = _variant_row("onnx-fp16", "fp16", find_variants(onnx)["fp16"], cpu)
    assert row is not None and row.status == "skipped"
