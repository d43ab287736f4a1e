"""Tiny fine-tuning runs for the tests: one dataset spec and one command line, shared.

``test_train``, ``test_resume``, ``test_reproducible`` and ``test_distributed`` train the tiny
model for a few steps on the same generated 2-class dataset; what differs is only the steps,
the eval batch and their extra flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from finetune.synthetic import SyntheticSpec

__all__ = ["MINI_SPEC", "tiny_run_argv"]

MINI_SPEC = SyntheticSpec(
    name="mini",
    classes=("circle", "square"),
    image_size=(96, 80),
    split_sizes=(8, 4, 4),
    max_objects=2,
    seed=3,
)


def tiny_run_argv(
    dataset: Path,
    checkpoint: Path,
    out: Path,
    *,
    max_steps: int,
    eval_batch: int = 4,
    extra: Sequence[str] = (),
) -> list[str]:
    """``python -m finetune`` arguments: batch 2, log every step, then ``extra``."""
    return [
        "--dataset", str(dataset),
        "--checkpoint", str(checkpoint),
        "--output_dir", str(out),
        "--max_steps", str(max_steps),
        "--per_device_train_batch_size", "2",
        "--per_device_eval_batch_size", str(eval_batch),
        "--logging_steps", "1",
        *extra,
    ]  # fmt: skip
