"""Distributed fine-tuning: torchrun (and accelerate launch) with 2 CPU processes over gloo.

The slow tests launch real processes on tiny data: DDP must be engaged (each process trains
on half of the train split), the valid split must be scored exactly once per evaluation
(gathered from both processes, the padding duplicates of the last batch dropped), with the
model that process 0 saves to ``best/``, and only process 0 writes and prints the report.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from map_probe import independent_map, relabel_with_predictions
from run_factory import MINI_SPEC, tiny_run_argv

from finetune.synthetic import generate_dataset

# 5 valid images: not a multiple of 2 processes x 2 images per evaluation batch, so the last
# batch of process 1 is padded with images process 0 already scored.
SPEC = replace(MINI_SPEC, split_sizes=(8, 5, 3))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mini_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("data") / "mini", SPEC)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",  # one thread per process: the machine is shared
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
    )
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _finetune_args(dataset: Path, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    schedule = ["--learning_rate", "1e-3", "--warmup_steps", "0"]
    argv = tiny_run_argv(dataset, checkpoint, out, max_steps=2, eval_batch=2,
                         extra=[*schedule, *extra])  # fmt: skip
    return ["-m", "finetune", *argv]


def _launch(launcher: list[str], args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *launcher, *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _check_run(
    proc: subprocess.CompletedProcess, out: Path, steps: list[int], dataset: Path
) -> dict:
    """What every 2-process run must show; returns its metrics.json.

    The test mAP must be pycocotools' mAP of the best/ that process 0 saved, on the whole
    test split of ``dataset`` (``map_probe``: none of finetune's evaluation code)."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2
    # DDP engaged: 8 train images, 2 per process per step -> one epoch in 2 steps (4 alone).
    assert [e["step"] for e in metrics["epochs"]] == steps
    assert [e["epoch"] for e in metrics["epochs"]] == [step / 2 for step in steps]
    # Every evaluation scored the whole valid split, each image once.
    for record in metrics["epochs"]:
        assert record["images"] == SPEC.split_sizes[1], record
    assert "already scored" not in proc.stderr
    # Only process 0 wrote: one best/, no temporary files left beside the results.
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("best", "."))) == ["best"]
    # Only process 0 printed the summary and told the story.
    lines = proc.stdout.splitlines()
    summary = [line for line in lines if line.startswith(("test mAP", "best checkpoint", "next:"))]
    summary += [line for line in lines if line.startswith(("metrics ", "picture "))]
    assert len(summary) == 7, proc.stdout
    for line in summary:
        assert lines.count(line) == 1, line
    dataset_lines = [
        line for line in proc.stderr.splitlines() if line.startswith("dataset ") and "valid" in line
    ]
    assert len(dataset_lines) == 1, proc.stderr[-3000:]
    assert "DDP on CPU, backend gloo" in proc.stderr
    expected = independent_map(out / "best", dataset / "test")
    for key in ("map", "map_50", "map_75"):
        assert metrics["test"][key] == pytest.approx(expected[key], abs=2e-6), key
    return metrics


@pytest.fixture(scope="module")
def torchrun_run(
    mini_dataset: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess, Path]:
    """2 steps (one epoch: checkpoint-2), evaluated at each step, with torchrun."""
    cwd = tmp_path_factory.mktemp("torchrun")
    out = cwd / "run"
    proc = _launch(
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
        _finetune_args(mini_dataset, tiny_checkpoint, out, "--eval_steps", "1"),
        cwd,
    )
    return proc, out


@pytest.mark.slow
def test_torchrun_two_cpu_processes(
    torchrun_run: tuple[subprocess.CompletedProcess, Path], mini_dataset: Path
) -> None:
    from transformers import AutoImageProcessor, RTDetrForObjectDetection

    from finetune.datasets import load_dataset
    from finetune.evaluate import evaluate_dataset

    proc, out = torchrun_run
    metrics = _check_run(proc, out, steps=[1, 2], dataset=mini_dataset)

    # best/ loads, and the mAP the two processes recorded for it is the mAP of those weights
    # on the whole valid split, scored here in one process.
    model = RTDetrForObjectDetection.from_pretrained(out / "best").eval()
    processor = AutoImageProcessor.from_pretrained(out / "best")
    torch.set_num_threads(1)
    alone, _, _ = evaluate_dataset(
        model, processor, load_dataset(mini_dataset).valid, progress=False
    )
    assert metrics["best"]["map"] == pytest.approx(alone["map"], abs=1e-6)
    assert metrics["best"]["map_50"] == pytest.approx(alone["map_50"], abs=1e-6)


@pytest.mark.slow
def test_accelerate_launch_resumes_two_cpu_processes(
    torchrun_run: tuple[subprocess.CompletedProcess, Path],
    mini_dataset: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
) -> None:
    """``accelerate launch`` resumes the torchrun run for one more step. On a machine without
    GPU ``--multi_gpu`` is accelerate's multi-process launcher (without it, or a config
    file, it starts one process). The test split of the resumed run is labelled with the
    torchrun best/ detections (train and valid unchanged), so that its test mAP, scored by
    process 0 alone, is not the 0.0 a broken or doubly-gathered evaluation could also give."""
    proc, first = torchrun_run
    assert proc.returncode == 0
    out = tmp_path / "run"
    shutil.copytree(first, out)
    dataset = tmp_path / "relabelled"
    shutil.copytree(mini_dataset, dataset)
    relabel_with_predictions(dataset / "test", first / "best")
    before = json.loads((out / "best" / "best_score.json").read_text())
    proc = _launch(
        [
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "0",
        ],
        _finetune_args(
            dataset,
            tiny_checkpoint,
            out,
            "--max_steps",
            "3",
            "--eval_steps",
            "1",
            "--resume_from_checkpoint",
            str(out),
        ),
        tmp_path,
    )
    metrics = _check_run(proc, out, steps=[1, 2, 3], dataset=dataset)
    assert 0.05 < metrics["test"]["map"] < 0.99, metrics["test"]  # informative labels
    assert proc.stderr.count("resumed at step 2;") == 1
    after = json.loads((out / "best" / "best_score.json").read_text())
    third = metrics["epochs"][-1]["map"]
    assert after == (before if third <= before["map"] else metrics["best"])


# ---- the pieces, in one process ---------------------------------------------------------


@pytest.mark.unit
def test_distributed_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from finetune import cli

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert cli.distributed_defaults({}) == {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(cli, "_has_accelerator", lambda: False)
    assert cli.distributed_defaults({}) == {"use_cpu": True, "ddp_backend": "gloo"}
    assert cli.distributed_defaults({"ddp_backend": "mpi"}) == {"use_cpu": True}
    monkeypatch.setattr(cli, "_has_accelerator", lambda: True)
    assert cli.distributed_defaults({}) == {}  # GPUs: the Trainer's own choice (NCCL)
    assert cli.distributed_defaults({"use_cpu": True}) == {"use_cpu": True, "ddp_backend": "gloo"}


def _targets(image_id: int, classes: list[int], boxes: list[list[float]]) -> dict:
    return {
        "image_id": torch.tensor([image_id]),
        "class_labels": torch.tensor(classes, dtype=torch.int64),
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "orig_size": torch.tensor([80, 100]),  # height, width
    }


def _perfect_predictions(labels: list[dict], queries: int = 3, classes: int = 2) -> tuple:
    """Logits and boxes that find every target box with score ~1 and nothing else."""
    logits = torch.full((len(labels), queries, classes), -20.0)
    boxes = torch.full((len(labels), queries, 4), 0.1)
    for i, target in enumerate(labels):
        for q, (c, box) in enumerate(zip(target["class_labels"], target["boxes"], strict=True)):
            logits[i, q, int(c)] = 20.0
            boxes[i, q] = box
    return logits.numpy(), boxes.numpy()


@pytest.mark.unit
def test_pack_targets_round_trip() -> None:
    from finetune.train import PAD, pack_targets

    labels = [
        _targets(4, [1, 0], [[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.2]]),
        _targets(7, [], []),  # a background image
    ]
    boxes, meta = pack_targets(labels)
    assert boxes.shape == (2, 2, 5) and meta.shape == (2, 3)
    assert meta.tolist() == [[4, 80, 100], [7, 80, 100]]
    assert boxes[0, :, 0].tolist() == [1.0, 0.0]
    assert torch.equal(boxes[0, 1, 1:], torch.tensor([0.3, 0.3, 0.1, 0.2]))
    assert (boxes[1] == PAD).all()


@pytest.mark.unit
def test_map_evaluator_scores_each_image_once(caplog: pytest.LogCaptureFixture) -> None:
    """Batches as the Trainer hands them over after a 2-process gather: box rows padded with
    -100, and an image that came twice is scored once (with a warning)."""
    from finetune.train import PAD, MapEvaluator, pack_targets

    first = [
        _targets(0, [0], [[0.5, 0.5, 0.2, 0.2]]),
        _targets(1, [1, 1], [[0.2, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.3]]),
    ]
    second = [_targets(2, [1], [[0.4, 0.6, 0.3, 0.2]])]
    boxes_1, meta_1 = pack_targets(first)
    boxes_2, meta_2 = pack_targets(second)
    # The Trainer pads box rows across processes with -100.
    boxes_2 = torch.cat([boxes_2, torch.full((1, 2, 5), float(PAD))], dim=1)
    # A padding duplicate of image 0, predicted badly: must not count.
    duplicate_boxes, duplicate_meta = pack_targets(first[:1])
    duplicate_preds = tuple(np.zeros_like(a) for a in _perfect_predictions(first[:1]))
    evaluator = MapEvaluator(["circle", "square"], num_top_queries=6)
    eval_pred = SimpleNamespace(
        predictions=[
            _perfect_predictions(first),
            _perfect_predictions(second),
            duplicate_preds,
        ],
        label_ids=[
            (boxes_1.numpy(), meta_1.numpy()),
            (boxes_2.numpy(), meta_2.numpy()),
            (duplicate_boxes.numpy(), duplicate_meta.numpy()),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="finetune"):
        metrics = evaluator(eval_pred)
    assert metrics["images"] == 3
    assert metrics["map"] == pytest.approx(1.0)
    assert "already scored" in caplog.text

    # eval_do_concat_batches=True: one batch, box rows padded to the longest.
    boxes_1p = torch.cat([boxes_1, torch.full((2, 1, 5), float(PAD))], dim=1)
    concat = SimpleNamespace(
        predictions=tuple(
            np.concatenate([a, b])
            for a, b in zip(_perfect_predictions(first), _perfect_predictions(second), strict=True)
        ),
        label_ids=(
            np.concatenate([boxes_1p.numpy(), boxes_2.numpy()]),
            np.concatenate([meta_1.numpy(), meta_2.numpy()]),
        ),
    )
    metrics = evaluator(concat)
    assert metrics["images"] == 3 and metrics["map"] == pytest.approx(1.0)
