"""Shared fixtures. Dataset builders live in ``dataset_factory.py`` as plain functions.

Imports here stay torch- and yaml-free: ``test_runtime_installed.py`` runs in a runtime-only
install too (``test_install_profiles.py``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ["xdist_order"]  # longest test files first under pytest-xdist

# pytest-xdist (``-n 2``: one worker per core): one OpenMP thread per worker and per process it
# starts, set before anything imports torch. Each worker's PyTorch otherwise ran one thread per
# core, 2 workers x 2 threads on 2 cores, its OpenMP threads spinning while they wait: measured
# on test_resume, test_reproducible and test_train (25 tests, -n 2, Intel Xeon Emerald Rapids,
# load ~4-5) 88-122 CPU-s and 63-122 s without, 42-43 CPU-s and 26-48 s with. A value the
# caller set is kept; a plain ``pytest`` (one process) keeps every core.
if os.environ.get("PYTEST_XDIST_WORKER") is not None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


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


def once_per_run(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]
) -> Path:
    """``build(folder)``'s result, built once per test run, not once per pytest-xdist worker:
    the first worker to ask builds it in the run's shared temporary folder under a file lock,
    the other reads it (pytest-xdist's documented pattern); without xdist, in this process's
    folder. What it returns is read-only: copy it to change it."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build(tmp_path_factory.mktemp(name))
    import fcntl  # xdist runs here are POSIX (CI); a plain run above needs no lock

    folder = tmp_path_factory.getbasetemp().parent / name  # pytest-N/, shared by gw0, gw1
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = folder.with_name(f"{name}.built")
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            done.write_text(str(build(folder).relative_to(folder)))
        return folder / done.read_text()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny RT-DETR checkpoint folder (config.json, safetensors, processor)."""
    from model_factory import write_tiny_checkpoint  # torch: imported only when needed

    return once_per_run(tmp_path_factory, "tiny", lambda f: write_tiny_checkpoint(f / "checkpoint"))


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_checkpoint`` exported without verification (its tests compare with transformers
    or ``Detector`` themselves), once per test run. Read-only: copy it to change it."""
    from export import export_checkpoint

    def build(folder: Path) -> Path:
        return Path(export_checkpoint(tiny_checkpoint, folder / "model.onnx", verify=False).path)

    return once_per_run(tmp_path_factory, "tiny-onnx", build)


@pytest.fixture(scope="session")
def runtime_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder that test_runtime_installed.py checks (``installed_fixtures``): built once
    per test run for it and test_install_profiles.py (~10 CPU-s each). Read-only."""
    from installed_fixtures import write_runtime_fixture

    def build(folder: Path) -> Path:
        return write_runtime_fixture(folder / "export", tiny_checkpoint)

    return once_per_run(tmp_path_factory, "runtime-export", build)


@pytest.fixture(scope="module")
def one_torch_thread():
    """The test machine is shared: one PyTorch thread for a module (ONNX Runtime sessions in
    the tests ask for one thread themselves)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _picture_not_drawn(*args: object, **kwargs: object) -> Path:
    return next(a for a in args if isinstance(a, Path))  # each plot_* takes its path as one


@pytest.fixture(scope="module")
def no_pictures():
    """A module's training runs skip drawing their three pictures (matplotlib), as the
    module's tests do not look at them: tests/test_train.py and tests/test_families.py do,
    and tests/test_distributed.py draws them for a resumed run."""
    import finetune.report as report

    with pytest.MonkeyPatch.context() as patch:
        for name in ("plot_curves", "plot_confusion_matrix", "plot_predictions"):
            patch.setattr(report, name, _picture_not_drawn)
        yield
