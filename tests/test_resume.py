"""Resuming a run: the best score is restored, incomplete checkpoints are named, not crashed on."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from run_factory import tiny_run_argv

from finetune.cli import main
from finetune.runs import (
    ResumeError,
    checkpoint_problems,
    recorded_best,
    resolve_resume,
)

pytestmark = pytest.mark.usefixtures("no_pictures")  # not looked at here (conftest)

# The first run's evaluations at steps 1..4: the best is step 2.
FIRST_RUN = (0.1, 0.4, 0.2, 0.3)


def _argv(dataset: Path, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    every_step = ["--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps",
                  "--save_steps", "1", "--save_total_limit", "10"]  # fmt: skip
    return tiny_run_argv(dataset, checkpoint, out, max_steps=4, extra=[*every_step, *extra])


@pytest.fixture
def scripted_map(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Evaluations return the mAP values appended to the yielded list, in order."""
    yield from _script(monkeypatch)


def _script(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    from finetune.train import MapEvaluator

    values: list[float] = []
    original = MapEvaluator.__call__

    def call(self, eval_pred):  # type: ignore[no-untyped-def]
        metrics = original(self, eval_pred)
        metrics["map"] = values.pop(0)
        return metrics

    monkeypatch.setattr(MapEvaluator, "__call__", call)
    yield values
    assert not values, f"evaluations expected but not run: {values}"


@pytest.fixture(scope="module")
def four_step_run(
    mini_dataset: Path,
    tiny_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
    no_pictures: None,
) -> Path:
    """Four steps, evaluated and saved at every step, mAP scripted to FIRST_RUN."""
    out = tmp_path_factory.mktemp("runs") / "exp"
    with pytest.MonkeyPatch.context() as mp:
        for values in _script(mp):
            values.extend(FIRST_RUN)
            assert main(_argv(mini_dataset, tiny_checkpoint, out)) == 0
    return out


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def _steps(run: Path) -> list[int]:
    return [e["step"] for e in json.loads((run / "metrics.json").read_text())["epochs"]]


@pytest.mark.slow
def test_first_run_records_its_best(four_step_run: Path) -> None:
    best = recorded_best(four_step_run)
    assert best is not None and best["map"] == 0.4 and best["step"] == 2
    assert json.loads((four_step_run / "best" / "best_score.json").read_text())["map"] == 0.4
    assert _steps(four_step_run) == [1, 2, 3, 4]


@pytest.mark.slow
def test_the_latest_checkpoint_is_kept_when_it_is_not_the_best(
    mini_dataset: Path, tiny_checkpoint: Path, tmp_path: Path, scripted_map: list[float]
) -> None:
    """The default limit of one checkpoint keeps the latest (to resume); best/ has the best."""
    out = tmp_path / "exp"
    scripted_map.extend([0.4, 0.1, 0.2])  # the best is step 1, the run ends at step 3
    every_step = ["--eval_strategy", "steps", "--eval_steps", "1", "--save_steps", "1"]
    argv = tiny_run_argv(mini_dataset, tiny_checkpoint, out, max_steps=3, extra=every_step)
    assert main(argv) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    assert recorded_best(out)["step"] == 1


@pytest.mark.slow
def test_resume_never_replaces_a_better_best(
    four_step_run: Path,
    mini_dataset: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    scripted_map: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Resumed from before the best, every later evaluation is worse or equal: best/ stays."""
    out = tmp_path / "exp"
    shutil.copytree(four_step_run, out)
    before = _digest(out / "best")
    scripted_map.extend([0.35, 0.4, 0.2])  # steps 2, 3, 4; 0.4 ties the best: not better
    with caplog.at_level(logging.INFO, logger="finetune"):
        code = main(
            _argv(
                mini_dataset,
                tiny_checkpoint,
                out,
                "--resume_from_checkpoint",
                str(out / "checkpoint-1"),
            )
        )
    assert code == 0
    assert _digest(out / "best") == before
    assert recorded_best(out) == json.loads(
        (four_step_run / "best" / "best_score.json").read_text()
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best"]["map"] == 0.4 and metrics["best"]["step"] == 2
    assert _steps(out) == [1, 2, 3, 4]  # no step twice
    assert [e["map"] for e in metrics["epochs"]] == [0.1, 0.35, 0.4, 0.2]  # redone, replaced
    assert "best so far: mAP50:95 0.4000 at step 2" in caplog.text


@pytest.mark.slow
def test_resume_replaces_best_with_a_strictly_better_score(
    four_step_run: Path,
    mini_dataset: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    scripted_map: list[float],
) -> None:
    out = tmp_path / "exp"
    shutil.copytree(four_step_run, out)
    before = _digest(out / "best")
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftovers = [out / f".best.{dead.pid}.abcd1234", out / f".metrics.json.{dead.pid}.abcd1234"]
    shutil.copytree(out / "best", leftovers[0])
    leftovers[1].write_text("{")
    scripted_map.append(0.5)  # step 4
    resume = ["--resume_from_checkpoint", str(out / "checkpoint-3")]
    assert main(_argv(mini_dataset, tiny_checkpoint, out, *resume)) == 0
    assert _digest(out / "best") != before
    assert recorded_best(out)["step"] == 4  # type: ignore[index]
    assert json.loads((out / "metrics.json").read_text())["best"]["map"] == 0.5
    assert _steps(out) == [1, 2, 3, 4]
    assert not any(p.exists() for p in leftovers)  # removed when the resume started
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def _break(checkpoint: Path, *names: str) -> None:
    for name in names:
        (checkpoint / name).unlink()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("missing", ["model.safetensors", "trainer_state.json"]),
        ("truncated", ["model.safetensors (truncated)"]),
    ],
)
def test_incomplete_checkpoint_is_one_line_and_exit_2(
    four_step_run: Path,
    mini_dataset: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    damage: str,
    named: Sequence[str],
) -> None:
    out = tmp_path / "exp"
    shutil.copytree(four_step_run, out)
    newest = out / "checkpoint-4"
    if damage == "missing":
        _break(newest, "model.safetensors", "trainer_state.json")
    else:
        weights = newest / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    best = _digest(out / "best")
    code = main(_argv(mini_dataset, tiny_checkpoint, out, "--resume_from_checkpoint", str(newest)))
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and str(newest) in lines[0]
    assert all(name in lines[0] for name in named), lines[0]
    assert f"resume from {out / 'checkpoint-3'} instead" in lines[0]
    assert _digest(out / "best") == best


@pytest.mark.slow
def test_resume_from_run_folder_uses_last_complete_checkpoint(
    four_step_run: Path,
    mini_dataset: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    scripted_map: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``--resume_from_checkpoint RUN`` with a newest checkpoint a kill left half-written."""
    out = tmp_path / "exp"
    shutil.copytree(four_step_run, out)
    _break(out / "checkpoint-4", "trainer_state.json")
    scripted_map.append(0.3)  # step 4, redone from checkpoint-3
    with caplog.at_level(logging.INFO, logger="finetune"):
        code = main(_argv(mini_dataset, tiny_checkpoint, out, "--resume_from_checkpoint", str(out)))
    assert code == 0
    assert (
        f"{out / 'checkpoint-4'} is incomplete (missing trainer_state.json): resuming from "
        f"{out / 'checkpoint-3'}, the last complete checkpoint" in caplog.text
    )
    assert f"removing incomplete {out / 'checkpoint-4'}" in caplog.text
    assert checkpoint_problems(out / "checkpoint-4") == []  # saved again, complete
    assert _steps(out) == [1, 2, 3, 4]


# --- resolve_resume on fabricated folders (no training) ---------------------------------


def _fake_checkpoint(folder: Path, step: int, *, complete: bool = True) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    save_file({"w": np.zeros(4, dtype=np.float32)}, folder / "model.safetensors")
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


@pytest.mark.unit
def test_true_resumes_output_dir_with_last_complete(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    _fake_checkpoint(run / "checkpoint-5", 5)
    _fake_checkpoint(run / "checkpoint-10", 10)
    _fake_checkpoint(run / "checkpoint-15", 15, complete=False)
    with caplog.at_level(logging.INFO, logger="finetune"):
        assert resolve_resume("true", run) == (run, run / "checkpoint-10")
        assert resolve_resume("True", run) == (run, run / "checkpoint-10")
    assert f"{run / 'checkpoint-15'} is incomplete (missing trainer_state.json)" in caplog.text


@pytest.mark.unit
def test_checkpoint_folder_resumes_into_its_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    checkpoint = _fake_checkpoint(run / "checkpoint-5", 5)
    assert resolve_resume(str(checkpoint), None) == (run, checkpoint)
    assert resolve_resume(str(checkpoint), tmp_path / "fork") == (tmp_path / "fork", checkpoint)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("value", "output_dir", "message"),
    [
        ("true", None, "pass --output_dir"),
        ("{tmp}/nope", None, "no such folder"),
        ("{tmp}/run", None, "none of its checkpoints is complete (checkpoint-3"),
        ("{tmp}/run/checkpoint-3", None, "has no complete checkpoint: start a new run"),
        ("{tmp}", None, "has no checkpoint-N folder"),
    ],
)
def test_nothing_to_resume_is_a_clear_error(
    tmp_path: Path, value: str, output_dir: str | None, message: str
) -> None:
    _fake_checkpoint(tmp_path / "run" / "checkpoint-3", 3, complete=False)
    with pytest.raises(ResumeError) as info:
        resolve_resume(value.format(tmp=tmp_path), output_dir)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.unit
def test_recorded_best_reads_best_folder_then_metrics_json(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert recorded_best(run) is None
    (run / "best").mkdir(parents=True)
    (run / "best" / "config.json").write_text("{}")
    assert recorded_best(run) is None  # a best/ with no score anywhere
    (run / "metrics.json").write_text(json.dumps({"best": {"map": 0.3, "step": 6}}))
    assert recorded_best(run) == {"map": 0.3, "step": 6}  # runs made before best_score.json
    (run / "best" / "best_score.json").write_text(json.dumps({"map": 0.5, "step": 8}))
    assert recorded_best(run) == {"map": 0.5, "step": 8}  # written with the weights: wins
