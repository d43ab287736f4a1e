"""Find, or make, what the suite measures: a checkpoint, its ONNX export and variants, a dataset.

With no options: the newest run under ``runs/`` and its ``model.onnx``. Where there is no run,
one is trained with the code of ``python -m finetune`` (``finetune.cli.main``, shorter budget:
``settings.DEFAULT_TRAIN_ARGS``) and exported with ``export.export_checkpoint``. ``--fast``
does the same in a temporary folder: a short fine-tune of the warm-started embedded model on
a small generated dataset of its own classes (``settings.FAST_TRAIN_ARGS``, ``FAST_DATASET``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.settings import (
    DEFAULT_RUN_NAME,
    DEFAULT_TRAIN_ARGS,
    FAST_DATASET,
    FAST_EXTRA_VARIANTS,
    FAST_IMAGE_SIZE,
    FAST_TRAIN_ARGS,
    BenchOptions,
)
from export.checkpoint import resolve_checkpoint
from export.files import failed_report_path, report_path, variant_path
from finetune.runs import RunNotFoundError, latest_run
from finetune.synthetic import SyntheticSpec

__all__ = [
    "Artifacts",
    "SetupError",
    "Variant",
    "fast_spec",
    "find_artifacts",
    "find_variants",
    "make_fast_artifacts",
]

Announce = Callable[[str], None]
VARIANT_NAMES = ("int8", "fp16")


class SetupError(RuntimeError):
    """The suite cannot find or make what it measures; the message says what to pass."""


@dataclass(frozen=True)
class Variant:
    """A precision variant beside ``model.onnx``: ``verified``, ``FAILED`` or ``missing``."""

    name: str
    path: Path
    status: str
    reason: str = ""


@dataclass
class Artifacts:
    """The files one benchmark run measures, and where its report goes."""

    checkpoint: Path
    onnx: Path
    dataset: Path
    report_dir: Path
    variants: dict[str, Variant] = field(default_factory=dict)
    requested: tuple[str, ...] = ()  # the variants this session exported (must be verified)
    notes: list[str] = field(default_factory=list)


def find_variants(onnx: Path, requested: Sequence[str] = ()) -> dict[str, Variant]:
    """The variants of ``onnx`` and their export verification outcome.

    A variant in ``requested`` (this session exported it) with neither its file nor a failure
    report is ``FAILED`` too: export was asked for it and left nothing to say why.
    """
    found = {}
    for name in VARIANT_NAMES:
        path = variant_path(onnx, name)
        failed = failed_report_path(path)
        if path.is_file() and report_path(path).is_file():
            found[name] = Variant(name, path, "verified")
        elif failed.is_file():
            try:
                failures = json.loads(failed.read_text()).get("failures") or ["see report"]
            except (OSError, json.JSONDecodeError):
                failures = ["unreadable report"]
            reason = "export verification failed, not benchmarked: " + "; ".join(map(str, failures))
            found[name] = Variant(name, path, "FAILED", reason)
        elif name in requested:
            reason = "exported for this run, but export left neither the file nor a failure report"
            found[name] = Variant(name, path, "FAILED", reason)
        else:
            hint = f"python -m export --checkpoint ... --output {onnx} --{name}"
            found[name] = Variant(name, path, "missing", f"not exported ({hint})")
    return found


def _run_dataset(run_dir: Path | None) -> Path | None:
    """The dataset a run was trained on (``metrics.json`` key ``dataset``)."""
    if run_dir is None:
        return None
    try:
        root = json.loads((run_dir / "metrics.json").read_text()).get("dataset")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return Path(root) if root else None


def train_run(output_dir: Path, args: Sequence[str], announce: Announce) -> Path:
    """Train a run with ``python -m finetune``'s code; returns the run folder."""
    from finetune.cli import main

    argv = ["--output_dir", str(output_dir), *args]
    announce(f"training a run for the benchmark: python -m finetune {' '.join(argv)}")
    code = main(argv)
    if code != 0:
        raise SetupError(f"python -m finetune {' '.join(argv)} exited with status {code}")
    return output_dir


def export_run(
    checkpoint: Path,
    output: Path,
    variants: Sequence[str],
    announce: Announce,
    openvino: bool = True,
) -> None:
    """Export and verify ``checkpoint`` to ``output`` (+ ``variants``) with ``export``
    (also in OpenVINO where installed, unless ``openvino`` is False)."""
    from export import ExportError, VerificationError, export_checkpoint

    announce(f"exporting {checkpoint} -> {output} (variants: {', '.join(variants) or 'none'})")
    try:
        export_checkpoint(checkpoint, output, variants=list(variants), openvino=openvino)
    except ExportError as exc:
        raise SetupError(f"cannot export {checkpoint}: {exc}") from None
    except VerificationError as exc:
        raise SetupError(f"the fp32 export of {checkpoint} failed verification: {exc}") from None


def _source_of(onnx: Path) -> Path | None:
    """The checkpoint folder an export was made from (its ``source_checkpoint`` metadata)."""
    from export.onnx_export import read_metadata
    from runtime.metadata import MetadataError

    try:
        source = Path(read_metadata(onnx).source_checkpoint or "")
    except MetadataError:
        return None  # not an rtdetr-deploy export: the runtime says so when it opens it
    return source if (source / "config.json").is_file() else None


def find_artifacts(options: BenchOptions, announce: Announce) -> Artifacts:
    """Resolve ``--checkpoint``/``--onnx``/``--dataset``, making a run and an export if needed."""
    from export import ExportError

    notes: list[str] = []
    onnx = Path(options.onnx) if options.onnx else None
    if onnx is not None and not onnx.is_file():
        raise SetupError(f"--onnx {onnx}: no such file")
    checkpoint_arg = options.checkpoint or (_source_of(onnx) if onnx else None)
    try:
        if checkpoint_arg is None:
            try:
                latest_run(options.runs_dir)
            except RunNotFoundError:
                run = Path(options.runs_dir) / DEFAULT_RUN_NAME
                extra = ["--dataset", options.dataset] if options.dataset else []
                train_run(run, [*extra, *DEFAULT_TRAIN_ARGS], announce)
                notes.append(
                    f"no run under {options.runs_dir}/: trained {run} with a shorter budget "
                    f"({' '.join(DEFAULT_TRAIN_ARGS)}); pass --checkpoint for a real run"
                )
        source = resolve_checkpoint(checkpoint_arg, options.runs_dir)
    except ExportError as exc:
        raise SetupError(str(exc)) from None

    requested: tuple[str, ...] = ()
    if onnx is None:
        onnx = source.default_output
        weights = source.checkpoint / "model.safetensors"
        stale = (
            onnx.is_file() and weights.is_file() and onnx.stat().st_mtime < weights.stat().st_mtime
        )
        if not onnx.is_file() or stale:
            export_run(source.checkpoint, onnx, options.variants, announce)
            requested = options.variants
            notes.append(f"{'re-' if stale else ''}exported {onnx} for the benchmark")
    elif (src := _source_of(onnx)) is not None and src.resolve() != source.checkpoint.resolve():
        notes.append(f"{onnx} was exported from {src}, not from {source.checkpoint}")

    dataset = Path(options.dataset) if options.dataset else _run_dataset(source.run_dir)
    if dataset is None:
        raise SetupError(
            f"no dataset known for {source.checkpoint} (it is not in a run folder with a "
            "metrics.json): pass --dataset DIR with the dataset it was trained on"
        )
    return Artifacts(
        checkpoint=source.checkpoint,
        onnx=onnx,
        dataset=dataset,
        report_dir=source.run_dir or source.checkpoint,
        variants=find_variants(onnx, requested),
        requested=requested,
        notes=notes,
    )


def fast_spec() -> SyntheticSpec:
    """``--fast``'s dataset: the warm-start checkpoint's own classes (so no head is reset)."""
    from finetune.model import WARMSTART_DIR

    try:
        config = json.loads((WARMSTART_DIR / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        message = f"--fast needs the warm-start checkpoint in {WARMSTART_DIR}: {exc}"
        raise SetupError(message) from None
    classes = tuple(config["id2label"][str(i)] for i in range(len(config["id2label"])))
    return SyntheticSpec(name="bench-fast", classes=classes, **FAST_DATASET)


def make_fast_artifacts(folder: Path, options: BenchOptions, announce: Announce) -> Artifacts:
    """``--fast``: small generated dataset -> a short fine-tune of the warm-started model ->
    export with the device's variant and ``FAST_EXTRA_VARIANTS``, all inside ``folder``."""
    from finetune.synthetic import generate_dataset

    spec = fast_spec()
    dataset = generate_dataset(folder / "dataset", spec)
    run = train_run(folder / "run", ["--dataset", str(dataset), *FAST_TRAIN_ARGS], announce)
    source = resolve_checkpoint(run)
    variants = tuple(dict.fromkeys((*options.variants, *FAST_EXTRA_VARIANTS)))
    # Export's own OpenVINO check left out: the openvino-fp32/int8 rows gate these files in
    # OpenVINO on the same test images (mAP and consistency with PyTorch), and it was 15.8 of
    # the export's 47.7 s under cProfile (four compile_model calls, Intel Xeon, idle).
    export_run(source.checkpoint, source.default_output, variants, announce, openvino=False)
    steps = FAST_TRAIN_ARGS[FAST_TRAIN_ARGS.index("--max_steps") + 1]
    return Artifacts(
        checkpoint=source.checkpoint,
        onnx=source.default_output,
        dataset=dataset,
        report_dir=run,
        variants=find_variants(source.default_output, variants),
        requested=variants,
        notes=[
            f"--fast: the warm-started embedded model at {FAST_IMAGE_SIZE} px, {steps} "
            f"fine-tuning steps on a generated {'/'.join(map(str, spec.split_sizes))}-image "
            "dataset of its own classes: a trained reference (every accuracy gate applies) "
            "that proves the suite works; the latencies mean nothing"
        ],
    )
