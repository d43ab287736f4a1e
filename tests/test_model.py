"""Model loading: label maps, class-head re-initialisation, clear errors offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from finetune.model import CheckpointError, load_model_and_processor

pytestmark = pytest.mark.model

NEW_LABELS = {0: "bolt", 1: "nut", 2: "washer", 3: "screw"}


def test_new_label_map_reinitialises_every_class_head(tiny_checkpoint: Path) -> None:
    original, _ = load_model_and_processor(
        str(tiny_checkpoint), {0: "circle", 1: "square", 2: "triangle"}
    )
    model, processor = load_model_and_processor(str(tiny_checkpoint), NEW_LABELS)
    assert model.config.id2label == NEW_LABELS
    assert model.config.label2id == {v: k for k, v in NEW_LABELS.items()}
    inner = model.model
    assert inner.enc_score_head.out_features == 4
    assert [h.out_features for h in inner.decoder.class_embed] == [4]
    assert inner.denoising_class_embed.num_embeddings == 5
    # everything but the class heads is kept from the checkpoint
    before, after = original.state_dict(), model.state_dict()
    kept = [k for k in before if "score_head" not in k and "class_embed" not in k]
    assert len(kept) > 100
    for key in kept:
        assert torch.equal(before[key], after[key]), key
    assert processor.size["height"] == 64


def test_same_label_map_keeps_the_head(tiny_checkpoint: Path) -> None:
    labels = {0: "circle", 1: "square", 2: "triangle"}
    a, _ = load_model_and_processor(str(tiny_checkpoint), labels)
    b, _ = load_model_and_processor(str(tiny_checkpoint), labels)
    assert torch.equal(a.model.enc_score_head.weight, b.model.enc_score_head.weight)


def test_image_size_override(tiny_checkpoint: Path) -> None:
    _, processor = load_model_and_processor(str(tiny_checkpoint), NEW_LABELS, image_size=96)
    assert (processor.size["height"], processor.size["width"]) == (96, 96)


def test_hub_id_offline_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as info:
        load_model_and_processor("PekingU/rtdetr_r50vd_coco_o365", NEW_LABELS)
    message = str(info.value)
    assert "cannot reach the Hugging Face Hub" in message
    assert "--checkpoint DIR" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: (p / "config.json").unlink(), "no config.json"),
        (lambda p: (p / "config.json").write_text("{not json"), "cannot load checkpoint"),
        (
            lambda p: (p / "config.json").write_text(json.dumps({"model_type": "bert"})),
            "'bert' is not a supported real-time DETR",
        ),
        (lambda p: (p / "model.safetensors").write_bytes(b"\x00" * 64), "cannot load"),
    ],
)
def test_broken_checkpoints(tiny_checkpoint: Path, tmp_path: Path, mutate, expected: str) -> None:
    broken = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, broken)
    mutate(broken)
    with pytest.raises(CheckpointError, match=expected) as info:
        load_model_and_processor(str(broken), NEW_LABELS)
    assert str(broken) in str(info.value)


def test_rt_detr_v2_checkpoint_gets_a_new_head_that_survives_save(tmp_path: Path) -> None:
    from transformers import AutoModelForObjectDetection, RTDetrV2Config, RTDetrV2ForObjectDetection

    from finetune.model import basic_resnet, small_processor

    config = RTDetrV2Config(
        backbone_config=basic_resnet(8, 1), encoder_in_channels=[16, 32, 64],
        encoder_hidden_dim=32, encoder_ffn_dim=64, encoder_attention_heads=2, d_model=32,
        decoder_in_channels=[32, 32, 32], decoder_ffn_dim=64, decoder_layers=2,
        decoder_attention_heads=2, decoder_n_points=2, num_queries=20, num_denoising=10,
        id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1},
    )  # fmt: skip
    source = tmp_path / "v2"
    RTDetrV2ForObjectDetection(config).save_pretrained(source)
    small_processor(64).save_pretrained(source)
    model, _ = load_model_and_processor(str(source), NEW_LABELS)
    assert type(model).__name__ == "RTDetrV2ForObjectDetection"
    assert [h.out_features for h in model.model.decoder.class_embed] == [4, 4]
    with torch.no_grad():  # stands in for training: the trained head must be what is saved
        for head in model.model.decoder.class_embed:
            head.weight.fill_(0.25)
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForObjectDetection.from_pretrained(tmp_path / "saved")
    assert reloaded.config.id2label == NEW_LABELS
    for head in reloaded.model.decoder.class_embed:
        assert torch.all(head.weight == 0.25)


def test_aspect_preserving_processor_needs_an_image_size(tiny_checkpoint: Path, tmp_path) -> None:
    """A hub processor that resizes by shortest/longest edge (RfDetrImageProcessor's default:
    800/1333) cannot give the one fixed input an export needs: one line saying what to pass."""
    from transformers import RTDetrImageProcessor

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    RTDetrImageProcessor(size={"shortest_edge": 800, "longest_edge": 1333}).save_pretrained(folder)
    with pytest.raises(CheckpointError, match=r"resizes by .*shortest_edge.*--image_size N"):
        load_model_and_processor(str(folder), NEW_LABELS)
    _, processor = load_model_and_processor(str(folder), NEW_LABELS, image_size=64)
    assert dict(processor.size)["height"] == 64


@pytest.mark.parametrize(
    ("checkpoint", "ok_size"),
    [("scratch", 128), ("scratch:d_fine", 128), ("scratch:rf_detr", 192)],  # RF-DETR: 16-px
)  # patches, 100 queries: 128 px gives 64 positions
def test_input_too_small_for_the_queries_is_refused_before_training(
    checkpoint: str, ok_size: int
) -> None:
    from finetune.model import check_input_size

    model, processor = load_model_and_processor(checkpoint, NEW_LABELS, image_size=32)
    with pytest.raises(CheckpointError, match=r"--image_size 32x32 is too small .* queries"):
        check_input_size(model, processor)
    assert model.training  # the check leaves the model as it found it
    model, processor = load_model_and_processor(checkpoint, NEW_LABELS, image_size=ok_size)
    check_input_size(model, processor)  # large enough: no error
