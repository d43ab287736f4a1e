"""A killed or starved export never leaves a report or sidecar that describes another file.

Real processes, real signals, real write limits: ``SIGKILL`` at every step of publishing (the
documents written, the old ones removed, each rename), during verification and right after
the model's rename in a real ``python -m export``; a file-size limit below the model's size.
After each, every ``model*.json`` beside a model names that model's SHA-256, and a model is
the old one or the new one, whole.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from pathlib import Path

import pytest
from fault_factory import run_python

# Kill a process at the N-th call of a function, before or after it runs, then run `code`.
_KILLER = """
import os, signal, sys
def kill_at(module, name, n, after):
    real, calls = getattr(module, name), [0]
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args, **kwargs)
        if calls[0] == n and after:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    setattr(module, name, wrapper)
"""

# publish() on a folder that holds an old model, its documents and a stale variant.
_PUBLISH = (
    _KILLER
    + """
import hashlib, json, runtime.files
from pathlib import Path
import export.files as files
folder, target, n, after = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
kill_at({"os": os, "stage": files}[target], {"os": "replace", "stage": "stage_bytes"}[target],
        n, after)
final = folder / "model.onnx"
staged = files.staging_path(final)
staged.write_bytes(b"new model")
sha = hashlib.sha256(b"new model").hexdigest()
documents = {
    folder / "model.json": json.dumps({"model": {"sha256": sha}}).encode(),
    folder / "model.verify.json": json.dumps({"sha256": sha}).encode(),
}
files.publish(staged, final, documents, stale=[folder / "model.slim.onnx",
                                               folder / "model.slim.json"])
"""
)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _described(document: Path) -> str:
    """The SHA-256 a sidecar (``model.sha256``) or a report (``sha256``) says it describes."""
    data = json.loads(document.read_text())
    return data["sha256"] if "sha256" in data else data["model"]["sha256"]


def assert_consistent(folder: Path) -> None:
    """Every sidecar and report describes the model file beside it."""
    for model in folder.glob("*.onnx"):
        for document in (model.with_suffix(".json"), model.with_name(f"{model.stem}.verify.json")):
            if document.exists():
                assert _described(document) == _sha(model), (
                    f"{document.name} describes another file"
                )
    for document in (p for p in folder.glob("*.json") if not p.name.startswith(".")):
        stem = document.name.removesuffix(".json").removesuffix(".verify")
        if not stem.endswith(".failed"):
            assert (folder / f"{stem}.onnx").exists(), f"{document.name} beside no model"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("target", "call", "after"),
    [("stage", 1, True), ("stage", 2, True)]
    + [("os", n, after) for n in (1, 2, 3) for after in (False, True)],
)
def test_sigkill_at_each_step_of_publishing(tmp_path, target, call, after):
    folder = tmp_path / "export"
    folder.mkdir()
    old = folder / "model.onnx"
    old.write_bytes(b"old model")
    for name, data in (
        ("model.json", {"model": {"sha256": _sha(old)}}),
        ("model.verify.json", {"sha256": _sha(old)}),
    ):
        (folder / name).write_text(json.dumps(data))
    (folder / "model.slim.onnx").write_bytes(b"old variant")
    (folder / "model.slim.json").write_text(
        json.dumps({"model": {"sha256": _sha(folder / "model.slim.onnx")}})
    )

    done = run_python(
        ["-c", _PUBLISH, str(folder), target, str(call), "1" if after else "0"], timeout=60
    )

    assert done.returncode == -signal.SIGKILL, done.stderr
    model = old.read_bytes()
    assert model in (b"old model", b"new model")
    assert_consistent(folder)
    if model == b"new model":  # what was built from the old model went before it
        assert not (folder / "model.slim.onnx").exists()
    from finetune.runs import remove_stale_temp

    remove_stale_temp(folder)  # what the next export does first: the killed writer's files go
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


# --- a real export ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def first_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified export with a variant: the 'old' files a new export replaces."""
    from export import export_checkpoint

    folder = tmp_path_factory.mktemp("first")
    result = export_checkpoint(
        tiny_checkpoint, folder / "model.onnx", variants=["slim"], threads=1, max_images=2
    )
    assert [v.passed for v in result.variants] == [True]
    assert json.loads((folder / "model.verify.json").read_text())["sha256"] == _sha(result.path)
    return folder


def _export_again(checkpoint: Path, folder: Path, code: str, limit: int | None = None):
    """``python -m export`` into ``folder`` with another K (a different file), under ``code``
    (verified on 2 images: what is checked here is what is left on disk, not parity)."""
    script = code + "\nfrom export.cli import main\nraise SystemExit(main(sys.argv[1:]))"
    return run_python(
        ["-c", script, "--checkpoint", str(checkpoint), "--output", str(folder / "model.onnx"),
         "--num-top-queries", "10", "--threads", "1", "--max-images", "2"],
        limit=limit,
    )  # fmt: skip


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


@pytest.mark.slow
def test_export_killed_while_verifying_keeps_the_old_files(first_export, tiny_checkpoint, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(first_export, folder)
    before = _snapshot(folder)
    code = _KILLER + "import export.verify\nkill_at(export.verify, 'verify_onnx', 1, False)"

    done = _export_again(tiny_checkpoint, folder, code)

    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert _snapshot(folder) == before
    assert_consistent(folder)


@pytest.mark.slow
def test_export_killed_after_the_model_rename(first_export, tiny_checkpoint, tmp_path):
    """The new model is in place; the old report, sidecar and variant are not beside it."""
    folder = tmp_path / "export"
    shutil.copytree(first_export, folder)
    old = _sha(folder / "model.onnx")
    code = _KILLER + (
        "import export.files\n"
        "real_publish = export.files.publish\n"
        "def publish(*args, **kwargs):\n"
        "    kill_at(os, 'replace', 1, True)  # the first rename of publishing: the model's\n"
        "    return real_publish(*args, **kwargs)\n"
        "export.files.publish = publish"
    )

    done = _export_again(tiny_checkpoint, folder, code)

    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert _sha(folder / "model.onnx") != old
    assert_consistent(folder)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["model.onnx"]


@pytest.mark.slow
def test_export_on_a_full_disk_is_one_line_exit_3_and_keeps_the_old_files(
    first_export, tiny_checkpoint, tmp_path
):
    """A real failing write (the 1.4 MB model cannot be written, the JSON files could)."""
    folder = tmp_path / "export"
    shutil.copytree(first_export, folder)
    before = _snapshot(folder)

    done = _export_again(tiny_checkpoint, folder, "import sys", limit=512 * 1024)

    assert done.returncode == 3, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert f"{folder / 'model.onnx'}: cannot write the export" in line
    assert "the existing model.onnx was not replaced" in line
    assert _snapshot(folder) == before
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
