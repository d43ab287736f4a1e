"""``python -m finetune``: dataset -> validation -> Trainer -> best checkpoint -> test report.

Every ``TrainingArguments`` flag works (``--max_steps``, ``--learning_rate``, ...) through
``HfArgumentParser``; defaults are chosen for the model being trained and can be overridden.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import HfArgumentParser, TrainingArguments

from finetune.families import FAMILIES

__all__ = [
    "FinetuneArguments",
    "distributed_defaults",
    "given_flags",
    "main",
    "parse_args",
    "training_defaults",
]

logger = logging.getLogger("finetune")


@dataclass
class FinetuneArguments:
    """Options of ``python -m finetune`` besides the Trainer's own flags."""

    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Dataset folder (COCO as Roboflow exports it, YOLO with data.yaml, or "
            "Pascal VOC). Default: the generated 'shapes' dataset (offline)."
        },
    )
    roboflow: str | None = field(
        default=None,
        metadata={
            "help": "Download WORKSPACE/PROJECT/VERSION from Roboflow (COCO format) "
            "with ROBOFLOW_API_KEY from the environment."
        },
    )
    checkpoint: str = field(
        default="embedded",
        metadata={
            "help": "'embedded' (small RT-DETR, CPU-friendly, warm-started), 'scratch' (the "
            "same model, random init), 'scratch:FAMILY' (a small model of FAMILY, random "
            f"init: {', '.join(FAMILIES)}), a hub id such as "
            "PekingU/rtdetr_r50vd_coco_o365 or ustc-community/dfine-small-coco, or a local "
            "checkpoint folder of any of those families."
        },
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Square input size; default: the checkpoint's."}
    )
    name: str | None = field(
        default=None, metadata={"help": "Run name: writes runs/<name> (default: timestamp)."}
    )
    runs_dir: str = field(default="runs", metadata={"help": "Parent folder of run folders."})
    plot_threshold: float = field(
        default=0.5, metadata={"help": "Confidence threshold of the pictures (not of mAP)."}
    )


# The small CPU models (embedded, scratch, scratch:FAMILY).
# 2 epochs (600 steps): the first run has to finish in 10 minutes on a 2-core AVX2 machine.
# Measured on Zen 4 (AVX-512), 2 threads, dataset generated fresh, embedded RT-DETR: 4 epochs
# 9.7 min, test mAP50:95 0.925; 3 epochs at batch 8 5.9 min, 0.898; 2 epochs 4.7 min, 0.891;
# 1 epoch 2.5 min, 0.863. The same machine limited to AVX2 kernels trains 1.2x slower; an
# older version was 1.7x slower on Zen 3. Batch 8 trains 25% more images per second (12.7 vs
# 10.2) but learns less per image at this budget; loading and augmenting a batch of 4 takes
# 12 ms of its 393 ms step, so DataLoader workers would gain at most 3% and cost a core.
_SMALL_MODEL = {
    "num_train_epochs": 2,
    "learning_rate": 5e-4,
    "warmup_steps": 100,
    "per_device_train_batch_size": 4,
    "per_device_eval_batch_size": 16,
}


def training_defaults(checkpoint: str) -> dict[str, Any]:
    """TrainingArguments defaults that suit the model; any flag given on the command line wins."""
    common = {
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        # One checkpoint, the latest (for --resume_from_checkpoint); best/ is our own copy of
        # the best weights. No metric_for_best_model: with it and a limit of 1 the Trainer
        # deletes the latest checkpoint at the end of training when it was not the best.
        "save_total_limit": 1,
        "remove_unused_columns": False,
        "eval_do_concat_batches": False,
        "weight_decay": 1e-4,
        "max_grad_norm": 0.1,
        "lr_scheduler_type": "cosine",
        "logging_steps": 25,
        "report_to": "none",
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": torch.cuda.is_available(),
        "seed": 0,
    }
    if checkpoint.startswith("scratch:"):  # a small model of another family, random init
        return {**common, **_SMALL_MODEL}
    if checkpoint in ("embedded", "scratch"):
        return {
            **common,
            # Every parameter of this architecture takes part in each training step (tested
            # under torchrun): DDP can skip its search for unused ones (no effect without DDP).
            "ddp_find_unused_parameters": False,
            **_SMALL_MODEL,
        }
    return {
        **common,
        "num_train_epochs": 20,
        "learning_rate": 5e-5,
        "warmup_steps": 300,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
    }


# A step interval given without its strategy switches the strategy to "steps" (the defaults
# here are per epoch, and the Trainer would silently ignore the interval).
STEP_FLAGS = {"save_steps": "save_strategy", "eval_steps": "eval_strategy"}
HELP_NOTES = {
    "save_steps": "python -m finetune: giving --save_steps without --save_strategy switches "
    "save_strategy from 'epoch' to 'steps' (said in the log); with --save_strategy epoch or "
    "no it is ignored (also said).",
    "eval_steps": "python -m finetune: giving --eval_steps without --eval_strategy switches "
    "eval_strategy from 'epoch' to 'steps' (said in the log); best/ is then chosen at every "
    "evaluation.",
    "resume_from_checkpoint": "python -m finetune: a checkpoint-N folder (its parent is the "
    "run folder unless --output_dir is given), a run folder, or 'true' (the run in "
    "--output_dir); for a run folder or 'true' the newest complete checkpoint is used. An "
    "incomplete checkpoint (interrupted save) is refused with exit 2 and the name of the "
    "last complete one. best/ is replaced only by a higher mAP than the run's best so far.",
}


def _world_size() -> int:
    """Processes started by torchrun / ``accelerate launch`` (their ``WORLD_SIZE``), else 1."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _has_accelerator() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def distributed_defaults(given: dict[str, Any]) -> dict[str, Any]:
    """TrainingArguments defaults for a run started by torchrun or ``accelerate launch``.

    Without a GPU (or with ``--use_cpu``) the processes train with DDP on CPU over gloo:
    ``use_cpu`` makes accelerate set up the CPU process group (without it the Trainer runs
    every process as an independent single-process run), and gloo is named so that an MPI
    build of PyTorch does not switch to MPI. A GPU machine keeps the defaults (NCCL). Flags
    given on the command line win. Empty outside a launcher.
    """
    if _world_size() <= 1:
        return {}
    if not (given.get("use_cpu") or ("use_cpu" not in given and not _has_accelerator())):
        return {}
    defaults: dict[str, Any] = {"use_cpu": True}
    if "ddp_backend" not in given:
        defaults["ddp_backend"] = "gloo"
    return defaults


def _build_parser() -> HfArgumentParser:
    parser = HfArgumentParser((FinetuneArguments, TrainingArguments))
    for action in parser._actions:
        if action.dest in HELP_NOTES:
            action.help = f"{action.help or ''} {HELP_NOTES[action.dest]}".strip()
    return parser


def given_flags(argv: list[str]) -> dict[str, Any]:
    """The options present on the command line (by destination), with their parsed values.

    Parsed, not string-matched, so ``--opt=value`` and argparse's abbreviations count too.
    """
    parser = _build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    namespace, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
    return vars(namespace)


def parse_args(argv: list[str] | None) -> tuple[FinetuneArguments, TrainingArguments, bool]:
    """Parse both dataclasses; returns (ours, trainer's, whether --output_dir was given).

    ``--help`` shows the defaults of the checkpoint named on the command line.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    given = given_flags(argv)
    defaults = training_defaults(given.get("checkpoint", FinetuneArguments.checkpoint))
    for steps, strategy in STEP_FLAGS.items():
        if steps not in given:
            continue
        if strategy not in given:
            if defaults.get(strategy) != "steps":
                logger.info(
                    "--%s %g given without --%s: %s set to 'steps' (was '%s')",
                    steps,
                    given[steps],
                    strategy,
                    strategy,
                    defaults.get(strategy),
                )
                defaults[strategy] = "steps"
        elif getattr(given[strategy], "value", given[strategy]) != "steps":
            logger.info("--%s is ignored with --%s %s", steps, strategy, given[strategy])
    launch = distributed_defaults(given)
    if launch:
        logger.info(
            "%d processes (torchrun/accelerate) without a GPU: DDP on CPU, backend %s",
            _world_size(),
            given.get("ddp_backend", launch.get("ddp_backend")),
        )
    defaults.update(launch)
    parser = _build_parser()
    parser.set_defaults(**defaults)
    ours, targs = parser.parse_args_into_dataclasses(args=argv)
    return ours, targs, "output_dir" in given


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


# How a full disk shows when a library writes: torch.save ("PytorchStreamWriter failed writing
# file data/0: file write failed"; or, when the short write happens at the zip's end, "[enforce
# fail at inline_container.cc:672] . unexpected pos 1546816 vs 1546708", measured with the
# Trainer's optimizer.pt under a 1.5 MiB file-size limit) and safetensors ("I/O error: No
# space left on device") raise RuntimeError-like errors, not OSError.
_WRITE_FAILURE_TEXT = (
    "No space left on device",
    "file write failed",
    "File too large",
    "unexpected pos",
)


def _write_failure(exc: BaseException) -> OSError | None:
    """``exc`` as an OSError when its cause is disk space or permissions, else None."""
    from runtime.files import cannot_write

    if isinstance(exc, OSError):
        return exc if cannot_write(exc) else None
    if any(text in str(exc) for text in _WRITE_FAILURE_TEXT):
        return OSError(errno.ENOSPC, "no space left on device (while saving)")
    return None


def _cannot_write(exc: OSError, run_dir: Path) -> int:
    """One line for a full disk or a permission error during a run, and how to go on."""
    from finetune.runs import last_complete_checkpoint
    from runtime.files import EXIT_CANNOT_WRITE, cannot_write_message

    last = last_complete_checkpoint(run_dir)
    going_on = (
        f"what was saved stays; continue with --resume_from_checkpoint {run_dir} (from {last.name})"
        if last is not None
        else "no complete checkpoint was saved yet"
    )
    return _fail(f"{cannot_write_message(exc, run_dir)}; {going_on}", code=EXIT_CANNOT_WRITE)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    code = _main(argv)
    # Under torchrun/accelerate each process leaves its process group once it is done (the
    # others may still be scoring the test split); PyTorch warns at exit otherwise.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return code


def _main(argv: list[str] | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Under torchrun/accelerate only the main process tells the story; the others say
    # warnings and errors only (as the Trainer does with its own log, --log_level_replica).
    if _rank() != 0:
        logger.setLevel(logging.WARNING)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # weight loading bars, once per process otherwise
    # Parsing sets up the devices: under a launcher the process group is joined here.
    ours, targs, output_given = parse_args(argv)

    from finetune.runs import ResumeError, new_run_dir, remove_stale_temp, resolve_resume

    # --resume_from_checkpoint is checked first: an incomplete checkpoint is one line, not a
    # traceback after the dataset and the model were loaded.
    run_dir = Path(targs.output_dir) if output_given else None
    resume: Path | None = None
    if targs.resume_from_checkpoint:
        try:
            run_dir, resume = resolve_resume(targs.resume_from_checkpoint, run_dir)
        except ResumeError as exc:
            return _fail(str(exc))

    # Heavy imports after argument parsing so --help is instant.
    from finetune.datasets import DatasetError
    from finetune.model import CheckpointError, check_input_size, load_model_and_processor

    started = time.monotonic()
    try:
        # The main process of each machine downloads or generates the dataset first; the
        # others load what it wrote (a no-op in a single process).
        with targs.main_process_first(desc="dataset"):
            splits = _load_splits(ours)
    except (DatasetError, ValueError, OSError) as exc:
        return _fail(str(exc))
    logger.info(
        "dataset %s (%s): %d classes %s; train %d, valid %d, test %d images",
        splits.root,
        splits.layout,
        len(splits.classes),
        splits.classes,
        len(splits.train),
        len(splits.valid),
        len(splits.test),
    )
    for note in splits.notes:
        logger.info("  note: %s", note)

    # Seeded before the model is built: the class head (and --checkpoint scratch) is
    # initialised here, before the Trainer seeds anything itself.
    from transformers import enable_full_determinism, set_seed

    enable_full_determinism(targs.seed) if targs.full_determinism else set_seed(targs.seed)
    try:
        model, processor = load_model_and_processor(
            ours.checkpoint, splits.id2label, image_size=ours.image_size
        )
        check_input_size(model, processor)
    except CheckpointError as exc:
        return _fail(str(exc))

    if run_dir is None:
        run_dir = _shared(new_run_dir(ours.runs_dir, ours.name), targs)
    targs.output_dir = str(run_dir)
    targs.resume_from_checkpoint = str(resume) if resume is not None else None
    try:
        # One writer: process 0 tidies the run folder while the others wait.
        with targs.main_process_first(local=False, desc="run folder"):
            if targs.process_index == 0:
                run_dir.mkdir(parents=True, exist_ok=True)
                remove_stale_temp(run_dir)  # what writes of killed earlier processes left
                if resume is not None:
                    _prepare_resume(resume)
        return _train_and_report(ours, targs, splits, model, processor, run_dir, started)
    except Exception as exc:  # a full disk or a folder we may not write (others re-raised)
        failure = _write_failure(exc)
        if failure is None:
            raise
        return _cannot_write(failure, run_dir)


def _shared(run_dir: Path, targs: TrainingArguments) -> Path:
    """Process 0's choice of a new run folder, for every process (its name has a timestamp)."""
    if targs.world_size <= 1:
        return run_dir
    from accelerate.utils import broadcast_object_list

    return Path(broadcast_object_list([str(run_dir)], from_process=0)[0])


def _load_splits(ours: FinetuneArguments) -> Any:
    """The dataset named by ``--roboflow``/``--dataset`` (downloaded, generated if needed)."""
    from finetune.datasets import download_roboflow, load_dataset
    from finetune.synthetic import default_dataset_dir, generate_dataset

    if ours.roboflow:
        root = download_roboflow(
            ours.roboflow, default_dataset_dir("roboflow-" + ours.roboflow.replace("/", "-"))
        )
    elif ours.dataset:
        root = Path(ours.dataset)
    else:
        root = default_dataset_dir("shapes")
        if not root.exists():
            logger.info("generating the embedded 'shapes' dataset in %s", root)
        root = generate_dataset(root, "shapes")
    return load_dataset(root)


def _prepare_resume(checkpoint: Path) -> None:
    """Drop incomplete checkpoints newer than the one resumed from (the resume rewrites them)."""
    from finetune.runs import remove_incomplete_checkpoints

    step = int(json.loads((checkpoint / "trainer_state.json").read_text())["global_step"])
    remove_incomplete_checkpoints(checkpoint.parent, after_step=step)


def _previous_summary(path: Path) -> dict[str, Any]:
    """The run's ``metrics.json`` (resume), or {} with a warning if it cannot be read."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        logger.warning("%s is unreadable (%s): its earlier evaluations are not kept", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _train_and_report(
    ours: FinetuneArguments,
    targs: TrainingArguments,
    splits: Any,
    model: Any,
    processor: Any,
    run_dir: Path,
    started: float,
) -> int:
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    from finetune.evaluate import evaluate_dataset
    from finetune.families import family_of
    from finetune.report import plot_confusion_matrix, plot_curves, plot_predictions
    from finetune.runs import (
        BEST_DIR,
        RunNotFoundError,
        atomic_write_dir,
        atomic_write_json,
        best_checkpoint,
    )
    from finetune.train import build_trainer
    from runtime.images import to_rgb_array

    summary: dict[str, Any] = {
        "dataset": str(splits.root),
        "layout": splits.layout,
        "classes": splits.classes,
        "dataset_notes": splits.notes,
        "checkpoint": ours.checkpoint,
        "model_type": model.config.model_type,
        "image_size": dict(processor.size),
        "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "training_args": asdict(ours),
        "processes": targs.world_size,
    }
    resumed = bool(targs.resume_from_checkpoint)
    if resumed:
        summary = {**_previous_summary(run_dir / "metrics.json"), **summary}
    trainer = build_trainer(model, processor, splits, targs, run_dir, summary, resumed=resumed)
    trainer.train(
        resume_from_checkpoint=targs.resume_from_checkpoint,
        ignore_keys_for_eval=family_of(model.config).ignore_keys(),
    )
    if not trainer.is_world_process_zero():
        return 0  # the main process scores the test split and writes the report, once

    try:
        best = best_checkpoint(run_dir)
    except RunNotFoundError:  # --eval_strategy no: nothing was scored, the final weights it is
        logger.info(
            "no evaluation during training (--eval_strategy %s): %s holds the final weights",
            getattr(targs.eval_strategy, "value", targs.eval_strategy),
            run_dir / BEST_DIR,
        )

        def write(tmp: Path) -> None:
            trainer.model.save_pretrained(tmp, safe_serialization=True)
            processor.save_pretrained(tmp)

        best = atomic_write_dir(run_dir / BEST_DIR, write)
    model = AutoModelForObjectDetection.from_pretrained(best).eval()
    processor = AutoImageProcessor.from_pretrained(best)
    logger.info("evaluating %s on the test split (%d images)", best, len(splits.test))
    test_metrics, predictions, targets = evaluate_dataset(
        model, processor, splits.test, batch_size=targs.per_device_eval_batch_size
    )
    summary["test"] = test_metrics
    summary["wall_time_s"] = round(time.monotonic() - started, 1)
    atomic_write_json(run_dir / "metrics.json", summary)

    images = [to_rgb_array(p) for p in list(splits.test.image_paths)[:6]]
    pictures = [
        plot_curves(summary["epochs"], run_dir / "curves.png"),
        plot_confusion_matrix(
            predictions,
            targets,
            splits.classes,
            run_dir / "confusion_matrix.png",
            ours.plot_threshold,
        ),
        plot_predictions(
            images,
            predictions,
            targets,
            splits.classes,
            run_dir / "predictions.png",
            ours.plot_threshold,
        ),
    ]
    print()
    print(
        f"test mAP50:95 {test_metrics['map']:.3f}  mAP50 {test_metrics['map_50']:.3f}  "
        f"mAP75 {test_metrics['map_75']:.3f}  ({len(splits.test)} images)"
    )
    print(f"wall time {summary['wall_time_s'] / 60:.1f} min")
    print(f"best checkpoint  {run_dir / BEST_DIR}")
    print(f"metrics          {run_dir / 'metrics.json'}")
    for picture in pictures:
        print(f"picture          {picture}")
    print(f"next: python -m export --checkpoint {run_dir}")
    return 0
