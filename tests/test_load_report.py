"""Loading a checkpoint for new classes: one line for the class head, real problems still said."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForObjectDetection

from finetune.model import load_model_and_processor

pytestmark = pytest.mark.model

PETS = {0: "cat", 1: "dog"}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def transformers_log() -> Iterator[list[str]]:
    """Every message transformers logs (its loggers do not propagate to the root logger)."""
    handler = _Records()
    root = logging.getLogger("transformers")
    root.addHandler(handler)
    yield handler.messages
    root.removeHandler(handler)


def test_transformers_prints_a_report_table_for_a_new_head(
    tiny_checkpoint: Path, transformers_log: list[str]
) -> None:
    """The control: what ``from_pretrained`` alone shows for a 3-class checkpoint, 2 classes."""
    AutoModelForObjectDetection.from_pretrained(
        tiny_checkpoint, id2label=PETS, label2id={"cat": 0, "dog": 1}, ignore_mismatched_sizes=True
    )
    report = [m for m in transformers_log if "LOAD REPORT" in m]
    assert len(report) == 1 and report[0].count("MISMATCH") >= 5


def test_new_head_is_one_line_and_no_table(
    tiny_checkpoint: Path,
    transformers_log: list[str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        model, _ = load_model_and_processor(str(tiny_checkpoint), PETS)
    assert model.config.num_labels == 2
    assert not [m for m in transformers_log if "LOAD REPORT" in m or "MISMATCH" in m]
    out, err = capfd.readouterr()
    assert "LOAD REPORT" not in out + err and "MISMATCH" not in out + err
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("finetune")]
    assert messages == ["class head re-initialised for 2 classes: cat, dog"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_other_load_problems_are_still_reported(
    tiny_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A weight missing outside the heads and an unknown one: each named in a warning."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (broken / name).write_bytes((tiny_checkpoint / name).read_bytes())
    weights = load_file(tiny_checkpoint / "model.safetensors")
    dropped = next(k for k in weights if "backbone" in k and k.endswith("weight"))
    del weights[dropped]
    weights["model.extra_layer.weight"] = torch.zeros(3)
    save_file(weights, broken / "model.safetensors")

    with caplog.at_level(logging.INFO):
        load_model_and_processor(str(broken), PETS)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("missing from the checkpoint" in w and "backbone" in w for w in warnings), warnings
    assert any("not in the model" in w and "extra_layer" in w for w in warnings), warnings
    assert not any("class_embed" in w or "enc_score_head" in w for w in warnings), warnings
    assert "class head re-initialised for 2 classes: cat, dog" in caplog.text


def test_same_classes_keep_the_head_silently(
    tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from model_factory import TINY_CLASSES

    with caplog.at_level(logging.INFO):
        load_model_and_processor(str(tiny_checkpoint), dict(enumerate(TINY_CLASSES)))
    assert "re-initialised" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
