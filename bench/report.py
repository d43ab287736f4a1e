"""The results registry the tests fill, and the report made from it (terminal, md, json, png).

Latency tests record raw round times (``benchmark.stats.stats.data``); under
``--benchmark-disable`` there are none and the table says "not measured".
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finetune.runs import atomic_write_json
from runtime.files import atomic_write_figure

__all__ = [
    "Accuracy",
    "BackendRow",
    "Latency",
    "Results",
    "describe_environment",
    "render_markdown",
    "write_report",
]

MODEL, E2E = "model-only", "end-to-end"


@dataclass
class Latency:
    """Round times of one benchmark (seconds, one call per round)."""

    backend: str
    kind: str
    batch: int
    times_s: list[float] | None
    info: dict[str, Any] = field(default_factory=dict)

    def percentile_ms(self, q: float) -> float | None:
        if not self.times_s:
            return None
        return float(np.percentile(np.asarray(self.times_s) * 1000, q))

    @property
    def p50_ms(self) -> float | None:
        return self.percentile_ms(50)

    @property
    def p95_ms(self) -> float | None:
        return self.percentile_ms(95)

    @property
    def images_per_s(self) -> float | None:
        p50 = self.p50_ms
        return self.batch * 1000 / p50 if p50 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "kind": self.kind,
            "batch": self.batch,
            "rounds": len(self.times_s or []),
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "mean_ms": float(np.mean(self.times_s) * 1000) if self.times_s else None,
            "images_per_s": self.images_per_s,
            "info": self.info,
        }


@dataclass
class Accuracy:
    """mAP of one backend on the test split, and its agreement with PyTorch."""

    backend: str
    metrics: dict[str, float]
    images: int
    consistency: float | None = None  # mAP50:95 against PyTorch's top detections
    diff: float | None = None  # mAP50:95 minus PyTorch's
    tolerance: float | None = None
    e2e_metrics: dict[str, float] | None = None  # own preprocessing, from decoded images
    e2e_diff: float | None = None
    failures: list[str] = field(default_factory=list)  # the gates it failed (bench.gates)


@dataclass
class BackendRow:
    """A backend in the table: measured, or failed/missing/skipped and why."""

    name: str
    runtime: str
    precision: str
    status: str = "ok"
    reason: str = ""
    size_mb: float | None = None
    providers: list[str] = field(default_factory=list)
    compile_s: float | None = None  # torch.compile: wall time of the first call


@dataclass
class Results:
    """Session-wide registry: filled by the tests, read by the claims test and the report."""

    environment: dict[str, Any] = field(default_factory=dict)
    backends: dict[str, BackendRow] = field(default_factory=dict)
    latency: dict[tuple[str, str, int], Latency] = field(default_factory=dict)
    accuracy: dict[str, Accuracy] = field(default_factory=dict)
    real_sizes: dict[tuple[str, str], Latency] = field(default_factory=dict)
    claims: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report_dir: Path | None = None
    batch: int = 1  # --batch: the throughput case
    predictions: dict[str, Any] = field(default_factory=dict)  # not reported: for parity

    def get(self, backend: str, kind: str, batch: int) -> Latency | None:
        return self.latency.get((backend, kind, batch))

    def gate(self, backend: str) -> str:
        """``passed``, ``FAILED`` or ``not gated``: the accuracy gates of ``backend`` on the
        benchmarked model (the real sizes, random weights, inherit it per runtime and precision)."""
        acc = self.accuracy.get(backend)
        if acc is None:
            return "not gated"
        return "FAILED" if acc.failures else "passed"

    def record_compile(self, backend: Any) -> None:
        """Copy a compiled backend's compile time (its first call) into its row."""
        seconds = getattr(backend, "compile_s", None)
        if seconds is not None and backend.name in self.backends:
            self.backends[backend.name].compile_s = seconds

    @property
    def empty(self) -> bool:
        return not (self.latency or self.accuracy or self.real_sizes)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per backend with the table's numbers (None: not measured)."""
        batch_n = self.batch
        eager = self.get("pytorch", MODEL, 1)
        compiled = self.get("pytorch-compile", MODEL, 1)
        out = []
        for row in self.backends.values():
            model, e2e = self.get(row.name, MODEL, 1), self.get(row.name, E2E, 1)
            many = self.get(row.name, MODEL, batch_n) if batch_n > 1 else None
            acc = self.accuracy.get(row.name)
            out.append(
                {
                    **asdict(row),
                    "map": acc.metrics["map"] if acc else None,
                    "map_50": acc.metrics["map_50"] if acc else None,
                    "map_diff": acc.diff if acc else None,
                    "consistency": acc.consistency if acc else None,
                    "e2e_map": acc.e2e_metrics["map"] if acc and acc.e2e_metrics else None,
                    "gates_passed": (not acc.failures) if acc else None,
                    "model_p50_ms": model.p50_ms if model else None,
                    "model_p95_ms": model.p95_ms if model else None,
                    "e2e_p50_ms": e2e.p50_ms if e2e else None,
                    "e2e_p95_ms": e2e.p95_ms if e2e else None,
                    "fps_e2e": e2e.images_per_s if e2e else None,
                    "batch_n": batch_n,
                    "batch_n_images_per_s": many.images_per_s if many else None,
                    "speedup_vs_pytorch": _ratio(eager, model),
                    "speedup_vs_compiled": _ratio(compiled, model),
                }
            )
        return out

    def decision(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The rows that passed the accuracy gates, fastest first (model-only p50, batch 1),
        and the rows that are not ranked (failed, or not timed or gated)."""
        rows = self.rows()
        ranked = [
            r for r in rows if r["status"] == "ok" and r["gates_passed"] and r["model_p50_ms"]
        ]
        ranked.sort(key=lambda r: r["model_p50_ms"])
        return ranked, [r for r in rows if r not in ranked and r["status"] != "skipped"]

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "rows": self.rows(),
            "latency": [lat.to_dict() for lat in self.latency.values()],
            "accuracy": [asdict(acc) for acc in self.accuracy.values()],
            "real_sizes": [lat.to_dict() for lat in self.real_sizes.values()],
            "claims": [asdict(c) for c in self.claims],
            "notes": self.notes,
        }


def _ratio(slow: Latency | None, fast: Latency | None) -> float | None:
    if slow and fast and slow.p50_ms and fast.p50_ms:
        return slow.p50_ms / fast.p50_ms
    return None


def describe_environment(device: str, threads: int, warmup: int, rounds: int) -> dict[str, Any]:
    """The machine, threads and versions, for the report's header."""
    import onnxruntime
    import torch
    import transformers

    from bench.settings import default_threads

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    return {
        "device": f"cuda ({torch.cuda.get_device_name()})" if device == "cuda" else f"cpu ({cpu})",
        "threads": threads,
        "cores available": default_threads(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "versions": f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"transformers {transformers.__version__}, python {platform.python_version()}",
        "rounds": f"{warmup} warm-up + {rounds} timed (latency)",
    }


def _f(value: float | None, fmt: str = ".1f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{fmt}}{suffix}"


def render_decision(results: Results) -> list[str]:
    """The answer first: what to ship on this machine, and what was not ranked."""
    ranked, unranked = results.decision()
    best = ranked[0] if ranked else None
    if best is None:
        return ["**Decision:** no row was both timed and accuracy-gated in this run.", ""]
    versus = [
        f"{best[key]:.2f}x {what}"
        for key, what in (("speedup_vs_pytorch", "PyTorch eager"),
                          ("speedup_vs_compiled", "torch.compile"))
        if best[key] is not None and best["name"] not in ("pytorch", "pytorch-compile")
    ]  # fmt: skip
    speed = f" ({' and '.join(versus)})" if versus else ""
    lines = [
        f"**Decision: ship {best['runtime']} {best['precision']}** ({best['name']}): model-only "
        f"p50 {best['model_p50_ms']:.2f} ms at batch 1{speed}; passes the accuracy gates "
        f"(ΔmAP50:95 {_f(best['map_diff'], '+.4f')}, consistency "
        f"{_f(best['consistency'], '.4f')}); end-to-end {_f(best['fps_e2e'])} FPS.",
        "",
    ]
    if len(ranked) > 1:
        second = ranked[1]
        close = second["model_p50_ms"] <= (best["model_p95_ms"] or best["model_p50_ms"])
        lines[-1:-1] = [
            f"Runner-up: {second['runtime']} {second['precision']}, "
            f"{second['model_p50_ms']:.2f} ms p50 "
            f"({second['model_p50_ms'] / best['model_p50_ms']:.2f}x the winner's time"
            + ("; within the winner's p95, so a tie on this machine)." if close else ").")
        ]
    for r in unranked:
        why = r["reason"] or "not timed or not gated in this run"
        lines.append(f"- not ranked: {r['runtime']} {r['precision']}: {r['status']}: {why}")
    return [*lines, ""] if unranked else lines


def render_table(results: Results) -> list[str]:
    """The main table, markdown (reads fine in a terminal too)."""
    rows = results.rows()
    if not rows:
        return []
    n = rows[0]["batch_n"]
    lines = [
        "| backend | precision | size MB | mAP50:95 | ΔmAP | consistency | end-to-end mAP | "
        f"model ms p50 / p95 | end-to-end ms p50 | FPS | batch {n} img/s | vs eager | "
        "vs compiled | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(
                f"| {r['runtime']} | {r['precision']} | {_f(r['size_mb'])} | "
                f"{r['status']}: {r['reason'][:160].replace('|', '/')} |||||||||||"
            )
            continue
        lines.append(
            f"| {r['runtime']} | {r['precision']} | {_f(r['size_mb'])} | {_f(r['map'], '.4f')} | "
            f"{_f(r['map_diff'], '+.4f')} | {_f(r['consistency'], '.4f')} | "
            f"{_f(r['e2e_map'], '.4f')} | {_f(r['model_p50_ms'], '.2f')} / "
            f"{_f(r['model_p95_ms'], '.2f')} | {_f(r['e2e_p50_ms'], '.2f')} | "
            f"{_f(r['fps_e2e'])} | {_f(r['batch_n_images_per_s'])} | "
            f"{_f(r['speedup_vs_pytorch'], '.2f', 'x')} | "
            f"{_f(r['speedup_vs_compiled'], '.2f', 'x')} | {_f(r['compile_s'], '.0f')} |"
        )
    return lines


def render_markdown(results: Results) -> str:
    """The whole report: environment, table, how to read it, real sizes, claims, notes."""
    env = results.environment
    lines = ["# rtdetr-deploy benchmark", ""]
    if results.rows():
        lines += render_decision(results)
    lines += [f"- {k}: {v}" for k, v in env.items()]
    if table := render_table(results):
        lines += ["", *table, ""]
        lines += [
            "mAP50:95, ΔmAP (vs PyTorch eager) and consistency (detections vs PyTorch's): model "
            "parity, every backend fed the SAME preprocessed tensors of the test split (the "
            "accuracy gates, bench/gates.py); end-to-end mAP: each backend's own preprocessing "
            "from the decoded images. model = preprocessed tensor in -> labels/boxes/scores out "
            "(RT-DETR post-processing included), batch 1; end-to-end = decode file + preprocess "
            "+ model + threshold, batch 1; FPS = 1000 / end-to-end p50; batch N img/s = "
            "model-only throughput; vs eager / vs compiled = that model p50 / this model p50; "
            "compile s = torch.compile's first call in this run (inductor reuses its on-disk "
            "cache across runs: measured here 70 s cold, 7 s warm).",
            "",
        ]
    from bench.family_report import render_real_sizes

    if real := render_real_sizes(results):
        lines += [*real, ""]
    if results.claims:
        lines += ["Claims:", ""]
        lines += [f"- **{c.status}** — {c.claim}: {c.detail}" for c in results.claims]
        lines.append("")
    if results.notes:
        lines += ["Notes:", "", *[f"- {note}" for note in results.notes], ""]
    return "\n".join(lines)


def plot(results: Results, path: Path) -> Path:
    """Latency (p50 with p95 whiskers) and mAP per backend, as a PNG."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state

    rows = [r for r in results.rows() if r["status"] == "ok"]
    names = [f"{r['runtime']}\n{r['precision']}" for r in rows]
    x = np.arange(len(rows))
    fig = Figure(figsize=(10, 4), dpi=110)
    ax_lat, ax_map = fig.subplots(1, 2)
    for offset, (key, label) in enumerate((("model", "model-only"), ("e2e", "end-to-end"))):
        p50 = np.array([r[f"{key}_p50_ms"] or 0.0 for r in rows])
        p95 = np.array([r[f"{key}_p95_ms"] or 0.0 for r in rows])
        err = np.vstack([np.zeros_like(p50), np.maximum(p95 - p50, 0)])
        ax_lat.bar(x + (offset - 0.5) * 0.38, p50, 0.38, yerr=err, capsize=3, label=label)
    ax_lat.set_xticks(x, names)
    ax_lat.set_ylabel("ms per call, batch 1 (bar p50, whisker p95)")
    ax_lat.set_title("latency")
    ax_lat.legend()
    ax_map.bar(x - 0.19, [r["map"] or 0.0 for r in rows], 0.38, label="mAP50:95")
    ax_map.bar(x + 0.19, [r["map_50"] or 0.0 for r in rows], 0.38, label="mAP50")
    ax_map.set_xticks(x, names)
    ax_map.set_ylim(0, 1)
    ax_map.set_title("accuracy (test split)")
    ax_map.legend(loc="lower right")
    fig.suptitle(
        f"{results.environment.get('device', '')}, {results.environment.get('threads', '')} threads"
    )
    fig.tight_layout()
    atomic_write_figure(path, fig)  # rendered in memory, size-checked (runtime.files)
    return path


def write_report(results: Results, folder: Path) -> list[Path]:
    """``bench_report.md`` and ``.json`` in ``folder``, with ``bench_report.png`` (the main
    table's chart) and ``bench_real_sizes.png`` (latency per family and runtime) where those
    were measured."""
    from bench.family_report import plot_real_sizes

    folder.mkdir(parents=True, exist_ok=True)
    md, js, png = (folder / f"bench_report.{ext}" for ext in ("md", "json", "png"))
    md.write_text(render_markdown(results))
    atomic_write_json(js, json.loads(json.dumps(results.to_json(), default=str)))
    written = [md, js]
    if results.rows():
        written.append(plot(results, png))
    if results.real_sizes:
        written.append(plot_real_sizes(results, folder / "bench_real_sizes.png"))
    return written
