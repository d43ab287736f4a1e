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
and the annotated video are written atomically (a temporary name, then a rename).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.detections import RawDetections
from runtime.detector import Detector
from runtime.errors import ImageError, ProviderError, ProviderWarning
from runtime.extras import MissingExtraError, import_supervision
from runtime.files import (
    EXIT_CANNOT_WRITE,
    atomic_path,
    atomic_write_file,
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


def _run_images(
    detector: Detector,
    paths: list[Path],
    output: Path,
    threshold: float,
    timer: _Timer,
    annotate: _Annotator,
    errors: list[dict[str, str]],
) -> Iterator[dict[str, Any]]:
    """Detect in each image; an unreadable one is logged, added to ``errors`` and skipped."""
    from PIL import Image
    from tqdm import tqdm

    for path in tqdm(paths, desc="images", unit="img", disable=len(paths) < 2):
        try:
            rgb = to_rgb_array(path)
        except ImageError as exc:
            logger.error("%s", exc)
            errors.append({"file": str(path), "error": str(exc)})
            continue
        raw = timer.detect(detector, rgb, threshold, bgr=False)
        if annotate.enabled:
            scene = Image.fromarray(annotate(rgb, raw))
            atomic_write_file(output / path.name, scene.save)
        yield {"file": str(path), **raw.to_dict()}


def _run_video(
    detector: Detector,
    path: Path,
    output: Path,
    threshold: float,
    timer: _Timer,
    annotate: _Annotator,
    errors: list[dict[str, str]],
) -> Iterator[dict[str, Any]]:
    """Detect in each frame; the annotated video is published when the run ends (atomic).

    OpenCV stops at the first frame it cannot decode (a truncated or damaged file): the frames
    before it are kept and written, and the missing ones are added to ``errors``.
    """
    from tqdm import tqdm

    sv = import_supervision("a video run")
    try:
        info = sv.VideoInfo.from_video_path(str(path))
    except Exception as exc:  # supervision raises a bare Exception for an unreadable video
        raise ImageError(f"{path}: cannot open video ({exc})") from None
    frames = sv.get_video_frames_generator(str(path))
    count = 0
    with atomic_path(output / f"{path.stem}.mp4") as tmp, sv.VideoSink(str(tmp), info) as sink:
        for frame in tqdm(frames, desc="frames", total=info.total_frames):
            raw = timer.detect(detector, frame, threshold, bgr=True)
            sink.write_frame(annotate(frame, raw))
            yield {"frame": count, **raw.to_dict()}
            count += 1
    expected = info.total_frames or 0
    if count < expected:
        message = (
            f"{path}: frames {count} to {expected - 1} could not be decoded "
            f"(the container announces {expected}; the file is truncated or damaged)"
        )
    elif count == 0:
        message = f"{path}: no frame could be decoded"
    else:
        return
    logger.error("%s", message)
    errors.append({"file": str(path), "error": message})


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
    timer, annotate = _Timer(), _Annotator()
    errors: list[dict[str, str]] = []
    is_video = source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES
    paths = [] if is_video else _list_images(source) if source.is_dir() else [source]
    if not annotate.enabled:
        logger.info("detections.json only, no annotated output: %s", annotate.reason)
    start = time.perf_counter()
    if is_video:
        results = list(
            _run_video(detector, source, output, args.threshold, timer, annotate, errors)
        )
        unit = "frames"
    else:
        results = list(
            _run_images(detector, paths, output, args.threshold, timer, annotate, errors)
        )
        unit = "images"
        if errors and not source.is_dir():  # one image given, and it is unreadable: exit 2
            raise ImageError(errors[0]["error"])
    elapsed = time.perf_counter() - start
    report = {
        "model": str(args.model),
        "source": str(source),
        "providers": detector.providers,
        "threshold": args.threshold,
        "class_names": detector.class_names,
        "errors": errors,
        "results": results,
    }
    _write_report(output / "detections.json", report)
    count = len(results)
    print(
        f"{count} {unit}, {sum(len(r['scores']) for r in results)} detections -> {output}\n"
        f"{count / elapsed:.1f} FPS end to end (read, detect, annotate, write); "
        f"{timer.count / max(timer.seconds, 1e-9):.1f} FPS detector alone "
        f"(preprocess + model + threshold) on {', '.join(detector.providers)}"
    )
    if errors:
        what = "some frames" if is_video else f"{len(errors)} {unit}"
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
