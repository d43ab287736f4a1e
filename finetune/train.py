"""HF ``Trainer`` wiring: mAP during evaluation, best checkpoint and metrics written atomically."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.models.rt_detr.modeling_rt_detr import RTDetrObjectDetectionOutput

from finetune.data import DetectionTorchDataset, collate_fn, train_transform, valid_transform

if TYPE_CHECKING:
    from finetune.datasets import DatasetSplits
from finetune.metrics import Boxes, mean_average_precision
from finetune.postprocess import RTDetrPostProcessor
from finetune.runs import (
    BEST_DIR,
    BEST_SCORE_FILE,
    RunNotFoundError,
    atomic_write_dir,
    atomic_write_json,
    best_checkpoint,
    recorded_best,
)

__all__ = ["IGNORE_KEYS", "DetectionTrainer", "MapEvaluator", "RunRecorder", "build_trainer"]

logger = logging.getLogger("finetune")

# Everything but logits and boxes is dropped from evaluation outputs (memory, and a fixed
# (logits, pred_boxes) layout for compute_metrics).
IGNORE_KEYS = [
    f.name
    for f in dataclasses.fields(RTDetrObjectDetectionOutput)
    if f.name not in ("loss", "logits", "pred_boxes")
]


class MapEvaluator:
    """``compute_metrics`` for the Trainer, with ``eval_do_concat_batches=False``.

    Predictions arrive per batch as ``(logits, pred_boxes)``; they go through the deploy
    post-processor and the project's one mAP function in pixels of the evaluated image.
    """

    def __init__(self, class_names: list[str], num_top_queries: int) -> None:
        self.class_names = class_names
        self.postprocess = RTDetrPostProcessor(num_top_queries)

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        predictions: list[Boxes] = []
        targets: list[Boxes] = []
        for batch_preds, batch_labels in zip(
            eval_pred.predictions, eval_pred.label_ids, strict=True
        ):
            logits, pred_boxes = (torch.as_tensor(np.asarray(x)) for x in batch_preds[:2])
            sizes_hw = [np.asarray(t["orig_size"]).reshape(2) for t in batch_labels]
            sizes_wh = torch.tensor(np.array([[w, h] for h, w in sizes_hw]))
            labels, boxes, scores = self.postprocess(logits, pred_boxes, sizes_wh)
            for i, target in enumerate(batch_labels):
                predictions.append(Boxes(boxes[i].numpy(), labels[i].numpy(), scores[i].numpy()))
                h, w = sizes_hw[i]
                cxcywh = np.asarray(target["boxes"], dtype=np.float64).reshape(-1, 4)
                xyxy = np.concatenate(
                    [cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1
                )
                targets.append(Boxes(xyxy * [w, h, w, h], np.asarray(target["class_labels"])))
        return mean_average_precision(predictions, targets, self.class_names)


class RunRecorder(TrainerCallback):
    """After every evaluation: record it in ``metrics.json``; on a new best, write ``best/``.

    Both writes are atomic, so stopping the run at any moment keeps the previous best. On a
    resume (``resumed=True``) the score of the ``best/`` already in the run folder is restored
    first: ``best/`` is replaced only by a strictly higher mAP, and the evaluations recorded
    after the resumed step are replaced by the new ones instead of being listed twice.
    """

    def __init__(
        self, run_dir: Path, processor: Any, summary: dict[str, Any], *, resumed: bool = False
    ) -> None:
        self.run_dir = run_dir
        self.processor = processor
        self.summary = summary
        self.summary.setdefault("epochs", [])
        self.resumed = resumed
        self.best_map = -1.0
        self.start = time.monotonic()

    def on_train_begin(
        self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any
    ) -> None:
        step = state.global_step
        kept = [e for e in self.summary["epochs"] if e.get("step", 0) <= step]
        if len(kept) < len(self.summary["epochs"]) and state.is_world_process_zero:
            logger.info(
                "metrics.json: %d evaluation(s) after step %d will be redone by this resume",
                len(self.summary["epochs"]) - len(kept),
                step,
            )
        self.summary["epochs"] = kept
        if not self.resumed:
            return
        best = recorded_best(self.run_dir)
        if best is None and state.best_metric is not None:
            try:
                best_checkpoint(self.run_dir)
            except RunNotFoundError:
                pass
            else:  # a best/ without a recorded score: the Trainer's own record of it
                best = {"map": float(state.best_metric), "step": state.best_global_step}
        if best is None:
            return
        self.best_map = float(best["map"])
        self.summary["best"] = best
        if state.is_world_process_zero:
            logger.info(
                "resumed at step %d; best so far: mAP50:95 %.4f at step %s (%s is replaced only "
                "by a higher score)",
                step,
                self.best_map,
                best.get("step"),
                self.run_dir / BEST_DIR,
            )

    def _train_loss_since_last_eval(self, state: Any) -> float | None:
        losses = []
        for entry in reversed(state.log_history):
            if "eval_loss" in entry and losses:
                break
            if "loss" in entry:
                losses.append(entry["loss"])
        return float(np.mean(losses)) if losses else None

    def on_evaluate(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return  # one writer per run folder under torchrun/accelerate
        metrics = kwargs.get("metrics") or {}
        model = kwargs.get("model")
        record = {
            "epoch": round(float(state.epoch or 0), 3),
            "step": state.global_step,
            "elapsed_s": round(time.monotonic() - self.start, 1),
            "train_loss": self._train_loss_since_last_eval(state),
            "eval_loss": metrics.get("eval_loss"),
        }
        record.update(
            {
                k[len("eval_") :]: v
                for k, v in metrics.items()
                if k.startswith("eval_map") or k.startswith("eval_mar")
            }
        )
        self.summary["epochs"] = [
            e for e in self.summary["epochs"] if e.get("step") != record["step"]
        ] + [record]
        current = float(metrics.get("eval_map", -1.0))
        if model is not None and current > self.best_map:
            self.best_map = current
            best = {
                "epoch": record["epoch"],
                "step": state.global_step,
                "map": current,
                "map_50": metrics.get("eval_map_50"),
            }
            self.summary["best"] = best

            def write(tmp: Path) -> None:
                model.save_pretrained(tmp, safe_serialization=True)
                self.processor.save_pretrained(tmp)
                atomic_write_json(tmp / BEST_SCORE_FILE, best)

            atomic_write_dir(self.run_dir / BEST_DIR, write)
        atomic_write_json(self.run_dir / "metrics.json", self.summary)


class DetectionTrainer(Trainer):
    """``Trainer`` whose ``--resume_from_checkpoint`` restores every weight.

    transformers 5 saves RT-DETR under its original key names (``encoder.encoder.0...``) but
    ``Trainer`` resumes with a raw, non-strict ``load_state_dict``: the encoder and decoder
    MLP weights were silently left at their initial values. ``from_pretrained`` knows the key
    mapping, so weights are loaded through it and copied in strictly.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        model = model if model is not None else self.model
        loaded = type(model).from_pretrained(resume_from_checkpoint, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), strict=True)


def build_trainer(
    model: torch.nn.Module,
    processor: Any,
    splits: DatasetSplits,
    args: TrainingArguments,
    run_dir: Path,
    summary: dict[str, Any],
    *,
    resumed: bool = False,
) -> Trainer:
    """A Trainer for object detection as transformers' own example sets it up."""
    augment_seed = args.data_seed if args.data_seed is not None else args.seed
    train_ds = DetectionTorchDataset(splits.train, processor, train_transform(augment_seed))
    valid_ds = DetectionTorchDataset(splits.valid, processor, valid_transform(), evaluation=True)
    num_top = int(getattr(model.config, "num_queries", 300))
    return DetectionTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=valid_ds,
        data_collator=collate_fn,
        compute_metrics=MapEvaluator(splits.classes, num_top),
        callbacks=[RunRecorder(run_dir, processor, summary, resumed=resumed)],
    )
