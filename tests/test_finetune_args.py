"""``python -m finetune`` argument parsing: step intervals without their strategy, --help."""

from __future__ import annotations

import logging

import pytest

from finetune.cli import parse_args

pytestmark = pytest.mark.unit


def _strategies(argv: list[str]) -> tuple[str, str]:
    _, targs, _ = parse_args(argv)
    return str(targs.save_strategy.value), str(targs.eval_strategy.value)


def test_defaults_are_per_epoch_and_silent(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="finetune"):
        assert _strategies([]) == ("epoch", "epoch")
    assert caplog.text == ""


@pytest.mark.parametrize(
    "argv", [["--save_steps", "50"], ["--save_steps=50"], ["--save-steps", "50"]]
)
def test_save_steps_alone_switches_save_strategy_to_steps(
    argv: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="finetune"):
        _, targs, _ = parse_args(argv)
    assert targs.save_strategy.value == "steps" and targs.save_steps == 50
    assert targs.eval_strategy.value == "epoch"  # only the flag's own strategy moves
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "--save_steps 50 given without --save_strategy: save_strategy set to 'steps' (was 'epoch')"
    ]


def test_eval_steps_alone_switches_eval_strategy_to_steps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="finetune"):
        _, targs, _ = parse_args(["--eval_steps", "0.25"])
    assert targs.eval_strategy.value == "steps" and targs.eval_steps == 0.25
    assert "eval_strategy set to 'steps' (was 'epoch')" in caplog.text


def test_an_explicit_strategy_wins_and_the_ignored_interval_is_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="finetune"):
        assert _strategies(["--save_steps", "50", "--save_strategy", "epoch"]) == (
            "epoch",
            "epoch",
        )
    assert "--save_steps is ignored with --save_strategy epoch" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="finetune"):
        assert _strategies(["--save_steps", "50", "--save_strategy", "steps"])[0] == "steps"
    assert caplog.text == ""


def test_output_dir_given_is_detected_in_both_spellings() -> None:
    assert parse_args(["--output_dir", "runs/x"])[2]
    assert parse_args(["--output_dir=runs/x"])[2]
    assert not parse_args(["--max_steps", "3"])[2]


def test_help_explains_the_rule_and_shows_this_models_defaults(
    capsys: pytest.CaptureFixture,
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "giving --save_steps without --save_strategy switches save_strategy from 'epoch' to 'steps'"
        in text
    )
    assert "giving --eval_steps without --eval_strategy switches" in text
    assert "An incomplete checkpoint (interrupted save) is refused with exit 2" in text
    assert "The initial learning rate for the optimizer. (default: 0.0005)" in text
