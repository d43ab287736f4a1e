"""The real-size part of the report: which family, runtime and precision to ship, and a chart.

Read from ``Results.real_sizes`` (``(size key, row name) -> Latency``; bench/test_real_sizes.py
fills it, each row's gate in ``info["gate"]``). Rows that failed their gate are listed with
the reason, drawn hatched (timed) or as a cross (not runnable) in the chart: never left out,
never ranked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["fastest_per_size", "impossible_rows", "plot_real_sizes", "render_real_sizes"]


def _f(value: float | None, fmt: str = ".1f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{fmt}}{suffix}"


def _rate(lat: Any) -> float | None:
    gflops = lat.info.get("gflops")
    return gflops / lat.p50_ms * 1000 if gflops and lat.p50_ms else None


def _percent(rate: float | None, peak: float | None) -> str:
    """A rate as % of its precision's peak, or why it is not printed."""
    from bench.flops import ImpossibleFigure, percent_of_peak

    if not (rate and peak):
        return "—"
    try:
        return f"{percent_of_peak(rate, peak):.0f}%"
    except ImpossibleFigure:
        return "refused: above peak"


def _label(size: str, lat: Any) -> str:
    return str(lat.info.get("label") or size)


def impossible_rows(results: Any) -> list[str]:
    """Real-size rows whose rate exceeds their precision's measured peak (wrong measurements)."""
    from bench.flops import ImpossibleFigure, percent_of_peak

    found = []
    for (size, backend), lat in results.real_sizes.items():
        rate, peak = _rate(lat), lat.info.get("peak_gflops")
        if rate and peak:
            try:
                percent_of_peak(rate, peak)
            except ImpossibleFigure as exc:
                found.append(f"{_label(size, lat)} {backend}: {exc}")
    return found


def _gated(lat: Any) -> bool:
    return str(lat.info.get("gate", "not gated")) == "passed" and bool(lat.p50_ms)


def fastest_per_size(results: Any) -> dict[str, tuple[str, Any]]:
    """Per size, its fastest row that passed its gate (model-only p50): (row name, latency)."""
    best: dict[str, tuple[str, Any]] = {}
    for (size, backend), lat in results.real_sizes.items():
        if _gated(lat) and (size not in best or lat.p50_ms < best[size][1].p50_ms):
            best[size] = (backend, lat)
    return best


def _peaks_line(results: Any) -> str:
    peaks = {}  # precision -> (peak, kernel, how) of the first row that has one
    for lat in results.real_sizes.values():
        info = lat.info
        if info.get("peak_gflops") and info.get("precision") not in peaks:
            peaks[info["precision"]] = (info["peak_gflops"], info.get("peak_kernel"),
                                        info.get("peak_how"))  # fmt: skip
    return "; ".join(
        f"{precision} {peak:.0f} {'GOP/s' if precision == 'int8' else 'GFLOP/s'} ({kernel}, {how})"
        for precision, (peak, kernel, how) in peaks.items()
    )


def render_real_sizes(results: Any) -> list[str]:
    """The families' table (markdown): every row, gated or FAILED, then the fastest per size."""
    if not results.real_sizes:
        return []
    lines = [
        "Real sizes: each family's published sizes at their native input size (random weights, "
        "latency only; model-only, batch 1; interleaved rounds). Gate: the graph passes "
        "export's verification in that runtime against PyTorch on the same weights; a FAILED "
        "row is timed where it runs, never ranked; GFLOP/s = the graph's Conv/MatMul/Gemm "
        "FLOPs / p50; % peak = of this machine's measured peak of the row's precision, the peak "
        "GEMMs timed in the same "
        f"interleaved rounds (bench/flops.py): {_peaks_line(results) or 'not measured'}:",
        "",
        "| model | input | params M | GFLOPs | runtime | precision | gate | ms p50 (p5-p95) | "
        "FPS | vs eager | GFLOP/s | % peak | rounds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (size, backend), lat in results.real_sizes.items():
        info = lat.info
        eager = results.real_sizes.get((size, "pytorch"))
        speedup = eager.p50_ms / lat.p50_ms if eager and eager.p50_ms and lat.p50_ms else None
        rate = _rate(lat)
        spread = f"{_f(lat.percentile_ms(5), '.0f')}-{_f(lat.percentile_ms(95), '.0f')}"
        timed = f"{_f(lat.p50_ms, '.0f')} ({spread})" if lat.p50_ms else "not run"
        gate = str(info.get("gate", "not gated")).replace("|", "/")[:160]
        lines.append(
            f"| {_label(size, lat)} | {_f(info.get('image_size'), 'd')} px | "
            f"{_f(info.get('params_m'))} | {_f(info.get('gflops'))} | "
            f"{info.get('runtime', backend)} | {info.get('precision', '')} | {gate} | {timed} | "
            f"{_f(lat.images_per_s, '.2f')} | {_f(speedup, '.2f', 'x')} | {_f(rate, '.0f')} | "
            f"{_percent(rate, info.get('peak_gflops'))} | {len(lat.times_s or [])} |"
        )
    if best := fastest_per_size(results):
        lines += ["", "Fastest gated row per size (model-only p50, batch 1, this machine):", ""]
        for size, (_, lat) in sorted(best.items(), key=lambda item: item[1][1].p50_ms):
            lines.append(
                f"- {_label(size, lat)}: {lat.info.get('runtime')} {lat.info.get('precision')} "
                f"{lat.p50_ms:.0f} ms ({lat.images_per_s:.1f} FPS)"
            )
    if wrong := impossible_rows(results):
        lines += ["", "Refused (a rate above its measured peak is a wrong measurement):"]
        lines += [f"- {line}" for line in wrong]
    return lines


def plot_real_sizes(results: Any, path: Path) -> Path:
    """One PNG: model-only p50 per size (grouped by family) and row; FAILED rows as crosses."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state

    from runtime.files import atomic_write_figure

    sizes = list(dict.fromkeys(size for size, _ in results.real_sizes))
    rows = list(dict.fromkeys(backend for _, backend in results.real_sizes))
    width = 0.8 / max(len(rows), 1)
    y = np.arange(len(sizes))
    timed = [lat.p50_ms for lat in results.real_sizes.values() if _gated(lat)]
    floor = min(timed) / 2 if timed else 1.0  # where a FAILED row's cross goes (log axis)
    fig = Figure(figsize=(10, 1.2 + 0.55 * len(sizes) * max(1, len(rows) / 3)), dpi=110)
    ax = fig.subplots()
    for index, backend in enumerate(rows):
        offset = y - 0.4 + width * (index + 0.5)
        lats = [results.real_sizes.get((size, backend)) for size in sizes]
        p50 = np.array([lat.p50_ms if lat is not None and _gated(lat) else np.nan for lat in lats])
        bars = ax.barh(offset, p50, width, label=backend)
        color = bars.patches[0].get_facecolor()
        failed = [lat is not None and not _gated(lat) for lat in lats]
        timed = np.array([lat.p50_ms if f and lat.p50_ms else np.nan
                          for f, lat in zip(failed, lats, strict=True)])  # fmt: skip
        ax.barh(offset, timed, width, color=color, alpha=0.35, hatch="//", edgecolor=color)
        crosses = [i for i, f in enumerate(failed) if f and np.isnan(timed[i])]
        if crosses:
            ax.plot([floor] * len(crosses), offset[crosses], "x", markersize=9, mew=2, color=color)
    labels = {size: _label(size, lat) for (size, _), lat in results.real_sizes.items()}
    ax.set_yticks(y, [labels[size] for size in sizes])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(
        "model-only p50, ms per image, batch 1 (log scale); hatched: FAILED its gate (timed, "
        "not ranked); x: FAILED, could not run"
    )
    ax.legend(loc="lower right", fontsize=8)
    env = results.environment
    ax.set_title(
        f"real sizes, random weights, latency only: {env.get('device', '')}, "
        f"{env.get('threads', '')} threads",
        fontsize=9,
    )
    fig.tight_layout()
    atomic_write_figure(path, fig)
    return path
