"""``export_checkpoint``: checkpoint -> verified ``model.onnx`` (+ variants, + Triton repository).

Every file is written under a temporary name, verified, and only then renamed to its final
name. The fp32 model must pass or nothing is published (:class:`VerificationError`); a variant
that fails is reported as failed and not published, and the fp32 model still ships. Once a
new ``model.onnx`` is published, variants beside it from an earlier export are removed (they
were built from the old model), so every ``model.*.onnx`` in the folder belongs to it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from export.checkpoint import LoadedCheckpoint, load_checkpoint, resolve_checkpoint
from export.contract import check_opset
from export.errors import ExportError, VerificationError, write_failure
from export.files import (
    failed_report_path,
    prepare_output,
    publish,
    report_path,
    staging_path,
    variant_path,
)
from export.report import RuntimeOutcome, VerificationReport
from export.samples import VerificationImages, caller_images, dataset_images
from finetune.runs import remove_stale_temp
from runtime.errors import first_line
from runtime.files import atomic_write_json, cannot_write, json_bytes
from runtime.metadata import ModelMetadata
from runtime.sidecar import sidecar_document, sidecar_path

__all__ = ["VARIANTS", "ExportResult", "VariantResult", "export_checkpoint"]

logger = logging.getLogger("export")

VARIANTS = ("fp16", "int8", "int8-sym", "slim")  # written as model.<variant>.onnx
INT8_VARIANTS = ("int8", "int8-sym")  # calibrated on training images
# Where the int8-sym variant is meant to run but cannot be checked by this toolkit.
NOT_VERIFIED = {
    "int8-sym": [
        "TensorRT: not run here (export has no GPU runtime); the graph is checked to be "
        "TensorRT-shaped (signed int8 QDQ, zero points 0)"
    ]
}


@dataclass
class VariantResult:
    """One variant (``fp16``, ``int8``, ``int8-sym``, ``slim``): published path, or why it
    failed."""

    name: str
    path: Path | None
    passed: bool
    report: VerificationReport
    error: str | None = None


@dataclass
class ExportResult:
    """The published fp32 model, its verification report and its metadata.

    Attributes:
        path: The verified model, under its final name.
        report: The verification report (also in ``<model>.verify.json``).
        metadata: What the file carries in ``metadata_props``.
        variants: One entry per requested variant, passed or not.
        triton: The Triton model folder, when one was written.
    """

    path: Path
    report: VerificationReport
    metadata: ModelMetadata
    variants: list[VariantResult] = field(default_factory=list)
    triton: Path | None = None


@dataclass
class _Context:
    loaded: LoadedCheckpoint
    images: VerificationImages | None
    reference: Any
    threads: int | None
    verify: bool
    openvino: bool = True


def _verified(report: VerificationReport, final: Path) -> dict[str, Any] | None:
    """The sidecar's ``verified`` entry: where parity with PyTorch was checked, if it was.

    The first keys describe the ONNX Runtime check that gates publication; ``runtimes`` lists
    every runtime the file was run in with its outcome (OpenVINO where installed), and
    ``not_verified`` the runtimes it is meant for but that were not run.
    """
    if report.provider is None:  # verify=False: graph checks only
        return None
    version = report.versions.get("onnxruntime-gpu") or report.versions.get("onnxruntime", "")
    runtime = f"onnxruntime {version}".strip()
    runtimes = [_outcome(runtime, report)]
    if report.openvino is not None:
        runtimes.append(report.openvino)
    entry = {
        "runtime": runtime,
        "provider": report.provider,
        "against": f"PyTorch (transformers {report.versions.get('transformers', '')})",
        "images": report.images,
        "report": report_path(final).name,
        "runtimes": [dataclasses.asdict(outcome) for outcome in runtimes],
    }
    if report.not_verified:
        entry["not_verified"] = list(report.not_verified)
    return entry


def _outcome(runtime: str, report: VerificationReport) -> RuntimeOutcome:
    """One runtime's verification in a line: passed, the mAP drop and the agreement."""
    measured = report.map is not None and report.map.measured
    return RuntimeOutcome(
        runtime=runtime,
        provider=report.provider or "",
        passed=report.passed,
        map_drop=report.map.map_drop if measured and report.map else None,
        agreement_top10=report.detections_top_n.agreement if report.detections_top_n else None,
        failures=list(report.failures),
    )


def _verify_in_openvino(
    ctx: _Context, tmp: Path, final: Path, metadata: ModelMetadata, report: VerificationReport
) -> None:
    """Where OpenVINO is installed, run the same checks in it and record the outcome in
    ``report.openvino``. A failure there does not stop publication (ONNX Runtime's check
    gates the file); it is logged as a warning and written into the sidecar."""
    from export.openvino_session import openvino_version

    version = openvino_version()
    if version is None or not ctx.verify or not report.passed:
        return
    if not ctx.openvino:
        report.not_verified.append(f"openvino {version}: not run (asked not to)")
        return
    ov = _verify(ctx, tmp, final, metadata, runtime="openvino")
    report.openvino = _outcome(f"openvino {version}", ov)
    if not ov.passed:
        logger.warning(
            "%s is correct in ONNX Runtime but not in OpenVINO %s (%s): do not serve it there",
            final.name,
            version,
            "; ".join(report.openvino.failures),
        )


def _write_error(final: Path, exc: OSError) -> str:
    """One line for an OSError while writing ``final`` (or its sidecar and report)."""
    what = exc.strerror or str(exc)
    kept = (
        f"the existing {final.name} was not replaced"
        if final.exists()
        else "nothing was written under that name"
    )
    return f"{final}: cannot write the export: {what}; {kept}. Free space or choose --output"


def _publish(
    tmp: Path,
    final: Path,
    report: VerificationReport,
    metadata: ModelMetadata,
    stale: Sequence[Path] = (),
) -> None:
    """Publish the verified file under its final name with its sidecar and report, as one step
    (:func:`export.files.publish`). The report records the file's SHA-256 and size, as the
    sidecar does, so either can be checked against the model beside it."""
    sidecar = sidecar_document(tmp, metadata, verified=_verified(report, final), name=final.name)
    report.sha256, report.bytes = sidecar["model"]["sha256"], sidecar["model"]["bytes"]
    documents = {
        sidecar_path(final): json_bytes(sidecar),
        report_path(final): json_bytes(report.to_json()),
    }
    publish(tmp, final, documents, stale=[failed_report_path(final), *stale])


def _verify(
    ctx: _Context, tmp: Path, final: Path, metadata: ModelMetadata, runtime: str = "onnxruntime"
) -> VerificationReport:
    from export.verify import TOLERANCES, check_graph, verify_onnx

    if not ctx.verify:  # verify=False: structure only
        problems = check_graph(tmp)
        return VerificationReport(
            model=final.name,
            precision=metadata.precision,
            opset=metadata.opset,
            parity="not verified (verify=False)",
            passed=not problems,
            failures=problems,
            graph_problems=list(problems),
        )
    return verify_onnx(
        tmp,
        ctx.reference,
        ctx.images,
        expected=metadata,
        tolerance=TOLERANCES[metadata.precision],
        name=final.name,
        threads=ctx.threads,
        runtime=runtime,
    )


def _reject(tmp: Path, final: Path, report: VerificationReport) -> Path | None:
    tmp.unlink(missing_ok=True)
    try:
        atomic_write_json(failed_report_path(final), report.to_json())
        return failed_report_path(final)
    except OSError:
        return None


def _stale_variants(output: Path) -> list[Path]:
    """Variants and reports of an earlier export beside ``output``: they were built from the
    model.onnx about to be replaced, so they go in the same step (every file beside a
    published model belongs to it)."""
    stale = []
    for name in VARIANTS:
        variant = variant_path(output, name)
        for path in (variant, sidecar_path(variant), report_path(variant)):
            if path.exists():
                logger.info("removing %s (made from the previous %s)", path, output.name)
                stale.append(path)
        stale.append(failed_report_path(variant))
    return stale


def _build_variant(ctx: _Context, name: str, base: Path, metadata: ModelMetadata) -> VariantResult:
    from export.onnx_export import write_metadata
    from export.variants import build_variant

    final = variant_path(base, name)
    tmp = staging_path(final)
    try:
        try:
            precision, extra = build_variant(
                name,
                base,
                tmp,
                ctx.loaded.processor,
                ctx.images.calibration if ctx.images else [],
                num_decoder_layers=getattr(ctx.loaded.model.config, "decoder_layers", None),
            )
        except Exception as exc:  # any converter crash fails this variant only, not the export
            if isinstance(exc, OSError) and cannot_write(exc):
                raise  # a full disk is not a converter crash: exit 3 (below)
            message = first_line(exc, with_type=True)
            report = VerificationReport(
                model=final.name,
                precision=name,
                opset=metadata.opset,
                failures=[f"build: {message}"],
            )
            _reject(tmp, final, report)
            return VariantResult(name, None, False, report, message)
        meta = replace(metadata, precision=precision, extra={**metadata.extra, **extra})
        write_metadata(tmp, meta)
        report = _verify(ctx, tmp, final, meta)
        if name == "int8-sym":
            from export.verify import symmetric_problems

            report.tensorrt_shape = symmetric_problems(tmp)
            if report.tensorrt_shape:
                report.fail(*report.tensorrt_shape)
        report.not_verified = list(NOT_VERIFIED.get(name, []))
        _verify_in_openvino(ctx, tmp, final, meta, report)
        if not report.passed:
            _reject(tmp, final, report)
            return VariantResult(name, None, False, report, "; ".join(report.failures))
        _publish(tmp, final, report, meta)
        return VariantResult(name, final, True, report)
    except OSError as exc:  # a full disk: the fp32 model is published, this variant is not
        raise write_failure(_write_error(final, exc), exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def export_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    *,
    opset: int = 17,
    images: list[np.ndarray] | None = None,
    verify: bool = True,
    variants: Sequence[str] = (),
    triton_dir: str | Path | None = None,
    triton_name: str = "rtdetr",
    triton_max_batch: int = 8,
    num_top_queries: int | None = None,
    max_images: int = 64,
    calibration_images: int = 32,
    threads: int | None = None,
    decoder_method: str | None = None,
    openvino: bool = True,
) -> ExportResult:
    """Export a checkpoint to a verified ONNX model with the label map and preprocessing inside.

    Args:
        checkpoint: A run folder (``runs/<name>``) or an RT-DETR checkpoint folder.
        output: The ``.onnx`` path to write (or an existing folder for ``model.onnx`` in it).
        opset: ONNX opset, 16 to 20.
        images: RGB uint8 images to verify on; default the run's test split (else valid),
            or generated images where the checkpoint has no dataset.
        verify: Compare with PyTorch (the graph checks run regardless).
        variants: Any of ``"fp16"``, ``"int8"``, ``"slim"`` (onnxslim), written as
            ``model.<variant>.onnx`` and verified like the fp32 model.
        triton_dir: Also write a Triton model repository there (``<name>/1/model.onnx``).
        triton_name: The Triton model name.
        triton_max_batch: Triton ``max_batch_size``.
        num_top_queries: ``K``, detections per image; default the model's ``num_queries``.
        max_images: Most dataset images verified on (mAP included).
        calibration_images: Most training images used to calibrate int8.
        threads: ONNX Runtime intra-op threads for verification (default min(4, CPUs)).
        decoder_method: The model's ``config.decoder_method`` for this export (e.g.
            ``"discrete"``, RT-DETRv2 without GridSample; families that have the option).
        openvino: Also verify every file in OpenVINO where it is installed (recorded in the
            sidecar; ONNX Runtime's check alone gates publication). False skips it and the
            sidecar's ``not_verified`` says so: for callers that check OpenVINO themselves.

    Returns:
        The published model, its report and metadata, and the variants' outcomes.

    Raises:
        ExportError: Bad input: no run, missing or corrupt checkpoint, unsupported opset,
            unwritable output, unknown variant.
        VerificationError: The fp32 graph failed a check; nothing was published.

    Example:
        ```python
        from export import export_checkpoint

        result = export_checkpoint("runs/exp", "runs/exp/model.onnx", variants=["fp16"])
        result.report.detections_top_n.agreement  # 1.0
        ```
    """
    from export.onnx_export import build_metadata, trace_to_onnx, write_metadata

    check_opset(opset)
    for option, value in (
        ("max_images", max_images),
        ("calibration_images", calibration_images),
        ("num_top_queries", num_top_queries or 1),
        ("threads", threads or 1),
    ):
        if value < 1:
            raise ExportError(f"{option} must be at least 1, got {value}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ExportError(f"unknown variant(s) {unknown}: choose from {list(VARIANTS)}")
    if triton_dir is not None:
        from export.triton import check_triton_options

        check_triton_options(triton_name, triton_max_batch)
    source = resolve_checkpoint(checkpoint)
    final = prepare_output(output)
    remove_stale_temp(final.parent)  # what killed exports left (their PID is gone), logged
    loaded = load_checkpoint(source.checkpoint, decoder_method)
    metadata = build_metadata(loaded, opset=opset, num_top_queries=num_top_queries)

    ctx = _Context(loaded, None, None, threads, verify, openvino)
    if verify or set(INT8_VARIANTS) & set(variants):  # int8 calibrates on the same sources
        ctx.images = (
            caller_images(images)
            if images is not None
            else dataset_images(
                source.run_dir,
                loaded.id2label,
                max_images=max_images,
                calibration=calibration_images,
            )
        )
    if verify:
        from export.reference import torch_reference

        logger.info("PyTorch reference on %s", ctx.images.source)
        ctx.reference = torch_reference(
            loaded.model, loaded.processor, ctx.images.images, num_top_queries
        )

    tmp = staging_path(final)
    try:
        logger.info("exporting %s (opset %d)", source.checkpoint, opset)
        trace_to_onnx(
            loaded.model,
            tmp,
            opset=opset,
            input_size=metadata.input_size,
            num_top_queries=num_top_queries,
        )
        write_metadata(tmp, metadata)
        logger.info("verifying %s", final.name)
        report = _verify(ctx, tmp, final, metadata)
        _verify_in_openvino(ctx, tmp, final, metadata, report)
        if not report.passed:
            where = _reject(tmp, final, report)
            raise VerificationError(
                f"{final}: verification failed, model not written: " + "; ".join(report.failures),
                report,
                where,
            )
        _publish(tmp, final, report, metadata, stale=_stale_variants(final))
    except OSError as exc:  # a full disk, a quota (exit 3), a folder removed under us (exit 2)
        raise write_failure(_write_error(final, exc), exc) from None
    finally:
        tmp.unlink(missing_ok=True)

    result = ExportResult(final, report, metadata)
    for name in variants:
        logger.info("building the %s variant", name)
        result.variants.append(_build_variant(ctx, name, final, metadata))
    if triton_dir is not None:
        from export.triton import write_triton_repository

        result.triton = write_triton_repository(
            final, triton_dir, metadata, name=triton_name, max_batch_size=triton_max_batch
        )
    return result
