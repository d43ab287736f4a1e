"""Shared fixtures. Dataset builders live in ``dataset_factory.py`` as plain functions.

Imports here stay torch- and yaml-free: ``test_runtime_installed.py`` runs in a runtime-only
install too (``test_install_profiles.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def roboflow_coco(tmp_path: Path) -> Path:
    """A Roboflow COCO export with classes cat/dog and 3 images in each of train/valid/test."""
    from dataset_factory import write_roboflow_coco  # yaml: not in a runtime-only install

    return write_roboflow_coco(tmp_path / "pets")


@pytest.fixture(scope="module")
def mini_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated 2-class dataset of the tiny training runs (``run_factory.MINI_SPEC``)."""
    from run_factory import MINI_SPEC

    from finetune.synthetic import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("data") / "mini", MINI_SPEC)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny RT-DETR checkpoint folder (config.json, safetensors, processor)."""
    from model_factory import write_tiny_checkpoint  # torch: imported only when needed

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoint")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_checkpoint`` exported without verification (its tests compare with transformers
    or ``Detector`` themselves), once per test process. Read-only: copy it to change it."""
    from export import export_checkpoint

    output = tmp_path_factory.mktemp("tiny-onnx") / "model.onnx"
    return Path(export_checkpoint(tiny_checkpoint, output, verify=False).path)


@pytest.fixture(scope="module")
def one_torch_thread():
    """The test machine is shared: one PyTorch thread for a module (ONNX Runtime sessions in
    the tests ask for one thread themselves)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
