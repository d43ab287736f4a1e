"""Faults a real disk produces, in real processes: every file the toolkit publishes is
complete, or absent with a one-line exit-3 error, and nothing already written is lost.

A file-size limit (``RLIMIT_FSIZE``, :mod:`fault_factory`) fails a write the way a full disk
does, and catches what a monkeypatched ``ENOSPC`` cannot: a library that returns normally
after a short write. Measured (runtime/files.py): Pillow 13 publishes a JPEG under 64 KB
truncated at the limit and returns; OpenCV's video writer reports no error at all. So each
test runs the real command at several limits below and above the artefacts' sizes and checks
what is on disk by decoding it, against the state the limit must give (derived from the sizes
of an unlimited run).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from fault_factory import run_python
from PIL import Image
from runtime_fixtures import photo

KIB = 1024

# Annotated outputs in this order (names sorted): a mid-sized one, the largest, the smallest,
# so that a limit between them shows that annotation stops at the first failed write.
IMAGES = {
    "jpg": {"a.jpg": (480, 640), "b.jpg": (768, 1024), "c.jpg": (240, 320)},  # ~45/110/12 KB
    "png": {"a.png": (120, 160), "b.png": (240, 320), "c.png": (60, 80)},  # ~34/136/8 KB
}
IMAGE_LIMITS_KIB = (4, 16, 40, 64, 100, 4096)
VIDEO_FRAMES = 40
VIDEO_LIMITS_KIB = (16, 64, 4096)  # annotated mp4 ~200 KB, detections.json ~45 KB


@pytest.fixture(scope="session")
def onnx_model(tiny_onnx: Path) -> Path:
    return tiny_onnx


def _detect(
    model: Path, source: Path, output: Path, limit: int | None
) -> subprocess.CompletedProcess:
    return run_python(
        ["-m", "runtime", str(model), str(source), "--output", str(output),
         "--providers", "cpu", "--threads", "1", "--threshold", "0.0"],
        limit=limit, timeout=300,
    )  # fmt: skip


def _one_error_line(done: subprocess.CompletedProcess, output: Path) -> None:
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert f"cannot write in {output}:" in line and "free disk space (exit status 3)" in line


def _no_temporary_files(output: Path) -> None:
    assert [p.name for p in output.iterdir() if p.name.startswith(".")] == []


@pytest.fixture(scope="module", params=sorted(IMAGES))
def photos(request: pytest.FixtureRequest, onnx_model: Path, tmp_path_factory) -> tuple:
    """Input folder of one format, and the annotated sizes an unlimited run gives."""
    kind = request.param
    folder = tmp_path_factory.mktemp(f"photos-{kind}")
    source = folder / "in"
    source.mkdir()
    for seed, (name, shape) in enumerate(IMAGES[kind].items()):
        Image.fromarray(photo(*shape, seed=seed)).save(source / name)
    done = _detect(onnx_model, source, folder / "reference", None)
    assert done.returncode == 0, done.stderr[-3000:]
    sizes = {p.name: p.stat().st_size for p in (folder / "reference").iterdir()}
    return kind, source, sizes


@pytest.mark.slow
@pytest.mark.parametrize("limit_kib", IMAGE_LIMITS_KIB)
def test_annotated_images_are_complete_or_absent(onnx_model, photos, tmp_path, limit_kib):
    kind, source, sizes = photos
    limit = limit_kib * KIB
    output = tmp_path / "out"
    names = sorted(IMAGES[kind])
    # annotation stops at the first image whose file does not fit
    fits = [sizes[n] <= limit for n in names]
    first_failure = fits.index(False) if False in fits else len(names)
    expected_images = set(names[:first_failure])

    done = _detect(onnx_model, source, output, limit)

    published = {p.name for p in output.iterdir()} if output.exists() else set()
    assert published & set(names) == expected_images, (limit, sizes)
    for name in expected_images:  # decoded whole, not only a header
        with Image.open(output / name) as image:
            image.load()
            assert image.size == Image.open(source / name).size
    _no_temporary_files(output)
    if first_failure == len(names) and sizes["detections.json"] <= limit:
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads((output / "detections.json").read_text())["errors"] == []
        return
    assert done.returncode == 3, done.stderr[-3000:]
    _one_error_line(done, output)
    if "detections.json" in published:  # the detections of every image are still written
        report = json.loads((output / "detections.json").read_text())
        assert [Path(r["file"]).name for r in report["results"]] == names
        (error,) = report["errors"]
        assert error["file"] == str(output / names[first_failure])
        assert "annotated output not written" in error["error"]
    else:  # it did not fit (it is a little longer than the reference's: one error more)
        assert limit < sizes["detections.json"] + 4 * KIB


@pytest.fixture(scope="module")
def video(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    import cv2

    folder = tmp_path_factory.mktemp("video")
    clip = folder / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for i in range(VIDEO_FRAMES):
        writer.write(photo(120, 160, seed=i)[:, :, ::-1].copy())
    writer.release()
    done = _detect(onnx_model, clip, folder / "reference", None)
    assert done.returncode == 0, done.stderr[-3000:]
    return clip, {p.name: p.stat().st_size for p in (folder / "reference").iterdir()}


def _readable_frames(path: Path) -> int:
    import cv2

    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


@pytest.mark.slow
@pytest.mark.parametrize("limit_kib", VIDEO_LIMITS_KIB)
def test_annotated_video_is_complete_or_absent(onnx_model, video, tmp_path, limit_kib):
    """A video whose writer cannot finish is not published; the frames' detections are."""
    clip, sizes = video
    limit = limit_kib * KIB
    output = tmp_path / "out"

    done = _detect(onnx_model, clip, output, limit)

    _no_temporary_files(output)
    published = {p.name for p in output.iterdir()}
    video_fits = sizes["clip.mp4"] <= limit
    assert ("clip.mp4" in published) == video_fits
    if video_fits:
        assert _readable_frames(output / "clip.mp4") == VIDEO_FRAMES
    if video_fits and sizes["detections.json"] <= limit:
        assert done.returncode == 0, done.stderr[-3000:]
        return
    assert done.returncode == 3, done.stderr[-3000:]
    _one_error_line(done, output)
    if "detections.json" not in published:  # it did not fit either
        assert limit < sizes["detections.json"] + 4 * KIB
    else:
        report = json.loads((output / "detections.json").read_text())
        assert [r["frame"] for r in report["results"]] == list(range(VIDEO_FRAMES))
        (error,) = report["errors"]
        assert error["file"] == str(output / "clip.mp4")
        assert f"{VIDEO_FRAMES} frames can be read back" in error["error"]


@pytest.mark.unit
def test_publish_checks_the_size_of_what_reached_the_disk(tmp_path):
    """A writer that 'succeeds' with a short file (as Pillow's JPEG writer does) is caught."""
    from runtime.files import IncompleteWriteError, atomic_path, cannot_write

    def short(tmp: Path) -> None:
        tmp.write_bytes(b"12")

    def check(tmp: Path) -> None:
        if tmp.stat().st_size != 4:
            raise IncompleteWriteError(tmp, f"{tmp.stat().st_size} of 4 bytes")

    (tmp_path / "x.bin").write_bytes(b"old!")
    with (
        pytest.raises(IncompleteWriteError, match="2 of 4 bytes") as caught,
        atomic_path(tmp_path / "x.bin", check) as tmp,
    ):
        short(tmp)
    assert cannot_write(caught.value)  # reported as a full disk: exit status 3
    assert (tmp_path / "x.bin").read_bytes() == b"old!"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


@pytest.mark.unit
def test_first_line_of_an_empty_or_blank_message():
    from runtime.errors import first_line

    assert first_line(ValueError("")) == "ValueError"
    assert first_line(ValueError("\n\n  second\nthird")) == "second"
    assert first_line(OSError("disk"), with_type=True) == "OSError: disk"
    assert first_line(RuntimeError(), with_type=True) == "RuntimeError"


@pytest.mark.slow
@pytest.mark.parametrize(
    "limit_kib",
    [
        64,  # the weights (1.1 MB) of the first checkpoint cannot be written
        1536,  # the weights can, the Trainer's optimizer.pt (2.4 MB) cannot
    ],
)
def test_finetune_on_a_full_disk_publishes_nothing_incomplete(
    mini_dataset, tiny_checkpoint, tmp_path, limit_kib
):
    """Exit 3 and one line naming the run folder (torch's zip writer reports a short write at
    its end as 'unexpected pos': that was a traceback); every JSON and safetensors file left
    in the run folder is complete, and an interrupted checkpoint is one a resume refuses.
    (The one full-disk test of ``python -m finetune``: test_train.py had a copy of the 64 KiB
    case, ~15 CPU-s, merged here.)"""
    from run_factory import tiny_run_argv

    from finetune.runs import _safetensors_truncated, checkpoint_problems

    out = tmp_path / "exp"
    argv = tiny_run_argv(
        mini_dataset, tiny_checkpoint, out, max_steps=2, extra=["--save_steps", "1"]
    )
    done = run_python(["-m", "finetune", *argv], limit=limit_kib * KIB)

    assert done.returncode == 3, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert f"cannot write in {out}" in line and "free disk space" in line
    if limit_kib == 64:  # and it says what is left to resume from
        assert "no complete checkpoint was saved yet" in line
    published = [p for p in out.rglob("*") if ".checkpoint" not in str(p) and p.is_file()]
    for path in published:  # best/, metrics.json, pictures: complete where present
        if path.suffix == ".json" and not path.parent.name.startswith("checkpoint-"):
            json.loads(path.read_text())
        if path.parent.name == "best" and path.suffix == ".safetensors":
            assert not _safetensors_truncated(path), path
        if path.suffix == ".png":
            Image.open(path).load()
    # the optimizer state (2.4 MB) never fits: every Trainer checkpoint is interrupted, and
    # each must be one that a resume refuses
    for checkpoint in out.glob("checkpoint-*"):
        assert checkpoint_problems(checkpoint), f"{checkpoint} is incomplete but looks complete"
