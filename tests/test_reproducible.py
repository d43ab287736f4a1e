"""The same command and seed give the same metrics: augmentation, sampling, initialisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_factory import tiny_run_argv

from finetune.cli import main


def _run(dataset: Path, checkpoint: Path, out: Path, seed: int) -> list[dict]:
    """Three steps, evaluated at each; the per-evaluation losses and mAPs."""
    extra = ["--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "no",
             "--seed", str(seed)]  # fmt: skip
    code = main(tiny_run_argv(dataset, checkpoint, out, max_steps=3, extra=extra))
    assert code == 0
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    return [{k: v for k, v in e.items() if k != "elapsed_s"} for e in epochs]


@pytest.mark.slow
@pytest.mark.usefixtures("no_pictures")  # the pictures are not compared here
def test_same_seed_gives_identical_metrics(
    mini_dataset: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    first = _run(mini_dataset, tiny_checkpoint, tmp_path / "a", seed=7)
    again = _run(mini_dataset, tiny_checkpoint, tmp_path / "b", seed=7)
    other = _run(mini_dataset, tiny_checkpoint, tmp_path / "c", seed=8)
    assert len(first) == 3
    assert first == again  # losses, mAP, per-class AP: all equal, not just close
    assert [e["train_loss"] for e in other] != [e["train_loss"] for e in first]
    assert [e["eval_loss"] for e in other] != [e["eval_loss"] for e in first]


@pytest.mark.unit
def test_dataloader_workers_seed_augmentation(mini_dataset: Path) -> None:
    """In a worker the augmentation follows the seeded DataLoader, and moves on each epoch
    (a pickled copy of one augmentation state would repeat itself every epoch)."""
    from finetune.data import DetectionTorchDataset, collate_fn, train_transform
    from finetune.datasets import load_dataset
    from finetune.model import small_processor

    splits = load_dataset(mini_dataset)

    def epochs(seed: int, n: int = 2) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        dataset = DetectionTorchDataset(splits.train, small_processor(64), train_transform(seed))
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=8, num_workers=1, collate_fn=collate_fn
        )
        return [next(iter(loader))["pixel_values"] for _ in range(n)]

    first, second = epochs(0)
    again, _ = epochs(0)
    other, _ = epochs(1)
    assert torch.equal(first, again)
    assert not torch.equal(first, second)
    assert not torch.equal(first, other)
