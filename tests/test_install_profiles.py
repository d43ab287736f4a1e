"""The runtime-only install: ``pip install .`` into a fresh virtualenv, nothing of training.

A fresh venv gets the checkout as a user installs it (not editable), then pytest. The export
folder (model, variants, sidecars, images, PyTorch's detections) is made here with the full
stack; ``test_runtime_installed.py`` and ``python -m runtime`` then run inside the venv, and
the training commands must answer with the extra to install, not a traceback.
Needs PyPI (or the installer's cache) for numpy, Pillow and onnxruntime.

The installer is uv where it is installed (``.ci/run`` installs it), else pip: both resolve
the same ``pyproject.toml``, and what this file asserts is what that resolution brings. uv
built the venv in 3 CPU-s where pip took 20 (venv with pip 5.3, ``pip install .`` 12.3,
pytest ~3; Intel Xeon Emerald Rapids, idle, warm caches): pip builds the wheel in an isolated
environment of its own and byte-compiles every installed module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

# The minimal CPU profile must stay small (issue target: <= 250 MB of site-packages).
MAX_RUNTIME_MB = 250
TRAINING_STACK = {
    "torch", "torchvision", "transformers", "triton", "accelerate", "onnx", "albumentations",
    "torchmetrics", "supervision", "opencv-python-headless",
}  # fmt: skip
# pytest -q's last line when the 8 tests of test_runtime_installed.py all pass (warnings may
# be counted, nothing else: no skip, no deselection, no xfail)
SUMMARY_8_PASSED = re.compile(r"8 passed(, \d+ warnings?)? in \d+\.\d+s( \(\d+:\d\d:\d\d\))?")


def _run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs
    )


def _site_packages_mb(python: Path) -> float:
    """Installed files in MB, bytecode caches left out (pip writes them, uv does not)."""
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(_run(python, "-c", code).stdout.strip())
    files = [p for p in purelib.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_size for p in files if "__pycache__" not in p.parts) / 2**20


def _uv() -> str | None:
    """uv beside this Python (a venv's bin/) or on PATH, else None."""
    beside = Path(sys.executable).with_name("uv")
    return str(beside) if beside.exists() else shutil.which("uv")


class _Installer:
    """``pip`` or ``uv pip`` into the venv at ``folder`` (:func:`_uv` decides)."""

    def __init__(self, folder: Path) -> None:
        self.uv, self.python = _uv(), folder / "bin" / "python"
        made = _run(*([self.uv, "venv", "-q", "--python", sys.executable] if self.uv
                      else [sys.executable, "-m", "venv"]), folder)  # fmt: skip
        assert made.returncode == 0, made.stderr

    def pip(self, *args: str | Path) -> subprocess.CompletedProcess:
        if self.uv:
            return _run(self.uv, "pip", args[0], "--python", self.python, *args[1:])
        return _run(self.python, "-m", "pip", *args, "--disable-pip-version-check")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A fresh venv with ``pip install .`` (size measured before pytest is added)."""
    installer = _Installer(tmp_path_factory.mktemp("runtime-venv") / "venv")
    done = installer.pip("install", "--quiet", ROOT)
    assert done.returncode == 0, f"pip install . failed:\n{done.stderr[-3000:]}"
    size = _site_packages_mb(installer.python)
    done = installer.pip("install", "--quiet", "pytest")
    assert done.returncode == 0, done.stderr[-3000:]
    return {"python": installer.python, "site_packages_mb": size, "installer": installer}


@pytest.mark.slow
def test_runtime_only_install_has_no_training_stack(venv):
    listed = venv["installer"].pip("list", "--format", "json")
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"rtdetr-deploy", "onnxruntime", "numpy", "pillow"} <= names
    assert not names & TRAINING_STACK, names & TRAINING_STACK
    assert not [n for n in names if n.startswith(("nvidia-", "cuda-"))]
    assert venv["site_packages_mb"] <= MAX_RUNTIME_MB, venv["site_packages_mb"]
    # the installed package is what runs (not this checkout), and torch cannot be imported
    code = (
        "import importlib.util, runtime; print(runtime.__file__); "
        "print([m for m in ('torch', 'transformers', 'torchvision') "
        "if importlib.util.find_spec(m)])"
    )
    done = _run(venv["python"], "-c", code, cwd=venv["python"].parents[1])
    where, importable = done.stdout.split("\n")[:2]
    assert "site-packages" in where and importable == "[]", done.stdout + done.stderr


@pytest.mark.slow
def test_runtime_tests_pass_in_the_runtime_only_install(venv, runtime_export, tmp_path):
    """test_runtime_installed.py, run by the venv's own pytest against the installed package."""
    env = {**os.environ, "RTDETR_DEPLOY_TEST_EXPORT": str(runtime_export)}
    env.pop("PYTHONPATH", None)
    done = _run(
        venv["python"], "-m", "pytest", TESTS / "test_runtime_installed.py",
        "-p", "no:cacheprovider", "-q", "-rs", "--rootdir", TESTS, "-c", os.devnull,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    # the whole line: "18 passed", "8 passed, 1 skipped" or "8 passed, 2 deselected" fail
    assert SUMMARY_8_PASSED.fullmatch(summary), summary


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "extra"),
    [
        (["-m", "finetune"], "train"),
        (["-m", "finetune", "--help"], "train"),
        (["-m", "finetune.warmstart"], "train"),
        (["-m", "export", "--opset", "17"], "export"),
        (["-m", "pytest", "bench/", "--benchmark-only"], "bench"),
    ],
)
def test_training_commands_name_the_extra(venv, command, extra):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = _run(venv["python"], *command, cwd=ROOT, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert f"needs the [{extra}] extra" in output and f"rtdetr-deploy[{extra}]" in output
    assert "Traceback" not in output


@pytest.mark.slow
def test_serve_is_installed_and_names_its_extra(venv, tmp_path):
    """``runtime.serve`` ships in the wheel (run outside the checkout, so the installed copy is
    the one imported) and, without kserve, answers with the [serve] extra to install."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = _run(venv["python"], "-m", "runtime.serve", "model.onnx", cwd=tmp_path, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "needs the [serve] extra" in output and "rtdetr-deploy[serve]" in output, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output
