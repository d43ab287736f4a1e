"""``python -m runtime MODEL SOURCE``: detect objects in an image, a folder or a video.

Writes ``detections.json`` (per image or frame: boxes xyxy in pixels, scores, class ids and
names) and, where supervision is installed (the ``[supervision]`` extra), annotated images
(same file names) or an annotated ``<name>.mp4``; then prints the measured FPS.

A folder run reports each image that cannot be read, keeps going, and still writes everything
else (the failures are listed under ``errors`` in ``detections.json``; exit status 1). Errors
that stop the run before any work (missing or non-ONNX model, model without metadata, no
images, unreadable video, unusable provider with ``--strict``, a video without supervision)
print one line and exit 2; a full disk or an unwritable output folder prints one line and
exits 3. A video that cannot be decoded to its end keeps the frames before the damage
(the rest are listed under ``errors``; exit status 1). ``detections.json``, annotated images
and the annotated video are written atomically (a temporary name, then a rename) and checked
to be complete first: images are encoded in memory and their size checked on disk, the video
is read back frame count and last frame. When an annotated file cannot be written (disk full),
annotation stops, no partial file is published, the detections of every image or frame are
still written to ``detections.json`` (the failure under ``errors``), and the run exits 3.

Example:
    python -m runtime runs/exp/model.onnx photos/ --output runs/detect/photos --threshold 0.4
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from runtime.detections import RawDetections
from runtime.detector import Detector
from runtime.errors import ImageError, ProviderError, ProviderWarning
from runtime.extras import MissingExtraError, import_supervision
from runtime.files import (
    EXIT_CANNOT_WRITE,
    IncompleteWriteError,
    atomic_path,
    atomic_write_encoded,
    atomic_write_text,
    cannot_write,
    cannot_write_message,
)
from runtime.images import to_rgb_array

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "main"]

logger = logging.getLogger("runtime")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtime",
        description="Run an exported RT-DETR ONNX model on an image, a folder or a video.",
    )
    parser.add_argument("model", type=Path, help="the .onnx file written by `python -m export`")
    parser.add_argument("source", type=Path, help="an image, a folder of images or a video")
    parser.add_argument(
        "--output", type=Path, default=None, help="output folder (default: runs/detect/<source>)"
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="minimum score (0.5)")
    parser.add_argument(
        "--providers",
        nargs="+",
        default=None,
        help="execution providers in preference order, e.g. cuda cpu (default: tensorrt cuda cpu)",
    )
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument(
        "--strict", action="store_true", help="fail when a requested provider is not in use"
    )
    return parser


@dataclass
class _Timer:
    """Wall time of the detector calls alone (decode + preprocess + model + threshold)."""

    seconds: float = 0.0
    count: int = 0

    def detect(
        self, detector: Detector, image: np.ndarray, threshold: float, bgr: bool
    ) -> RawDetections:
        start = time.perf_counter()
        raw = detector.predict([image], threshold, bgr=bgr)[0]
        self.seconds += time.perf_counter() - start
        self.count += 1
        return raw


class _Annotator:
    """supervision's box and label annotators, made once (importing supervision takes ~0.5 s).

    Without supervision (a runtime-only install) nothing is drawn: ``enabled`` is false.
    """

    def __init__(self) -> None:
        try:
            sv = import_supervision("drawing annotated images")
        except MissingExtraError as exc:
            self.enabled, self.reason = False, str(exc)
            return
        self.enabled, self.reason = True, ""
        self.boxes = sv.BoxAnnotator()
        self.labels = sv.LabelAnnotator()

    def __call__(self, scene: np.ndarray, raw: RawDetections) -> np.ndarray:
        detections = raw.to_supervision()
        labels = [f"{n} {s:.2f}" for n, s in zip(raw.class_name, raw.confidence, strict=True)]
        scene = self.boxes.annotate(scene.copy(), detections)
        return self.labels.annotate(scene, detections, labels=labels)


def _list_images(folder: Path) -> list[Path]:
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ImageError(f"{folder}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
    return images


@dataclass
class _Run:
    """One CLI run's settings and what went wrong so far.

    ``errors`` lists the inputs that could not be read and the outputs that could not be
    written; ``write_error`` is the first failed write of an annotated file (disk full, no
    permission): annotation stops there, detection goes on, ``detections.json`` is still
    written, and the run exits 3.
    """

    detector: Detector
    output: Path
    threshold: float
    timer: _Timer
    annotate: _Annotator
    errors: list[dict[str, str]] = field(default_factory=list)
    write_error: OSError | None = None

    def unreadable(self, path: Path, message: str) -> None:
        logger.error("%s", message)
        self.errors.append({"file": str(path), "error": message})

    def unwritable(self, path: Path, exc: OSError) -> None:
        """Record a failed write of the annotated ``path`` and stop annotating."""
        if not cannot_write(exc):
            raise exc
        self.write_error = self.write_error or exc
        self.annotate.enabled = False
        self.unreadable(path, f"annotated output not written: {cannot_write_message(exc)}")


def _save_image(image: Image.Image, path: Path) -> None:
    """Encode in memory, then publish with a size check (Pillow's JPEG writer returns
    normally after a short write: see runtime.files)."""
    fmt = Image.registered_extensions()[path.suffix.lower()]
    atomic_write_encoded(path, lambda buffer: image.save(buffer, format=fmt))


def _check_video(path: Path, expected: int) -> None:
    """Read the written video back: all ``expected`` frames announced and the last one
    decodable. OpenCV's writer reports no write error; a truncated mp4 has no index."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        last = frames == expected and capture.set(cv2.CAP_PROP_POS_FRAMES, expected - 1)
        readable = frames if last and capture.read()[0] else 0
    finally:
        capture.release()
    if readable != expected:
        raise IncompleteWriteError(path, f"{readable} of {expected} frames can be read back")


def _run_images(run: _Run, paths: list[Path]) -> Iterator[dict[str, Any]]:
    """Detect in each image; an unreadable one is logged, added to ``errors`` and skipped."""
    from tqdm import tqdm

    for path in tqdm(paths, desc="images", unit="img", disable=len(paths) < 2):
        try:
            rgb = to_rgb_array(path)
        except ImageError as exc:
            run.unreadable(path, str(exc))
            continue
        raw = run.timer.detect(run.detector, rgb, run.threshold, bgr=False)
        if run.annotate.enabled:
            target = run.output / path.name
            try:
                _save_image(Image.fromarray(run.annotate(rgb, raw)), target)
            except OSError as exc:
                run.unwritable(target, exc)
        yield {"file": str(path), **raw.to_dict()}


def _run_video(run: _Run, path: Path) -> Iterator[dict[str, Any]]:
    """Detect in each frame; the annotated video is read back, then published (atomic).

    OpenCV stops at the first frame it cannot decode (a truncated or damaged file): the frames
    before it are kept and written, and the missing ones are added to ``errors``. A video that
    cannot be written completely is not published; the frames' detections still are.
    """
    from tqdm import tqdm

    sv = import_supervision("a video run")
    try:
        info = sv.VideoInfo.from_video_path(str(path))
    except Exception as exc:  # supervision raises a bare Exception for an unreadable video
        raise ImageError(f"{path}: cannot open video ({exc})") from None
    frames = sv.get_video_frames_generator(str(path))
    target = run.output / f"{path.stem}.mp4"
    count = 0
    try:
        with (
            atomic_path(target, check=lambda tmp: _check_video(tmp, count)) as tmp,
            sv.VideoSink(str(tmp), info) as sink,
        ):
            for frame in tqdm(frames, desc="frames", total=info.total_frames):
                raw = run.timer.detect(run.detector, frame, run.threshold, bgr=True)
                sink.write_frame(run.annotate(frame, raw))
                yield {"frame": count, **raw.to_dict()}
                count += 1
    except OSError as exc:
        run.unwritable(target, exc)
    expected = info.total_frames or 0
    if count < expected:
        run.unreadable(
            path,
            f"{path}: frames {count} to {expected - 1} could not be decoded "
            f"(the container announces {expected}; the file is truncated or damaged)",
        )
    elif count == 0:
        run.unreadable(path, f"{path}: no frame could be decoded")


def _write_report(path: Path, report: dict[str, Any]) -> None:
    """JSON with one line per image or frame (readable, diffable, still one document)."""
    header = {k: v for k, v in report.items() if k != "results"}
    lines = [json.dumps(header, indent=1)[:-2] + ',\n "results": [']
    lines.append(",\n".join("  " + json.dumps(result) for result in report["results"]))
    lines.append(" ]\n}\n")
    atomic_write_text(path, "\n".join(lines))


def run(args: argparse.Namespace) -> int:
    """Run the CLI for parsed arguments; raises the runtime's errors (see :func:`main`)."""
    source: Path = args.source
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such image, folder or video")
    detector = Detector(
        args.model, providers=args.providers, threads=args.threads, strict=args.strict
    )
    output: Path = args.output or Path("runs") / "detect" / source.stem
    folder = source if source.is_dir() else source.parent
    if output.resolve() == folder.resolve():
        raise ValueError(f"{output}: choose another --output, this would overwrite {source}")
    output.mkdir(parents=True, exist_ok=True)
    run = _Run(detector, output, args.threshold, _Timer(), _Annotator())
    is_video = source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES
    paths = [] if is_video else _list_images(source) if source.is_dir() else [source]
    if not run.annotate.enabled:
        logger.info("detections.json only, no annotated output: %s", run.annotate.reason)
    start = time.perf_counter()
    if is_video:
        results, unit = list(_run_video(run, source)), "frames"
    else:
        results, unit = list(_run_images(run, paths)), "images"
        if run.errors and not source.is_dir() and run.write_error is None:
            raise ImageError(run.errors[0]["error"])  # one image given, and it is unreadable
    elapsed = time.perf_counter() - start
    report = {
        "model": str(args.model),
        "source": str(source),
        "providers": detector.providers,
        "threshold": args.threshold,
        "class_names": detector.class_names,
        "errors": run.errors,
        "results": results,
    }
    _write_report(output / "detections.json", report)
    count, timer = len(results), run.timer
    print(
        f"{count} {unit}, {sum(len(r['scores']) for r in results)} detections -> {output}\n"
        f"{count / elapsed:.1f} FPS end to end (read, detect, annotate, write); "
        f"{timer.count / max(timer.seconds, 1e-9):.1f} FPS detector alone "
        f"(preprocess + model + threshold) on {', '.join(detector.providers)}"
    )
    if run.write_error is not None:  # detections.json is complete; the annotated files not
        raise run.write_error
    if run.errors:
        what = "some frames" if is_video else f"{len(run.errors)} {unit}"
        print(f"{what} could not be read (listed under 'errors' in detections.json)")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m runtime``; returns the exit status: 0 done, 1 some images
    or frames could not be read (the rest were written), 2 a user error stopped the run, 3 the
    output could not be written (disk full, no permission)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    warnings.simplefilter("ignore", ProviderWarning)  # logged already, once is enough
    try:
        return run(args)
    except OSError as exc:
        if cannot_write(exc):
            print(f"error: {cannot_write_message(exc)}", file=sys.stderr)
            return EXIT_CANNOT_WRITE
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, ProviderError, MissingExtraError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
