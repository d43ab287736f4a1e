"""Served rows: ``python -m runtime.serve`` under load against in-process ``Detector``.

The benchmarked ONNX file is served on 127.0.0.1 (ONNX Runtime, ``--threads`` as the other
rows) and driven with tritonclient[http], default settings (binary tensors), the image path:
each request carries one encoded test image, the server decodes and preprocesses it. The
in-process row is ``Detector.predict`` on the same files in this process, same thread count.

- Concurrency 1: served and in-process requests interleaved one by one (same images, same
  order), so both see the same machine load; p50/p95 of each and the protocol's overhead,
  ``served p50 / in-process p50 - 1`` (target <= 15% on the default model). The tensor path
  (``images`` + ``orig_target_sizes`` against ``Detector.run``) is measured the same way: the
  cost of HTTP, JSON header and tensor copy alone.
- Concurrency 4 and 16: that many client threads, images/s and per-request p50/p95, with the
  server's batching on (``--max-batch 8``) and off (``--max-batch 1``): the batching gain.

Before any timing the served outputs must equal in-process ``Detector.run`` on the same input
(no silent wrong answers). ``--fast`` (CI): concurrency 1 and 4, a few requests, batching on
only. Results: printed, and ``serve.json`` beside the report.
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.report import Results
from bench.settings import BenchOptions
from runtime.detector import Detector
from runtime.files import atomic_write_json

http = pytest.importorskip("tritonclient.http", reason="pip install -e '.[dev]' (tritonclient)")
pytest.importorskip("kserve", reason="pip install -e '.[serve]'")
from runtime.serve.process import server_process  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FULL_LEVELS, FAST_LEVELS = (1, 4, 16), (1, 4)


def _image_request(client: Any, data: bytes) -> np.ndarray:
    tensor = http.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=object))
    return client.infer("rtdetr", [tensor]).as_numpy("scores")


def _tensor_request(client: Any, feed: dict[str, np.ndarray]) -> np.ndarray:
    inputs = []
    for name, datatype in (("images", "FP32"), ("orig_target_sizes", "INT64")):
        tensor = http.InferInput(name, list(feed[name].shape), datatype)
        tensor.set_data_from_numpy(feed[name])
        inputs.append(tensor)
    return client.infer("rtdetr", inputs).as_numpy("scores")


def _stats(times_s: list[float]) -> dict[str, float]:
    ms = np.asarray(times_s) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "n": len(ms)}  # fmt: skip


def _interleaved(served: Any, local: Any, count: int, warmup: int = 2) -> dict[str, Any]:
    """Alternate served and in-process calls (which goes first alternates too); medians,
    spread, the overhead ratio and the quartiles of the per-pair ratios."""
    for i in range(warmup):
        served(i), local(i)
    times: dict[str, list[float]] = {"served": [], "in_process": []}
    for i in range(count):
        order = [("served", served), ("in_process", local)][:: 1 if i % 2 else -1]
        for name, call in order:
            start = time.perf_counter()
            call(i)
            times[name].append(time.perf_counter() - start)
    ratios = np.asarray(times["served"]) / np.asarray(times["in_process"])
    median = statistics.median
    return {
        "served": _stats(times["served"]),
        "in_process": _stats(times["in_process"]),
        "overhead": median(times["served"]) / median(times["in_process"]) - 1,
        "pair_ratio_p25_p75": [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))],
    }


def _load(make_call: Any, clients: int, requests_each: int) -> dict[str, Any]:
    """``clients`` threads x ``requests_each`` calls: images/s and per-request latency.
    ``make_call()`` gives each thread its own ``call(i)`` (its own HTTP client)."""

    def worker(index: int) -> list[float]:
        call, times = make_call(), []
        for i in range(requests_each):
            start = time.perf_counter()
            call(index + i)
            times.append(time.perf_counter() - start)
        return times

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [t for part in pool.map(worker, range(clients)) for t in part]
    wall = time.perf_counter() - start
    return {**_stats(latencies), "images_per_s": len(latencies) / wall}


@dataclass
class Inputs:
    """The test images: files, their paths, their feeds, and the in-process detector."""

    paths: list[Path]
    files: list[bytes]
    feeds: list[dict[str, np.ndarray]]
    detector: Detector


@pytest.fixture(scope="module")
def inputs(artifacts: Any, bench_options: BenchOptions) -> Inputs:
    from finetune.datasets import load_dataset

    paths = [Path(p) for p in load_dataset(artifacts.dataset).test.image_paths][:16]
    detector = Detector(artifacts.onnx, providers=["cpu"], threads=bench_options.threads)
    feeds = [detector.prepare([p]) for p in paths]
    return Inputs(paths, [p.read_bytes() for p in paths], feeds, detector)


def _serve(artifacts: Any, options: BenchOptions, log: Path, max_batch: int) -> Any:
    flags = ("--threads", str(options.threads), "--max-batch", str(max_batch))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RTDETR_DEPLOY_API_KEY", None)
    return server_process(artifacts.onnx, log, flags, env=env)


def _gate(url: str, inputs: Inputs) -> None:
    """Served == in-process on two images, both paths, before anything is timed."""
    client = http.InferenceServerClient(url, network_timeout=120)
    for feed, data in zip(inputs.feeds[:2], inputs.files[:2], strict=False):
        expected = inputs.detector.run(feed)[2]
        np.testing.assert_array_equal(_tensor_request(client, feed), expected)
        np.testing.assert_array_equal(_image_request(client, data), expected)


def _concurrency_one(url: str, inputs: Inputs, count: int) -> dict[str, Any]:
    client = http.InferenceServerClient(url, network_timeout=120)
    n, detector = len(inputs.files), inputs.detector
    image = _interleaved(
        lambda i: _image_request(client, inputs.files[i % n]),
        lambda i: detector.predict(str(inputs.paths[i % n]), 0.5),
        count,
    )
    tensor = _interleaved(
        lambda i: _tensor_request(client, inputs.feeds[i % n]),
        lambda i: detector.run(inputs.feeds[i % n]),
        count,
    )
    return {"c1_image": image, "c1_tensor": tensor}


def _served_call(url: str, inputs: Inputs) -> Any:
    client = http.InferenceServerClient(url, network_timeout=120)
    return lambda i: _image_request(client, inputs.files[i % len(inputs.files)])


def _local_call(inputs: Inputs) -> Any:
    return lambda i: inputs.detector.predict(str(inputs.paths[i % len(inputs.paths)]))


def test_served_rows(artifacts, bench_options, inputs, results: Results, tmp_path):
    """The served rows (see the module docstring); fails if served != in-process."""
    fast = bench_options.fast
    count = 4 if fast else max(bench_options.rounds, 30)
    levels = FAST_LEVELS if fast else FULL_LEVELS
    report: dict[str, Any] = {
        "cpu": results.environment.get("cpu"),
        "threads": bench_options.threads,
        "load_before": os.getloadavg(),
    }
    for max_batch in (8,) if fast else (8, 1):
        with _serve(artifacts, bench_options, tmp_path / f"{max_batch}.log", max_batch) as server:
            _gate(server.url, inputs)
            row = _concurrency_one(server.url, inputs, count) if max_batch == 8 else {}
            for level in levels:
                each = count if level == 1 else max(2, 2 * count // level)
                row[f"c{level}_served"] = _load(lambda s=server: _served_call(s.url, inputs),
                                                level, each)  # fmt: skip
                if max_batch == 8:
                    row[f"c{level}_in_process"] = _load(lambda: _local_call(inputs), level, each)
        report[f"max_batch_{max_batch}"] = row
    report["load_after"] = os.getloadavg()
    print("\n" + "\n".join(_lines(report, levels)))
    if results.report_dir is not None:
        atomic_write_json(Path(results.report_dir) / "serve.json", report)
    overhead = report["max_batch_8"]["c1_image"]["overhead"]
    results.notes.append(
        f"served (kserve REST, image path, concurrency 1): {overhead:+.0%} over in-process "
        "Detector.predict (serve.json)"
    )


def _lines(report: dict[str, Any], levels: tuple[int, ...]) -> list[str]:
    on, off = report["max_batch_8"], report.get("max_batch_1", {})
    lines = [f"served rows, threads {report['threads']}, load {report['load_before']}"]
    for key in ("c1_image", "c1_tensor"):
        r, s, p = on[key], on[key]["served"], on[key]["in_process"]
        lines.append(
            f"  {key}: served p50 {s['p50_ms']:.1f} p95 {s['p95_ms']:.1f} ms | in-process p50 "
            f"{p['p50_ms']:.1f} p95 {p['p95_ms']:.1f} ms | overhead {r['overhead']:+.1%} "
            f"(pair ratios p25-p75 {r['pair_ratio_p25_p75'][0]:.3f}-"
            f"{r['pair_ratio_p25_p75'][1]:.3f})"
        )
    for level in levels:
        cells = [(name, row.get(key)) for name, row, key in (
            ("served", on, f"c{level}_served"), ("in-process", on, f"c{level}_in_process"),
            ("served, --max-batch 1", off, f"c{level}_served"))]  # fmt: skip
        text = "; ".join(
            f"{name} {r['images_per_s']:.1f} img/s p50 {r['p50_ms']:.1f} p95 {r['p95_ms']:.1f} ms"
            for name, r in cells
            if r
        )
        lines.append(f"  c{level}: {text}")
    return lines
