"""HF ``Trainer`` wiring: mAP during evaluation, best checkpoint and metrics written atomically."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

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

__all__ = [
    "DetectionTrainer",
    "MapEvaluator",
    "RunRecorder",
    "build_trainer",
    "pack_targets",
]

logger = logging.getLogger("finetune")

# The Trainer pads tensors gathered across processes with this value (``padding_index``).
PAD = -100


def pack_targets(labels: list[Mapping[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of RT-DETR targets (a dict per image) as two tensors indexed by image.

    ``(boxes [B, N, 5], meta [B, 3])``: each box row is ``(class id, cx, cy, w, h)``
    (normalised), rows with a negative class are padding; ``meta`` is ``(image id, height,
    width)`` of the evaluated image (id -1 when the processor gave none).

    Why: under torchrun/accelerate the Trainer pads, gathers and de-duplicates evaluation
    labels tensor by tensor along dim 0. A list of per-image dicts is gathered element-wise
    (the i-th images of every process merged, variable box counts failing to gather) and the
    padding duplicates of the last batch are never dropped. Tensors indexed by image go
    through ``pad_across_processes``/``gather_for_metrics`` exactly like the logits do.
    """
    device = labels[0]["class_labels"].device if labels else None
    n = max((int(t["class_labels"].numel()) for t in labels), default=0)
    boxes = torch.full((len(labels), n, 5), float(PAD), dtype=torch.float32, device=device)
    meta = torch.full((len(labels), 3), -1, dtype=torch.int64, device=device)
    for i, target in enumerate(labels):
        k = int(target["class_labels"].numel())
        boxes[i, :k, 0] = target["class_labels"].reshape(-1).float()
        boxes[i, :k, 1:] = target["boxes"].reshape(-1, 4).float()
        if target.get("image_id") is not None:
            meta[i, 0] = target["image_id"].reshape(-1)[0]
        meta[i, 1:] = target["orig_size"].reshape(2)
    return boxes, meta


class MapEvaluator:
    """``compute_metrics`` for the Trainer (``eval_do_concat_batches`` False or True).

    Predictions arrive per batch as ``(logits, pred_boxes)`` and targets as
    :func:`pack_targets` made them (gathered from every process by the Trainer); they go
    through the deploy post-processor and the project's one mAP function in pixels of the
    evaluated image. Returns the mAP keys plus ``images``, the number of images scored: each
    image once (an image id seen twice would be a gathering fault: warned about, scored once).
    """

    def __init__(self, class_names: list[str], num_top_queries: int) -> None:
        self.class_names = class_names
        self.postprocess = RTDetrPostProcessor(num_top_queries)

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        batches_preds, batches_labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(batches_preds, tuple):  # eval_do_concat_batches=True: one batch
            batches_preds, batches_labels = [batches_preds], [batches_labels]
        predictions: list[Boxes] = []
        targets: list[Boxes] = []
        seen: set[int] = set()
        repeated = 0
        for batch_preds, batch_labels in zip(batches_preds, batches_labels, strict=True):
            logits, pred_boxes = (torch.as_tensor(np.asarray(x)) for x in batch_preds[:2])
            rows_all = np.asarray(batch_labels[0], dtype=np.float64)
            meta = np.asarray(batch_labels[1], dtype=np.int64).reshape(-1, 3)
            sizes_wh = torch.from_numpy(np.ascontiguousarray(meta[:, [2, 1]]))
            labels, boxes, scores = self.postprocess(logits, pred_boxes, sizes_wh)
            for i, (image_id, h, w) in enumerate(meta.tolist()):
                if image_id >= 0:
                    if image_id in seen:
                        repeated += 1
                        continue
                    seen.add(image_id)
                predictions.append(Boxes(boxes[i].numpy(), labels[i].numpy(), scores[i].numpy()))
                rows = rows_all[i].reshape(-1, 5)
                rows = rows[rows[:, 0] >= 0]
                cxcywh = rows[:, 1:]
                xyxy = np.concatenate(
                    [cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1
                )
                targets.append(Boxes(xyxy * [w, h, w, h], rows[:, 0].astype(np.int64)))
        if repeated:
            logger.warning(
                "evaluation: %d prediction(s) for images already scored were dropped (each "
                "image is scored once)",
                repeated,
            )
        metrics = mean_average_precision(predictions, targets, self.class_names)
        return {**metrics, "images": len(predictions)}


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
        """Mean train loss logged after the previous evaluation, up to this one.

        None where no loss was logged in between (``logging_steps`` longer than the
        evaluation interval): curves.png then shows a gap. Searching back past the previous
        evaluation repeated an older value and drew the train loss as a step function.
        """
        step = state.global_step
        previous = max(
            (e["step"] for e in self.summary["epochs"] if e.get("step", -1) < step), default=-1
        )
        losses = [
            e["loss"]
            for e in state.log_history
            if "loss" in e and previous < e.get("step", -1) <= step
        ]
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
        if "eval_images" in metrics:  # images scored, each once (all processes together)
            record["images"] = metrics["eval_images"]
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

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """Evaluate with process 0's batch-norm statistics on every process (DDP).

        Training updates batch-norm running statistics on each process from its own shard,
        and DDP copies process 0's to the others only at the start of the next training
        forward; the Trainer evaluates the unwrapped model, so without this every process
        would score its shard of the valid split with a slightly different model than the
        one process 0 saves to ``best/``. This is that same copy, made before evaluating.
        """
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer.data, src=0)
        return super().evaluate(*args, **kwargs)

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[Any, Any, Any]:
        """The Trainer's step, with the per-image target dicts packed by :func:`pack_targets`."""
        loss, logits, labels = super().prediction_step(
            model, inputs, prediction_loss_only, ignore_keys=ignore_keys
        )
        if isinstance(labels, list) and all(isinstance(t, Mapping) for t in labels):
            labels = pack_targets(labels)
        return loss, logits, labels


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
    # Offset by the process index under torchrun/accelerate: every process augments its own
    # shard with its own random sequence (process 0, and a single process, are unchanged).
    augment_seed = args.data_seed if args.data_seed is not None else args.seed
    augment_seed += args.process_index
    train_ds = DetectionTorchDataset(
        splits.train, processor, train_transform(augment_seed), rank=args.process_index
    )
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
