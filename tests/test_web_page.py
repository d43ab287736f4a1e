"""The browser page (``examples/web``) in a real headless Chromium, against ``Detector``.

One driver run (``examples/web/drive.mjs``, playwright-core on Debian's ``chromium``) opens the
page served by ``runtime.web.serve`` (127.0.0.1, COOP/COEP) on the session's tiny exported
model, after ``python -m runtime.web MODEL --verify`` recorded the browser check, and:

1. runs ``Detector.prepare``'s tensors through ``window.detector.detectTensor`` (2 threads,
   and 1 thread in a page opened with ``?threads=1``): Detector's detections within 1e-5;
2. runs JPEG files through ``window.detector.detect`` (jpeg-js decoding) and through an
   ``<img>`` (Chromium's decoder): tensors and detections against Detector, both measured;
3. picks a JPEG with the page's file input: boxes drawn on the canvas, timings shown, the
   threshold slider reruns it; a screenshot is saved;
4. opens the page on a model without sidecar, with a stale sidecar, never checked in the
   browser, and recorded as failed there, and picks a PNG: one ``error:`` line each.

Skips only where neither ``chromium`` nor ``apt-get`` exists (or Node.js is missing).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from runtime_fixtures import (
    TORCH_FREE,
    box_outline,
    gap_threshold,
    match_detections,
    npm_installed,
    photo,
)

from runtime import Detector
from runtime.web import serve
from runtime.web_verify import TENSOR_ATOL, find_chromium

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "examples" / "web"
NODE, NPM = shutil.which("node"), shutil.which("npm")
APT = shutil.which("apt-get")

pytestmark = [pytest.mark.model, pytest.mark.slow]

# From the same JPEG (jpeg-js in the page, libjpeg-turbo in Pillow), as the Node client: at
# most 3 uint8 steps, mean 0.25; detections on the tiny model measured within 2e-6 / 1e-4 px.
JPEG_MAX_STEPS, JPEG_MEAN_STEPS = 3, 0.25
SCORE_ATOL, BOX_ATOL = 1e-4, 0.01
# Chromium's own decoder (the <img>, webcam and ImageBitmap path): measured, bounded loosely.
BROWSER_MAX_STEPS, BROWSER_MEAN_STEPS = 8, 1.0
SIZES = [(480, 640), (97, 143), (64, 64)]
WEB = r"onnxruntime-web 1\.30\.0"  # examples/web/package-lock.json
VERIFY = r"`python -m runtime\.web model\.onnx --verify` checks it against runtime\.Detector$"


def _chromium() -> str:
    """Debian's Chromium, installed with apt when missing (as .ci/run does)."""
    try:
        return find_chromium()
    except RuntimeError as exc:
        if APT is None:
            pytest.skip(f"the browser test needs Chromium or apt-get to install it: {exc}")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return find_chromium()


def _encode_f32(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


@pytest.fixture(scope="module")
def page_run(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Export, verify in the browser, then one driver run over every page; its results."""
    chromium = _chromium()
    if NODE is None or NPM is None:
        pytest.skip("the browser test drives Chromium with playwright-core: needs node and npm")
    npm_installed(PAGE, NPM, "playwright-core")
    tmp = tmp_path_factory.mktemp("web")
    # the session's export, copied: the browser check is recorded in its sidecar
    model = Path(shutil.copytree(tiny_onnx.parent, tmp / "m")) / tiny_onnx.name
    unverified = json.loads(model.with_suffix(".json").read_text())
    verify = subprocess.run(
        [sys.executable, "-m", "runtime.web", str(model), "--verify", "--chromium", chromium],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if verify.returncode != 0:  # every case below needs the recorded browser check
        pytest.fail(f"python -m runtime.web --verify failed:\n{verify.stdout}{verify.stderr}")
    detector = Detector(model, providers=["cpu"], threads=1)

    files: dict[str, Path] = {}
    jpegs = {}
    for name, image, options in [
        ("420", photo(480, 640, seed=2), {}),
        ("444", photo(97, 143, seed=1), {"quality": 95, "subsampling": 0}),
        ("gray", photo(120, 90, seed=6)[:, :, 0], {"quality": 90}),
    ]:
        jpegs[name] = tmp / f"{name}.jpg"
        Image.fromarray(image).save(jpegs[name], **options)
    rotated = Image.fromarray(photo(60, 100, seed=7))
    exif = rotated.getexif()
    exif[0x0112] = 6
    jpegs["exif6"] = tmp / "exif6.jpg"
    rotated.save(jpegs["exif6"], quality=95, subsampling=0, exif=exif)
    files.update({f"{name}.jpg": path for name, path in jpegs.items()})
    files["not-a-jpeg.png"] = tmp / "not-a-jpeg.png"
    Image.fromarray(photo(40, 40)).save(files["not-a-jpeg.png"])

    tensors, references = [], []
    for index, shape in enumerate(SIZES):
        feed = detector.prepare(photo(*shape, seed=11 + index))
        files[f"t{index}.f32"] = tmp / f"t{index}.f32"
        feed["images"].astype("<f4").tofile(files[f"t{index}.f32"])
        outputs = detector.run(feed)
        # 0 keeps all K; the other in a score gap (a threshold equal to a score is a knife edge)
        for threshold in (0.0, gap_threshold(outputs[2][0], 10 * TENSOR_ATOL)):
            (ref,) = detector.decode(outputs, feed["orig_target_sizes"], threshold)
            size = [int(v) for v in feed["orig_target_sizes"][0]]
            tensors.append(
                {"url": f"/models/t{index}.f32", "orig_size": size, "threshold": threshold}
            )
            references.append(ref)

    # Broken copies: no sidecar, stale sidecar, never checked in the browser, failed there.
    failed = json.loads(model.with_suffix(".json").read_text())
    for entry in failed["verified"]["runtimes"]:
        entry.update(passed=False, failures=["tensor 0: score differs by 0.31 (allowed 1e-05)"])
    stale = json.loads(json.dumps(unverified))
    stale["model"]["sha256"] = "0" * 64
    for case, sidecar in [
        ("missing", None),
        ("stale", stale),
        ("unverified", unverified),
        ("failed", failed),
    ]:
        (tmp / case).mkdir()
        shutil.copyfile(model, tmp / case / "model.onnx")
        files[f"{case}/model.onnx"] = tmp / case / "model.onnx"
        if sidecar is not None:
            (tmp / case / "model.json").write_text(json.dumps(sidecar))
            files[f"{case}/model.json"] = tmp / case / "model.json"

    # The slider starts below the 3rd best score of the picked image, so that boxes are drawn.
    best = np.sort(detector.predict(jpegs["420"], 0.0)[0].confidence)[::-1]
    start = float(np.floor(best[2] * 100) / 100)
    thresholds = {
        name: gap_threshold(detector.predict(path, 0.0)[0].confidence, 10 * SCORE_ATOL)
        for name, path in jpegs.items()
    }
    screenshot = tmp / "page.png"
    with serve(model, extra_files=files) as url:
        base = url.split("?")[0]
        one = "/models/420.jpg"
        main = [
            {"name": "tensors", "helper": "tensors", "arg": tensors},
            {"name": "pixels", "helper": "pixels", "arg": one},
            {"name": "everything", "helper": "detect", "arg": {"url": one, "threshold": 0.0}},
        ]
        for name in jpegs:
            arg = {"url": f"/models/{name}.jpg", "threshold": thresholds[name]}
            main.append({"name": name, "helper": "decoders", "arg": arg})
        upload = {"file": str(jpegs["420"]), "screenshot": str(screenshot)}
        pages = [
            {
                "url": f"{url}&threshold={start:.2f}",
                "evaluate": main,
                "upload": upload,
                "slider": 0,
            },
            {"url": f"{url}&threads=1", "evaluate": main[:1]},
            {"url": url, "upload": {"file": str(files["not-a-jpeg.png"])}, "webcam": True},
        ]
        for case in ("missing", "stale", "unverified", "failed"):
            pages.append({"url": f"{base}?model=/models/{case}/model.onnx"})
        jobs = tmp / "jobs.json"
        jobs.write_text(json.dumps({"chromium": chromium, "pages": pages}))
        done = subprocess.run(
            [NODE, str(PAGE / "drive.mjs"), str(jobs), str(tmp / "out.json")],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads((tmp / "out.json").read_text())
    shown = os.environ.get("WEB_SCREENSHOT")  # keep a copy to look at
    if shown:
        shutil.copyfile(screenshot, shown)
    print(f"\nscreenshot: {screenshot}")
    keys = ["main", "one_thread", "png", "missing", "stale", "unverified", "failed"]
    return {
        "pages": dict(zip(keys, out, strict=True)), "verify": verify, "model": model,
        "detector": detector, "references": references, "jpegs": jpegs, "thresholds": thresholds,
        "screenshot": screenshot, "start": start,
    }  # fmt: skip


# --- the gate ----------------------------------------------------------------------------------


@pytest.mark.unit
def test_stop_ends_the_browsers_whole_process_group():
    """A process group like Chromium's: the main process ends on SIGTERM, a child it started
    ignores it (as a busy renderer may outlive it). ``_stop`` ends both, and quickly."""
    import time

    from runtime.web_verify import _stop

    script = "(trap '' TERM; exec sleep 60) & exec sleep 60"
    process = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    time.sleep(0.3)  # the child is started
    assert len(_group_members(process.pid)) == 2
    started = time.monotonic()
    _stop(process)
    assert _group_members(process.pid) == [] and process.returncode is not None
    assert time.monotonic() - started < 5


def _live_processes() -> list[tuple[int, int, str]]:
    """(pid, process group, command line) of every live (not zombie) process, from /proc."""
    found = []
    for proc in (p for p in Path("/proc").iterdir() if p.name.isdigit()):
        try:
            state, _, pgrp = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue  # it ended while read
        if state != "Z":
            found.append((int(proc.name), int(pgrp), cmdline))
    return found


def _group_members(group: int) -> list[int]:
    """Live processes of process group ``group``."""
    return [pid for pid, pgrp, _ in _live_processes() if pgrp == group]


def _browser_processes(marker: str) -> list[str]:
    """Command lines of live processes that contain ``marker``."""
    return [cmdline for _, _, cmdline in _live_processes() if marker in cmdline]


def test_verify_records_the_browser_check(page_run):
    """``python -m runtime.web MODEL --verify``: PASSED, recorded in the sidecar."""
    verify = page_run["verify"]
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert re.search(r"onnxruntime-web 1\.30\.0 \(wasm\) PASSED", verify.stdout), verify.stdout
    sidecar = json.loads(page_run["model"].with_suffix(".json").read_text())
    (entry,) = [
        r for r in sidecar["verified"]["runtimes"] if r["runtime"].startswith("onnxruntime-web")
    ]
    assert entry["passed"] and entry["provider"] == "wasm" and entry["failures"] == []
    assert entry["same_tensor"]["max_score_diff"] <= TENSOR_ATOL
    # Chromium and every process it started are gone (runtime.web_verify._stop): a child
    # left writing the profile's cache once made removing the profile fail (Errno 39)
    assert _browser_processes("--user-data-dir=/tmp/rtdetr-web-") == []
    print(
        "\nbrowser check:",
        json.dumps({k: entry[k] for k in ("threads", "same_tensor", "same_jpeg")}),
    )


# --- 1. same tensor ----------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["main", "one_thread"])
def test_same_tensor_gives_detectors_detections(page_run, page):
    """Every detection (threshold 0) and those above a mid score: labels equal, scores and
    boxes within 1e-5 (boxes relative to the image), in 2 threads and in 1."""
    run = page_run["pages"][page]
    assert run["ready"] == "1", run
    worst = 0.0
    for ours, ref in zip(run["results"]["tensors"], page_run["references"], strict=True):
        boxes = np.asarray(ours["boxes"], np.float32).reshape(-1, 4)
        scores = np.asarray(ours["scores"], np.float32)
        labels = np.asarray(ours["class_ids"])
        problems = match_detections(
            boxes, scores, labels, ref.xyxy, ref.confidence, ref.class_id,
            box_atol=TENSOR_ATOL * max(ref.image_size), score_atol=TENSOR_ATOL,
        )  # fmt: skip
        assert not problems, problems
        assert ours["class_names"] == [
            page_run["detector"].metadata.id2label[int(c)] for c in labels
        ]
        assert tuple(ours["image_size"]) == ref.image_size
        if len(scores):
            worst = max(worst, float(np.abs(np.sort(scores) - np.sort(ref.confidence)).max()))
    # Threads where cross-origin isolated (runtime.web's COOP/COEP): min(cores, 4), else ?threads
    threads = min(os.cpu_count() or 1, 4) if page == "main" else 1
    assert f"wasm, {threads} thread{'s' if threads > 1 else ''}, loaded" in run["model"], run[
        "model"
    ]
    print(f"\n{page}: {run['model']}; max sorted-score diff {worst:.2e}")


# --- 2. same file, two decoders ----------------------------------------------------------------


def _steps(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    steps = np.abs(ours - reference) * 255
    return float(steps.max()), float(steps.mean())


def test_jpeg_decoders_against_pillow(page_run):
    """jpeg-js (URL/Blob) within the IDCT rounding of Pillow's tensor, detections matched
    as the Node client's; Chromium's decoder (<img>) measured and loosely bounded."""
    detector, report = page_run["detector"], {}
    for name, path in page_run["jpegs"].items():
        got = page_run["pages"]["main"]["results"][name]
        assert got["decoders"] == ["jpeg-js", "browser"]
        reference = detector.prepare(path)["images"].ravel()
        report[name] = {"jpeg-js": _steps(_encode_f32(got["jpegjs"]), reference)}
        report[name]["browser"] = _steps(_encode_f32(got["browser"]), reference)
        (ref,) = detector.predict(path, threshold=page_run["thresholds"][name])
        for key, ours in (("jpeg-js", got["detect"]), ("browser", got["detectImg"])):
            boxes = np.asarray(ours["boxes"], np.float32).reshape(-1, 4)
            scores = np.asarray(ours["scores"], np.float32)
            problems = match_detections(
                boxes, scores, np.asarray(ours["class_ids"]), ref.xyxy, ref.confidence,
                ref.class_id, box_atol=BOX_ATOL, score_atol=SCORE_ATOL,
            )  # fmt: skip
            report[name][f"{key} detections"] = "match" if not problems else f"{len(problems)} off"
            if key == "jpeg-js":
                assert not problems, (name, problems)
            assert tuple(ours["image_size"]) == ref.image_size, (name, key)
    print("\ntensor diff to Pillow (uint8 steps, max / mean):", json.dumps(report))
    for name, measured in report.items():
        assert measured["jpeg-js"][0] <= JPEG_MAX_STEPS + 1e-3, (name, measured)
        assert measured["jpeg-js"][1] <= JPEG_MEAN_STEPS, (name, measured)
        assert measured["browser"][0] <= BROWSER_MAX_STEPS + 1e-3, (name, measured)
        assert measured["browser"][1] <= BROWSER_MEAN_STEPS, (name, measured)


# --- 3. the page itself ------------------------------------------------------------------------


def test_picked_image_is_drawn_with_boxes_timings_and_slider(page_run):
    run = page_run["pages"]["main"]
    pixels = run["results"]["pixels"]
    height, width = pixels["height"], pixels["width"]
    image = np.frombuffer(base64.b64decode(pixels["rgb"]), np.uint8).reshape(height, width, 3)
    canvas = run["canvas"]
    assert (canvas["height"], canvas["width"]) == (height, width)
    drawn = np.frombuffer(base64.b64decode(canvas["rgb"]), np.uint8).reshape(height, width, 3)
    timings = r"decode [\d.]+ ms \(jpeg-js\), preprocessing [\d.]+ ms, model [\d.]+ ms; "
    shown = re.search(
        rf"{timings}(\d+) detections above {page_run['start']:.2f}", run["uploadTimings"]
    )
    assert shown, run["uploadTimings"]
    everything = run["results"]["everything"]
    above = [i for i, s in enumerate(everything["scores"]) if s > np.float32(page_run["start"])]
    assert int(shown.group(1)) == len(above) >= 3
    changed = np.abs(drawn.astype(int) - image).max(axis=2) > 0
    boxes = np.asarray(everything["boxes"])[above]
    outline = box_outline((height, width), boxes)
    assert changed[outline].mean() > 0.9, "the boxes are not drawn"
    # The slider at 0 reruns the image: every query above 0.
    slid = re.search(r"(\d+) detections above 0\.00", run["sliderTimings"])
    assert slid, run["sliderTimings"]
    assert int(slid.group(1)) == len(everything["scores"]) != len(above)
    assert page_run["screenshot"].stat().st_size > 10_000


def test_webcam_frames_are_detected(page_run):
    """The webcam button (Chromium's fake camera): frames go through the browser's decoder."""
    timings = page_run["pages"]["png"]["webcamTimings"]
    assert re.search(
        r"\(browser\), preprocessing [\d.]+ ms, model [\d.]+ ms; \d+ detections", timings
    )


# --- 4. errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("missing", r"model\.onnx: no sidecar /models/missing/model\.json .*runtime\.sidecar"),
        ("stale", r"model\.json: stale sidecar, it describes another export \(model\.sha256 0{12}"),
        ("unverified", rf"model\.onnx: not verified in {WEB} \(wasm\); {VERIFY}"),
        ("failed", rf"model\.onnx: failed the browser check in {WEB} \(wasm\): tensor 0: score"),
        ("png", r"not-a-jpeg\.png: not a JPEG file \(this client decodes JPEG only\)$"),
    ],
)  # fmt: skip
def test_errors_are_one_line(page_run, page, expected):
    run = page_run["pages"][page]
    assert run["ready"] == ("1" if page == "png" else "error"), run
    prefix = "^error: " if page == "png" else f"^error: /models/{page}/"
    status = run["uploadStatus"] if page == "png" else run["status"]
    assert "\n" not in status and re.search(prefix + expected, status), status


# --- the comparison the gate uses (no browser) -------------------------------------------------


@pytest.mark.unit
def test_browser_check_fails_on_a_score_a_box_or_a_label_off():
    """``runtime.web_verify``'s comparison: equal passes; a score 2e-5 off, a box 0.1 px off
    (of 640) or a changed label fails the same-tensor check, each with its reason."""
    from runtime.detections import RawDetections
    from runtime.web_verify import _check, compare

    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 600, (6, 4)).astype(np.float32)
    scores = np.sort(rng.uniform(0, 1, 6).astype(np.float32))[::-1]
    labels = np.array([0, 1, 2, 0, 1, 2])
    ref = RawDetections(boxes, scores, labels, labels.astype(str), (480, 640))
    ours = {"boxes": boxes.tolist(), "scores": scores.tolist(), "class_ids": labels.tolist()}

    def problems(**changes: Any) -> list[str]:
        return _check("t", compare({**ours, **changes}, ref), TENSOR_ATOL, TENSOR_ATOL * 640)

    assert problems() == []
    assert problems(scores=(scores + np.float32(2e-5)).tolist()) == [
        "t: score differs by 2e-05 (allowed 1e-05)"
    ]
    moved = boxes.copy()
    moved[3, 1] += 0.1
    assert problems(boxes=moved.tolist())[0].startswith("t: box differs by 0.1 px")
    assert problems(class_ids=[0, 1, 2, 0, 1, 1])[0] == "t: 1 detections without a same-label match"


@pytest.mark.unit
def test_runtime_web_is_torch_free_and_refuses_bad_input_in_one_line(tmp_path):
    """``python -m runtime.web`` from the runtime alone (torch and transformers blocked):
    a missing model or a page folder without its npm install is one ``error:`` line, exit 2."""
    blocker = TORCH_FREE.split("import numpy as np")[0]
    script = blocker + "import runtime.web, runtime.web_verify\n"
    script += "raise SystemExit(runtime.web.main(sys.argv[1:]))\n"
    (tmp_path / "page").mkdir()
    (tmp_path / "page" / "index.html").write_text("<!doctype html>")
    (tmp_path / "model.onnx").write_bytes(b"not onnx")
    for args, expected in [
        ([str(tmp_path / "nope.onnx")], "nope.onnx: no such model file"),
        (
            [str(tmp_path / "model.onnx"), "--page", str(tmp_path / "page")],
            "onnxruntime-web is not installed",
        ),
        ([str(tmp_path / "model.onnx"), "--page", str(tmp_path)], "no index.html"),
    ]:
        done = subprocess.run(
            [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
