"""``python -m export``: newest run's best checkpoint -> verified ``model.onnx`` (+ variants).

Exit codes: 0 everything requested was written and verified; 1 verification failed (for the
fp32 model nothing is written; for a variant, the fp32 model is written and the variant is
not); 2 bad input (no run, missing or corrupt checkpoint, unsupported opset, unwritable
output), with a one-line message naming the path and no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from export.contract import DEFAULT_OPSET, SUPPORTED_OPSETS, check_opset
from export.errors import CannotWriteError, ExportError, VerificationError
from export.report import VerificationReport
from runtime.files import EXIT_CANNOT_WRITE

__all__ = ["build_parser", "main"]

logger = logging.getLogger("export")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m export``."""
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export an RT-DETR checkpoint to ONNX with post-processing, label map and "
        "preprocessing inside, verified against PyTorch before it is written.",
    )
    source = parser.add_argument_group("what to export")
    source.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="a run folder (runs/<name>) or an RT-DETR checkpoint folder; "
        "default: the newest run under --runs-dir",
    )
    source.add_argument(
        "--runs-dir",
        default="runs",
        metavar="DIR",
        help="parent folder of the runs (default: runs)",
    )
    source.add_argument(
        "--output",
        metavar="PATH",
        help="the .onnx file to write; default: model.onnx in the run folder",
    )
    graph = parser.add_argument_group("graph")
    graph.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1} "
        f"(default: {DEFAULT_OPSET})",
    )
    graph.add_argument(
        "--num-top-queries",
        type=int,
        metavar="K",
        help="detections per image (default: the model's num_queries)",
    )
    graph.add_argument(
        "--decoder-method",
        choices=("default", "discrete"),
        help="the decoder's deformable sampling: 'discrete' writes no GridSample (TensorRT "
        "< 8.5, NPU toolchains, ONNX Runtime WebGPU); RT-DETRv2, D-FINE and DEIMv2 only "
        "(default: the checkpoint's)",
    )
    variants = parser.add_argument_group("variants (each verified like the fp32 model)")
    variants.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx")
    variants.add_argument(
        "--int8",
        action="store_true",
        help="also write model.int8.onnx (static QDQ, calibrated on training images)",
    )
    variants.add_argument(
        "--int8-sym",
        action="store_true",
        help="also write model.int8-sym.onnx: symmetric int8 QDQ (zero points 0), the int8 "
        "TensorRT takes; slower than fp32 in ONNX Runtime on CPUs, use --int8 there",
    )
    variants.add_argument(
        "--simplify", action="store_true", help="also write model.slim.onnx (onnxslim)"
    )
    triton = parser.add_argument_group("Triton Inference Server")
    triton.add_argument("--triton", metavar="DIR", help="also write a model repository to DIR")
    triton.add_argument("--triton-name", default="rtdetr", help="model name (default: rtdetr)")
    triton.add_argument(
        "--triton-max-batch", type=int, default=8, help="max_batch_size (default: 8)"
    )
    verify = parser.add_argument_group("verification")
    verify.add_argument(
        "--max-images", type=int, default=64, help="most test images to verify on (default: 64)"
    )
    verify.add_argument(
        "--calibration-images",
        type=int,
        default=32,
        help="most training images to calibrate int8 on (default: 32)",
    )
    verify.add_argument(
        "--threads", type=int, help="ONNX Runtime threads while verifying (default: min(4, CPUs))"
    )
    return parser


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _parity_line(report: VerificationReport) -> str:
    top, thr = report.detections_top_n, report.detections_above_threshold
    if top is None or thr is None or report.max_abs_diff is None:
        return report.parity or "not verified"
    batch = report.dynamic_batch.agreement if report.dynamic_batch else float("nan")
    tied = top.boundary_excluded + thr.boundary_excluded
    return (
        f"top-{report.top_n} agreement {top.agreement:.3f}, score>={report.score_threshold} "
        f"agreement {thr.agreement:.3f} ({thr.reference_detections} detections), "
        f"matched |dscore| <= {thr.max_score_diff:.2g}, |dbox| <= "
        f"{thr.max_box_diff_px:.2g} px; per-query max |dscore| {report.max_abs_diff.scores:.2g}; "
        f"batch 2 agreement {batch:.3f}" + (f"; {tied} tied at the top-K boundary" if tied else "")
    )


def _map_line(report: VerificationReport) -> str:
    result = report.map
    if result is None or not result.measured:
        return f"not measured ({result.reason if result else 'not verified'})"
    return (
        f"PyTorch {result.pytorch['map']:.4f}, ONNX {result.onnx['map']:.4f} "
        f"(drop {result.map_drop:+.4f}) on {result.images} images"
    )


def _elsewhere_lines(report: VerificationReport) -> list[str]:
    """The OpenVINO outcome and the runtimes not run, when there are any."""
    lines = []
    ov = report.openvino
    if ov:
        drop = f", mAP drop {ov.map_drop:+.4f}" if ov.map_drop is not None else ""
        verdict = "ok" if ov.passed else "WRONG there: " + "; ".join(ov.failures)
        lines.append(f"{ov.runtime}: {verdict}{drop}")
    lines += [f"not verified: {note}" for note in report.not_verified]
    return lines


def _print_result(result: Any) -> int:
    from export.files import failed_report_path, report_path

    meta = result.metadata
    size_mb = result.path.stat().st_size / 1e6
    print(
        f"model     {result.path}  ({meta.precision}, opset {meta.opset}, {size_mb:.1f} MB, "
        f"{len(meta.id2label)} classes, input {meta.input_size[0]}x{meta.input_size[1]})"
    )
    print(f"parity    {_parity_line(result.report)}")
    print(f"mAP       {_map_line(result.report)}")
    for line in _elsewhere_lines(result.report):
        print(f"          {line}")
    print(f"report    {report_path(result.path)}")
    failed = 0
    for variant in result.variants:
        if variant.passed:
            print(f"{variant.name:<9} ok  {variant.path}")
            print(f"          {_parity_line(variant.report)}")
            print(f"          mAP {_map_line(variant.report)}")
            for line in _elsewhere_lines(variant.report):
                print(f"          {line}")
        else:
            failed += 1
            name = result.path.with_name(f"{result.path.stem}.{variant.name}.onnx")
            print(f"{variant.name:<9} FAILED, not written: {variant.error}")
            print(f"          report {failed_report_path(name)}")
    if result.triton is not None:
        print(f"triton    {result.triton} (config.pbtxt, 1/model.onnx)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    from export.checkpoint import resolve_checkpoint
    from export.pipeline import export_checkpoint

    variants = [
        name
        for name, wanted in (
            ("fp16", args.fp16),
            ("int8", args.int8),
            ("int8-sym", args.int8_sym),
            ("slim", args.simplify),
        )
        if wanted
    ]
    try:
        check_opset(args.opset)
        source = resolve_checkpoint(args.checkpoint, args.runs_dir)
        output = Path(args.output) if args.output else source.default_output
        result = export_checkpoint(
            source.checkpoint,
            output,
            opset=args.opset,
            variants=variants,
            triton_dir=args.triton,
            triton_name=args.triton_name,
            triton_max_batch=args.triton_max_batch,
            num_top_queries=args.num_top_queries,
            max_images=args.max_images,
            calibration_images=args.calibration_images,
            threads=args.threads,
            decoder_method=args.decoder_method,
        )
    except CannotWriteError as exc:
        return _fail(str(exc), code=EXIT_CANNOT_WRITE)
    except ExportError as exc:
        return _fail(str(exc))
    except VerificationError as exc:
        where = f" (report: {exc.report_path})" if exc.report_path else ""
        return _fail(f"{exc}{where}", code=1)
    return _print_result(result)
