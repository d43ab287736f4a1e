"""A two-step training run end to end: checkpoint, metrics, pictures, resume, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from map_probe import independent_map, relabel_with_predictions
from run_factory import tiny_run_argv
from transformers import AutoImageProcessor, AutoModelForObjectDetection

from finetune.cli import main

pytestmark = pytest.mark.slow


def _train(dataset: Path, checkpoint: Path, out: Path, *extra: str) -> int:
    return main(tiny_run_argv(dataset, checkpoint, out, max_steps=2, extra=extra))


@pytest.fixture(scope="module")
def run_dir(
    mini_dataset: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("runs") / "exp"
    assert _train(mini_dataset, tiny_checkpoint, out) == 0
    return out


def test_best_checkpoint_loads_with_dataset_label_map(run_dir: Path) -> None:
    model = AutoModelForObjectDetection.from_pretrained(run_dir / "best")
    processor = AutoImageProcessor.from_pretrained(run_dir / "best")
    assert model.config.id2label == {0: "circle", 1: "square"}
    assert model.config.label2id == {"circle": 0, "square": 1}
    assert model.model.enc_score_head.out_features == 2
    assert all(h.out_features == 2 for h in model.model.decoder.class_embed)
    assert dict(processor.size)["height"] == 64  # the checkpoint's input size is kept


def test_metrics_json_has_epochs_and_test(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["classes"] == ["circle", "square"]
    assert metrics["layout"] == "coco"
    epoch = metrics["epochs"][-1]
    assert epoch["step"] == 2
    for key in ("map", "map_50", "map_75", "train_loss", "eval_loss"):
        assert isinstance(epoch[key], float), key
    assert metrics["best"]["step"] == 2


@pytest.fixture(scope="module")
def scored_run(
    run_dir: Path,
    mini_dataset: Path,
    tiny_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path]:
    """The same two-step run on a copy of the dataset whose test split is labelled with the
    first run's best/ detections: training is unchanged (train and valid are the same, the
    seed too), but the test mAP is no longer 0.0, the value a broken evaluation gives.
    Returns (run folder, dataset)."""
    dataset = tmp_path_factory.mktemp("relabelled") / "mini"
    shutil.copytree(mini_dataset, dataset)
    relabel_with_predictions(dataset / "test", run_dir / "best")
    out = tmp_path_factory.mktemp("runs") / "scored"
    assert _train(dataset, tiny_checkpoint, out) == 0
    return out, dataset


def test_test_map_is_the_map_of_best_on_the_test_split(scored_run: tuple[Path, Path]) -> None:
    """metrics.json's test mAP equals pycocotools' mAP of best/ (transformers'
    post-processing, tests/map_probe.py), not just a number between 0 and 1."""
    out, dataset = scored_run
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    expected = independent_map(out / "best", dataset / "test")
    # The fixture is informative: best/ finds some of its labels and misses others.
    assert 0.05 < expected["map"] < 0.99, expected
    assert expected["map_50"] > expected["map"] + 0.05, expected  # one metric is not another
    for key in ("map", "map_50", "map_75"):
        assert metrics[key] == pytest.approx(expected[key], abs=2e-6), key


def test_pictures_are_written(run_dir: Path) -> None:
    for name in ("curves.png", "confusion_matrix.png", "predictions.png"):
        data = (run_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, name
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == []


def test_without_evaluation_best_holds_the_final_weights(
    mini_dataset: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """--eval_strategy no: nothing picks a best epoch, so best/ is the final model (and the
    test split is still scored), not a traceback at the end of training."""
    out = tmp_path / "exp"
    assert _train(mini_dataset, tiny_checkpoint, out, "--eval_strategy", "no") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    expected = independent_map(out / "best", mini_dataset / "test")
    assert metrics["test"]["map"] == pytest.approx(expected["map"], abs=2e-6)
    assert metrics["test"]["map_50"] == pytest.approx(expected["map_50"], abs=2e-6)
    final = AutoModelForObjectDetection.from_pretrained(out / "checkpoint-2")
    best = AutoModelForObjectDetection.from_pretrained(out / "best")
    for name, value in final.state_dict().items():
        assert torch.equal(value, best.state_dict()[name]), name


def test_resume_restores_every_weight(
    run_dir: Path,
    mini_dataset: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Trainer's own resume skipped RT-DETR weights saved under legacy names; ours must not."""
    from finetune import train

    checkpoint = run_dir / "checkpoint-2"
    expected = AutoModelForObjectDetection.from_pretrained(checkpoint).state_dict()
    seen: dict[str, torch.Tensor] = {}
    original = train.DetectionTrainer._load_from_checkpoint

    def spy(self, path, model=None):  # type: ignore[no-untyped-def]
        original(self, path, model)
        seen.update({k: v.clone() for k, v in self.model.state_dict().items()})

    monkeypatch.setattr(train.DetectionTrainer, "_load_from_checkpoint", spy)
    out = tmp_path / "resumed"
    shutil.copytree(run_dir, out)
    # Start from the untrained checkpoint so that any weight resume misses stays visibly wrong.
    code = _train(
        mini_dataset,
        tiny_checkpoint,
        out,
        "--max_steps",
        "3",
        "--resume_from_checkpoint",
        str(out / "checkpoint-2"),
    )
    assert code == 0
    assert seen.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(seen[key], value), key
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["step"] for e in metrics["epochs"]] == [2, 3]


def test_broken_dataset_exits_2_before_training(
    mini_dataset: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(mini_dataset, broken)
    (broken / "train" / "train_00000.jpg").write_bytes(b"not a jpeg")
    ann = broken / "valid" / "_annotations.coco.json"
    coco = json.loads(ann.read_text())
    coco["annotations"][0]["category_id"] = 42
    ann.write_text(json.dumps(coco))
    out = tmp_path / "run"
    assert _train(broken, tiny_checkpoint, out) == 2
    err = capsys.readouterr().err
    assert "train_00000.jpg" in err and "decode" in err
    assert "42" in err and "_annotations.coco.json" in err
    assert "Traceback" not in err
    assert not (out / "best").exists()


def test_missing_checkpoint_folder_is_a_clear_error(
    mini_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _train(mini_dataset, tmp_path / "nope", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "nope" in err and "config.json" in err
