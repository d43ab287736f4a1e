"""Run-folder writes: leftovers of killed writers are removed, ``best/`` is never absent."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune import runs
from finetune.runs import atomic_write_dir, atomic_write_json, remove_stale_temp

pytestmark = pytest.mark.unit


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _folder(path: Path, *files: str) -> Path:
    path.mkdir(parents=True)
    for name in files:
        (path / name).write_text("x")
    return path


def test_only_leftovers_of_dead_processes_are_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead, live = _dead_pid(), os.getpid()
    gone = [
        _folder(tmp_path / f".best.{dead}.abcd1234", "model.safetensors"),
        tmp_path / f".metrics.json.{dead}.efgh_678",
    ]
    gone[1].write_text("{")
    kept = [
        _folder(tmp_path / f".best.{live}.ijkl9012", "model.safetensors"),  # a write in progress
        tmp_path / f".metrics.json.{live}.mnop3456",
        tmp_path / ".gitignore",
        tmp_path / "notes.1.txt",
    ]
    for path in kept[1:]:
        path.write_text("x")
    # Written before the PID was in the name: removed once an hour old, kept while fresh.
    legacy_old = _folder(tmp_path / ".best.qrst7890", "config.json")
    os.utime(legacy_old, (time.time() - 7200, time.time() - 7200))
    kept.append(_folder(tmp_path / ".best.uvwx1234", "config.json"))
    # A fallback swap interrupted after the new best/ was in place.
    _folder(tmp_path / "best", "config.json")
    prev = _folder(tmp_path / "best.prev", "config.json")
    kept.append(tmp_path / "best")
    gone += [legacy_old, prev]

    with caplog.at_level(logging.INFO, logger="finetune"):
        removed = remove_stale_temp(tmp_path)
    assert sorted(removed) == sorted(gone)
    assert not any(p.exists() for p in gone)
    assert all(p.exists() for p in kept)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == len(gone)
    assert f"removing {gone[0]}, left by an interrupted write (process {dead} is gone)" in lines


def test_a_name_restricts_the_cleanup(tmp_path: Path) -> None:
    """The dataset cache: only the interrupted generations of that one dataset."""
    dead = _dead_pid()
    mine = _folder(tmp_path / f".shapes.{dead}.abcd1234", "x.jpg")
    other = _folder(tmp_path / f".pretrain.{dead}.abcd1234", "x.jpg")
    assert remove_stale_temp(tmp_path, "shapes") == [mine]
    assert other.exists()


def test_old_style_dataset_leftovers_are_removed_by_the_next_generation(tmp_path: Path) -> None:
    """``.shapes-<random>`` folders of killed generations of earlier versions (no PID in the
    name): removed by the next generation once an hour old; a fresh one may be in progress."""
    from finetune.synthetic import SyntheticSpec, generate_dataset

    old, fresh = (_folder(tmp_path / f".shapes-{tag}", "x.jpg") for tag in ("ab12cd34", "ef56gh78"))
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    other = _folder(tmp_path / ".pretrain-ab12cd34", "x.jpg")
    os.utime(other, (time.time() - 7200, time.time() - 7200))
    spec = SyntheticSpec("shapes", ("circle",), (48, 48), (2, 1, 1), max_objects=1, seed=1)

    generate_dataset(tmp_path / "shapes", spec)

    assert not old.exists() and fresh.exists() and other.exists()
    assert (tmp_path / "shapes" / "train" / "_annotations.coco.json").is_file()


def test_files_written_by_libraries_are_atomic_and_keep_their_suffix(tmp_path: Path) -> None:
    """``atomic_write_file``: the library sees a name with the final suffix (format by
    extension), a failure keeps the old file, and a killed writer's file is recognised."""
    from runtime.files import atomic_write_file

    target = tmp_path / "curves.png"
    target.write_bytes(b"old picture")
    seen: list[str] = []

    def fail(tmp: Path) -> None:
        seen.append(tmp.name)
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as caught:
        atomic_write_file(target, fail)
    assert caught.value.filename == str(target)  # named, though write() named no file
    assert target.read_bytes() == b"old picture"
    assert re.fullmatch(rf"\.curves\.png\.{os.getpid()}\.[a-z0-9_]{{8}}\.png", seen[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]

    atomic_write_file(target, lambda tmp: tmp.write_bytes(b"new picture"))
    assert target.read_bytes() == b"new picture"
    leftover = tmp_path / seen[0].replace(str(os.getpid()), str(_dead_pid()))
    leftover.write_bytes(b"half")
    assert remove_stale_temp(tmp_path) == [leftover]


def test_best_prev_is_kept_while_it_is_the_only_best(tmp_path: Path) -> None:
    prev = _folder(tmp_path / "best.prev", "config.json")
    assert remove_stale_temp(tmp_path) == []
    assert runs.best_checkpoint(tmp_path) == prev


def test_temporary_names_carry_the_writer_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources: list[str] = []
    real_replace = os.replace

    def replace(src, dst):  # type: ignore[no-untyped-def]
        sources.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(runs, "_exchange", lambda a, b: False)
    atomic_write_json(tmp_path / "metrics.json", {"a": 1})
    atomic_write_dir(tmp_path / "best", lambda tmp: (tmp / "config.json").write_text("{}"))
    pid = os.getpid()
    # files keep their suffix after the random part (format detection by extension)
    assert re.fullmatch(rf"\.metrics\.json\.{pid}\.[a-z0-9_]{{8}}\.json", sources[0])
    assert re.fullmatch(rf"\.best\.{pid}\.[a-z0-9_]{{8}}", sources[1])


def _swap_watching_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace a complete best/ and return the steps at which best/ was not complete."""
    best = _folder(tmp_path / "best", "config.json")
    gaps: list[str] = []

    def watch(name, real):  # type: ignore[no-untyped-def]
        def step(*args, **kwargs):  # type: ignore[no-untyped-def]
            result = real(*args, **kwargs)
            if not (best / "config.json").is_file():
                gaps.append(f"after {name}{args[:2]}")
            return result

        return step

    monkeypatch.setattr(os, "replace", watch("os.replace", os.replace))
    monkeypatch.setattr(runs.shutil, "rmtree", watch("rmtree", runs.shutil.rmtree))
    real_exchange = runs._exchange
    monkeypatch.setattr(runs, "_exchange", watch("exchange", real_exchange))

    def write(tmp: Path) -> None:
        (tmp / "config.json").write_text('{"version": "new"}')

    atomic_write_dir(best, write)
    assert (best / "config.json").read_text() == '{"version": "new"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # no temp, no best.prev
    return gaps


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_best_is_never_absent_during_its_swap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _swap_watching_best(tmp_path, monkeypatch) == []


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("config.json", b'{"model_type": "rt_de', "not complete JSON"),
        ("model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"w": {"dtype":', None),
    ],
)
def test_a_folder_written_incomplete_is_not_published(tmp_path: Path, name, data, problem):
    """What a library left short (it reported success) is read back before the swap: the
    old best/ stays, the error is the one-line full-disk kind (exit status 3)."""
    from runtime.files import IncompleteWriteError, cannot_write

    best = _folder(tmp_path / "best", "config.json")
    (best / "config.json").write_text('{"version": "old"}')

    def write(tmp: Path) -> None:
        (tmp / "config.json").write_text('{"version": "new"}')
        (tmp / name).write_bytes(data)

    with pytest.raises(IncompleteWriteError, match=problem or "shorter than its header") as info:
        atomic_write_dir(best, write)
    assert cannot_write(info.value) and name in str(info.value)
    assert json.loads((best / "config.json").read_text()) == {"version": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


def test_without_an_atomic_exchange_the_old_swap_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs, "_exchange", lambda a, b: False)
    gaps = _swap_watching_best(tmp_path, monkeypatch)
    assert len(gaps) == 1  # the instant between its two renames (best.prev covers it)


def test_a_killed_writer_leaves_the_old_best_and_its_leftover_is_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL a real process in the middle of writing best/."""
    best = _folder(tmp_path / "best", "config.json")
    (best / "config.json").write_text("old")
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from finetune.runs import atomic_write_dir\n"
        "def write(tmp):\n"
        "    (tmp / 'model.safetensors').write_bytes(b'x' * 1000)\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
        "atomic_write_dir(Path(sys.argv[1]) / 'best', write)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"writing\n"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(f".best.{child.pid}.")]
    assert len(leftovers) == 1
    assert (best / "config.json").read_text() == "old"
    with caplog.at_level(logging.INFO, logger="finetune"):
        assert remove_stale_temp(tmp_path) == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
