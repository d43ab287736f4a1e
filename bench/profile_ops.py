"""Where an ONNX graph spends its time in ONNX Runtime, by operator type.

``python -m bench.profile_ops MODEL.onnx [--runs 20] [--threads 2]`` runs the model on a
random input at its metadata's input size with ONNX Runtime's profiler on, and prints the
kernel time per operator type (after ORT's graph optimisations, so fused kernels appear
under their fused names: ``QLinearConv``/``ConvInteger`` style int8 kernels, ``FusedConv``,
``QuickGelu``...), grouped as int8 kernels, Q/DQ left unfused, layout (Transpose/Reshape...),
and float compute, with each group's share. The int8 recipe in ``export/variants.py`` quotes
its output.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

__all__ = ["main", "profile_by_op"]

INT8_HINTS = (
    "QLinear",
    "Integer",
    "QGemm",
    "QAttention",
    "DynamicQuantize",
    "MatMulIntegerToFloat",
)
QDQ = ("QuantizeLinear", "DequantizeLinear")
LAYOUT = ("Transpose", "Reshape", "Concat", "Split", "Slice", "Gather", "Squeeze", "Unsqueeze",
          "Flatten", "Expand", "Tile", "Shape", "ReorderInput", "ReorderOutput")  # fmt: skip


def group_of(op: str) -> str:
    """``int8``, ``Q/DQ``, ``layout`` or ``float`` for an executed operator type."""
    if any(hint in op for hint in INT8_HINTS):
        return "int8"
    if op in QDQ:
        return "Q/DQ"
    if op in LAYOUT:
        return "layout"
    return "float"


def profile_by_op(path: Path, runs: int = 20, threads: int = 2) -> dict[str, float]:
    """Milliseconds per run spent in each operator type (ORT's kernel times, warm-up run
    excluded)."""
    import onnxruntime as ort

    from runtime.metadata import ModelMetadata
    from runtime.session import session_options

    options = session_options(threads)
    with tempfile.TemporaryDirectory() as folder:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        props = session.get_modelmeta().custom_metadata_map
        height, width = ModelMetadata.from_props(props, source=str(path)).input_size
        rng = np.random.default_rng(0)
        feed = {"images": rng.random((1, 3, height, width), dtype=np.float32),
                "orig_target_sizes": np.array([[width, height]], np.int64)}  # fmt: skip
        for _ in range(runs + 1):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    model_runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    warm_end = model_runs[0]["ts"] + model_runs[0]["dur"] if model_runs else 0
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        kernel = event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
        if kernel and event["ts"] >= warm_end:
            totals[event["args"]["op_name"]] += event["dur"] / 1000 / runs
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_ops", description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    ops = profile_by_op(args.model, args.runs, args.threads)
    total = sum(ops.values())
    groups: dict[str, float] = defaultdict(float)
    for op, ms in ops.items():
        groups[group_of(op)] += ms
    print(f"{args.model}: {total:.2f} ms of kernel time per run ({args.threads} threads)")
    print("  " + ", ".join(f"{g} {ms:.2f} ms ({ms / total:.0%})" for g, ms in groups.items()))
    for op, ms in list(ops.items())[: args.top]:
        print(f"  {op:<28} {ms:8.2f} ms  {ms / total:5.1%}  [{group_of(op)}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
