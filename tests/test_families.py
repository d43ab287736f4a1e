"""The family seam (``finetune.families``): every family loads, re-initialises its class
heads for a dataset and fine-tunes through ``python -m finetune`` unchanged."""

from __future__ import annotations

import json

import pytest
import torch

from finetune.families import FAMILIES, UnknownFamilyError, family_of
from finetune.model import CheckpointError, load_model_and_processor

THREE = {0: "a", 1: "b", 2: "c"}
TWO = {0: "circle", 1: "square"}


@pytest.mark.unit
def test_the_six_families_and_a_clear_error_for_others():
    families = ["rt_detr", "rt_detr_v2", "d_fine", "deimv2", "rf_detr", "lw_detr"]
    assert list(FAMILIES) == families
    assert family_of("d_fine").title == "D-FINE"
    with pytest.raises(UnknownFamilyError, match=r"'detr' is not a supported.*rt_detr, "):
        family_of("detr")


@pytest.mark.unit
def test_an_unknown_model_type_is_a_one_line_checkpoint_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "detr"}))
    with pytest.raises(CheckpointError, match=r"model_type 'detr' is not a supported"):
        load_model_and_processor(str(tmp_path), TWO)
    with pytest.raises(CheckpointError, match=r"scratch:yolo: model_type 'yolo'"):
        load_model_and_processor("scratch:yolo", TWO)


def _heads(model: torch.nn.Module, names: tuple[str, ...]) -> dict[str, torch.nn.Module]:
    return {
        path: module
        for path, module in model.named_modules(remove_duplicate=False)
        if path.rpartition(".")[2] in names
    }


def _out_features(module: torch.nn.Module) -> set[int]:
    if isinstance(module, torch.nn.Embedding):
        return {module.num_embeddings - 1}  # one padding label
    layers = module if isinstance(module, torch.nn.ModuleList) else [module]
    return {layer.out_features for layer in layers}


@pytest.mark.model
@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_class_heads_are_reinitialised_for_the_dataset(model_type, tmp_path):
    """A checkpoint of 3 classes fine-tuned on 2: every classification layer has 2 outputs,
    layers that were tied stay one layer, and every other weight is the checkpoint's."""
    family = FAMILIES[model_type]
    torch.manual_seed(0)
    source, processor = load_model_and_processor(f"scratch:{model_type}", THREE)
    source.save_pretrained(tmp_path, safe_serialization=True)
    processor.save_pretrained(tmp_path)
    before = _heads(source, family.class_heads)
    tied = {
        (a, b)
        for a, ma in before.items()
        for b, mb in before.items()
        if a < b and {id(p) for p in ma.parameters()} == {id(p) for p in mb.parameters()}
    }

    model, _ = load_model_and_processor(str(tmp_path), TWO)

    heads = _heads(model, family.class_heads)
    assert sorted(heads) == sorted(before)
    assert {path: _out_features(m) for path, m in heads.items()} == {p: {2} for p in heads}
    for a, b in tied:  # e.g. RT-DETRv2's class_embed and model.decoder.class_embed
        assert heads[a] is heads[b], (a, b)
    kept = {k: v for k, v in source.state_dict().items() if not any(h in k for h in heads)}
    state = model.state_dict()
    assert kept and all(torch.equal(state[k], v) for k, v in kept.items())
    model.eval()
    with torch.no_grad():
        logits = model(pixel_values=torch.rand(1, 3, family.scratch_size, family.scratch_size))
    assert logits.logits.shape[-1] == 2


@pytest.mark.slow
# RT-DETR itself is fine-tuned and exported from its embedded warm start elsewhere
# (tests/test_train.py, tests/test_export.py). RT-DETRv2's small model, two steps from random
# init, ties its encoder scores at the query selection on every image (measured, seed 0):
# it verifies because export's reference breaks exact ties as ONNX TopK does.
@pytest.mark.parametrize("model_type", ["rt_detr_v2", "d_fine", "deimv2", "rf_detr", "lw_detr"])
def test_finetune_scratch_family(model_type, mini_dataset, tmp_path, one_torch_thread):
    """``python -m finetune --checkpoint scratch:FAMILY``: trains, evaluates, writes best/
    (a checkpoint of that family), metrics.json (with the family) and the pictures; the run
    then exports and verifies (ONNX Runtime and OpenVINO), the family in its metadata.

    The command's ``main`` in this process: a subprocess re-imported torch, transformers and
    torchmetrics, ~10 of each case's ~30 CPU-s (``python -m finetune`` itself runs in
    tests/test_distributed.py and tests/test_publish_faults.py)."""
    from transformers import AutoModelForObjectDetection

    from finetune.cli import main

    out = tmp_path / "run"
    code = main(
        ["--checkpoint", f"scratch:{model_type}", "--dataset", str(mini_dataset),
         "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "2",
         "--per_device_eval_batch_size", "4", "--logging_steps", "1"]
    )  # fmt: skip

    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model_type"] == model_type
    assert [e["step"] for e in metrics["epochs"]] == [2]
    assert metrics["epochs"][0]["train_loss"] > 0 and metrics["epochs"][0]["eval_loss"] > 0
    assert set(metrics["test"]) >= {"map", "map_50"}
    best = AutoModelForObjectDetection.from_pretrained(out / "best")
    assert type(best).__name__ == FAMILIES[model_type].model_class
    assert best.config.id2label == {0: "circle", 1: "square"}
    for picture in ("curves.png", "confusion_matrix.png", "predictions.png"):
        assert (out / picture).stat().st_size > 0

    # and the run exports: verified against PyTorch in ONNX Runtime and OpenVINO
    from export import export_checkpoint

    result = export_checkpoint(out, out / "model.onnx", threads=1)
    assert result.report.passed and result.metadata.extra["model_type"] == model_type
    sidecar = json.loads((out / "model.json").read_text())
    assert [r["passed"] for r in sidecar["verified"]["runtimes"]] == [True, True]
