"""``RunRecorder``: what one evaluation records in ``metrics.json``."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from finetune.train import RunRecorder


def _evaluate(recorder: RunRecorder, step: int, history: list[dict]) -> dict:
    state = SimpleNamespace(
        global_step=step, epoch=step / 10, log_history=history, is_world_process_zero=True
    )
    recorder.on_evaluate(None, state, None, metrics={"eval_loss": 1.0, "eval_map": 0.1})
    return recorder.summary["epochs"][-1]


@pytest.mark.unit
def test_train_loss_is_the_mean_since_the_previous_evaluation_or_none(tmp_path: Path):
    """No loss logged between two evaluations: None (a gap in curves.png), not the value
    logged before the previous evaluation again (that drew the loss as a step function)."""
    recorder = RunRecorder(tmp_path, processor=None, summary={})
    history = [{"loss": 4.0, "step": 5}, {"loss": 3.0, "step": 10}, {"eval_loss": 1, "step": 10}]
    assert _evaluate(recorder, 10, history)["train_loss"] == 3.5

    history.append({"eval_loss": 1, "step": 20})  # logging_steps longer than eval_steps
    assert _evaluate(recorder, 20, history)["train_loss"] is None

    history[-1:-1] = [{"loss": 2.0, "step": 25}, {"loss": 1.0, "step": 30}]
    history.append({"eval_loss": 1, "step": 30})
    assert _evaluate(recorder, 30, history)["train_loss"] == 1.5
    written = json.loads((tmp_path / "metrics.json").read_text())["epochs"]
    assert [e["train_loss"] for e in written] == [3.5, None, 1.5]
