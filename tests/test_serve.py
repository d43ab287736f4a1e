"""``python -m runtime.serve`` end to end, with Triton's own client (``tritonclient[http]``).

One server per module (a subprocess on a free 127.0.0.1 port, torch and transformers made
unimportable in it, an API key set, small body and pixel limits so that the limits are cheap to
hit), the session's tiny exported model (64x64 input), stopped by the fixture. The SIGTERM test
starts its own short-lived server. Every request is bounded by the client's timeouts.
"""

from __future__ import annotations

import asyncio
import http.client as http_client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from runtime_fixtures import gap_threshold, photo

from runtime import Detector
from runtime.serve.process import ServerProcess, server_process
from runtime.sidecar import sidecar_document

http = pytest.importorskip("tritonclient.http", reason="pip install -e '.[dev]'")
from tritonclient.utils import InferenceServerException  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEY = "test-key-0123456789abcdef"


def auth() -> dict[str, str]:
    """A new headers dict per call: tritonclient writes Inference-Header-Content-Length into the
    dict it is given, so a shared one carries a stale length into the next request."""
    return {"Authorization": f"Bearer {KEY}"}


MAX_BODY_MB, MAX_PIXELS = 1, 250_000
START_S, REQUEST_S = 90, 30

# The server process with torch, torchvision and transformers unimportable: the [serve]
# profile must not need them.
LAUNCH = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"torch", "torchvision", "transformers"}:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, Block())
sys.argv = ["runtime.serve", *sys.argv[1:]]
runpy.run_module("runtime.serve", run_name="__main__")
"""


def client_of(server: ServerProcess) -> http.InferenceServerClient:
    return http.InferenceServerClient(
        server.url, connection_timeout=REQUEST_S, network_timeout=REQUEST_S
    )


def running_server(model: Path, log: Path, *flags: str, key: str | None = None):
    """The server, torch-free, one engine thread; stopped (SIGTERM, then kill) on exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RTDETR_DEPLOY_API_KEY", None)
    if key:
        env["RTDETR_DEPLOY_API_KEY"] = key
    command = (sys.executable, "-c", LAUNCH)
    return server_process(
        model, log, ("--threads", "1", *flags), env=env, command=command, start_s=START_S
    )


def tensor_inputs(feed: dict[str, np.ndarray], *, binary: bool = True) -> list:
    inputs = []
    for name, datatype in (("images", "FP32"), ("orig_target_sizes", "INT64")):
        tensor = http.InferInput(name, list(feed[name].shape), datatype)
        tensor.set_data_from_numpy(feed[name], binary_data=binary)
        inputs.append(tensor)
    return inputs


def image_input(files: list[bytes], name: str = "image") -> list:
    tensor = http.InferInput(name, [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=object))
    return [tensor]


def outputs_of(result) -> tuple[np.ndarray, ...]:
    return tuple(result.as_numpy(n) for n in ("labels", "boxes", "scores", "class_names"))


def encode(image: np.ndarray | Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(
        buffer, fmt, **kwargs
    )
    return buffer.getvalue()


@pytest.fixture(scope="module")
def onnx_model(tiny_onnx: Path) -> Path:
    return tiny_onnx


@pytest.fixture(scope="module")
def detector(onnx_model: Path) -> Detector:
    return Detector(onnx_model, providers=["cpu"], threads=1)


@pytest.fixture(scope="module")
def server(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    flags = ("--max-body-mb", str(MAX_BODY_MB), "--max-pixels", str(MAX_PIXELS))
    with running_server(onnx_model, log, *flags, key=KEY) as running:
        yield running
    assert KEY not in log.read_text(), "the API key was written to the server log"


@pytest.fixture(scope="module")
def client(server: ServerProcess):
    return client_of(server)


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """Encoded files of the kinds users send: JPEG, EXIF-rotated JPEG, RGBA PNG, 16-bit PNG."""
    rotated = Image.fromarray(photo(40, 70, seed=2))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rgba = np.dstack([photo(50, 50, seed=3), np.full((50, 50), 128, np.uint8)])
    deep = Image.fromarray(photo(30, 45, seed=4)[..., 0].astype(np.uint16) * 257)
    return {
        "jpeg": encode(photo(48, 80, seed=1), "JPEG", quality=90),
        "exif": encode(rotated, "JPEG", exif=exif),
        "rgba": encode(rgba, "PNG"),
        "png16": encode(deep, "PNG"),
    }


# --- protocol, health, auth --------------------------------------------------------------------


@pytest.mark.model
def test_binds_loopback_only(server: ServerProcess):
    """The listening socket is 127.0.0.1, not 0.0.0.0 (kserve's hard-coded default)."""
    listening = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port = local.split(":")
        if int(port, 16) == server.port and state == "0A":
            listening.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    assert listening == ["127.0.0.1"]


@pytest.mark.model
def test_health_open_everything_else_needs_the_key(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("rtdetr")
    for call in (lambda h: client.get_model_metadata("rtdetr", headers=h),
                 lambda h: client.infer("rtdetr", image_input([b"x"]), headers=h)):  # fmt: skip
        for headers, message in (
            (None, "missing 'Authorization: Bearer <key>'"),
            ({"Authorization": "Bearer wrong-key"}, "invalid API key"),
            ({"Authorization": KEY}, "missing 'Authorization: Bearer <key>'"),
        ):
            with pytest.raises(InferenceServerException, match=message) as caught:
                call(headers)
            assert caught.value.status() == "401"


@pytest.mark.model
def test_metadata_declares_inputs_outputs_and_the_contract(client, detector, onnx_model):
    metadata = client.get_model_metadata("rtdetr", headers=auth())
    k = detector.metadata.num_top_queries
    assert metadata["inputs"] == [
        {"name": "images", "datatype": "FP32", "shape": [-1, 3, 64, 64]},
        {"name": "orig_target_sizes", "datatype": "INT64", "shape": [-1, 2]},
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
    ]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("labels", "INT64", [-1, k]), ("boxes", "FP32", [-1, k, 4]),
        ("scores", "FP32", [-1, k]), ("class_names", "BYTES", [-1, k]),
    ]  # fmt: skip
    document = metadata["parameters"]["rtdetr_deploy"]
    assert document == sidecar_document(onnx_model, detector.metadata)
    assert document["id2label"] == {str(i): n for i, n in detector.metadata.id2label.items()}


# --- the two ways in --------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tensor_path_identical_to_detector_run(client, detector, binary):
    feed = detector.prepare([photo(48, 80, seed=5), photo(90, 60, seed=6)])
    result = client.infer("rtdetr", tensor_inputs(feed, binary=binary), headers=auth())
    labels, boxes, scores, names = outputs_of(result)
    expected = detector.run(feed)
    for got, want in zip((labels, boxes, scores), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    id2label = detector.metadata.id2label
    assert names.tolist() == [[id2label[int(c)].encode() for c in row] for row in labels]


@pytest.mark.model
def test_image_path_identical_to_detector_predict(client, detector, files, tmp_path):
    paths = []
    for name, data in files.items():
        paths.append(tmp_path / f"{name}.img")
        paths[-1].write_bytes(data)
    result = client.infer("rtdetr", image_input(list(files.values())), headers=auth())
    labels, boxes, scores, names = outputs_of(result)
    for got, want in zip(
        (labels, boxes, scores), detector.run(detector.prepare(paths)), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    threshold = gap_threshold(scores[0], 1e-4)
    for index, expected in enumerate(detector.predict(paths, threshold)):
        keep = scores[index] > threshold
        np.testing.assert_array_equal(boxes[index][keep], expected.xyxy)
        np.testing.assert_array_equal(scores[index][keep], expected.confidence)
        np.testing.assert_array_equal(labels[index][keep], expected.class_id)
        assert [n.decode() for n in names[index][keep]] == expected.class_name.tolist()
    assert 0 < (scores[0] > threshold).sum() < scores.shape[1]


# --- bad input: 4xx naming the input, then a good request still works --------------------------


def _bad_cases(feed: dict[str, np.ndarray], files: dict[str, bytes]) -> dict[str, tuple]:
    images, sizes = feed["images"], feed["orig_target_sizes"]
    big = np.zeros((24, 3, 64, 64), np.float32)  # 1.2 MB > the 1 MB limit
    wide = encode(np.zeros((500, 600, 3), np.uint8), "PNG")  # 300k pixels > 250k
    fp64 = http.InferInput("images", list(images.shape), "FP64")
    fp64.set_data_from_numpy(images.astype(np.float64))
    return {
        "corrupt": (image_input([bytes(range(256)) * 4]), "400",
                    r"'image'\[0\]: cannot decode image \(not an image file"),
        "truncated": (image_input([files["jpeg"][: len(files["jpeg"]) // 2]]), "400",
                      r"'image'\[0\]: cannot decode image \(image file is truncated"),
        "not-an-image": (image_input([b"GET / HTTP/1.1, not a picture"]), "400",
                         r"'image'\[0\]: cannot decode image \(not an image file"),
        "too-many-pixels": (image_input([files["jpeg"], wide]), "400",
                            r"'image'\[1\]: 600x500 = 300000 pixels, more than the limit of "
                            r"250000 \(--max-pixels\)"),
        "fp64": ([fp64, tensor_inputs(feed)[1]], "400",
                 "input 'images': datatype FP64, expected FP32"),
        "rank": (tensor_inputs({"images": images[0], "orig_target_sizes": sizes}), "400",
                 r"input 'images': shape \[3, 64, 64\], expected \[N, 3, 64, 64\]"),
        "shape": (tensor_inputs({"images": images[:, :, :32], "orig_target_sizes": sizes}),
                  "400", r"input 'images': shape \[1, 3, 32, 64\], expected \[N, 3, 64, 64\]"),
        "sizes-shape": (tensor_inputs({"images": images, "orig_target_sizes": sizes[:, :1]}),
                        "400", r"input 'orig_target_sizes': shape \[1, 1\], expected \[1, 2\]"),
        "nan": (tensor_inputs({"images": np.full_like(images, np.nan), "orig_target_sizes": sizes}),
                "400", "input 'images': contains NaN or infinity"),
        "sizes-zero": (tensor_inputs({"images": images, "orig_target_sizes": sizes * 0}), "400",
                       r"input 'orig_target_sizes': sizes must be positive"),
        "missing": (tensor_inputs(feed)[:1], "400", "missing input 'orig_target_sizes'"),
        "unknown": (image_input([files["jpeg"]], name="picture"), "400",
                    "unknown input 'picture'"),
        "empty-tensor": (tensor_inputs({"images": images[:0], "orig_target_sizes": sizes[:0]}),
                         "400", r"input 'images': empty batch"),
        "empty-image": (image_input([]), "400", r"input 'image': empty batch"),
        "body-limit": (tensor_inputs({"images": big, "orig_target_sizes": sizes.repeat(24, 0)}),
                       "413", "larger than the server's limit of 1048576 bytes"),
    }  # fmt: skip


BAD = [
    "corrupt",
    "truncated",
    "not-an-image",
    "too-many-pixels",
    "fp64",
    "rank",
    "shape",
    "sizes-shape",
    "nan",
    "sizes-zero",
    "missing",
    "unknown",
    "empty-tensor",
    "empty-image",
    "body-limit",
]


@pytest.mark.model
@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_4xx_naming_it_then_good_request_works(client, detector, files, case):
    feed = detector.prepare([photo(48, 80, seed=7)])
    inputs, status, message = _bad_cases(feed, files)[case]
    with pytest.raises(InferenceServerException, match=message) as caught:
        client.infer("rtdetr", inputs, headers=auth())
    assert caught.value.status() == status, caught.value
    good = client.infer("rtdetr", tensor_inputs(feed), headers=auth())
    np.testing.assert_array_equal(good.as_numpy("scores"), detector.run(feed)[2])


def _raw_post(server: ServerProcess, headers: dict[str, str], body: Any) -> tuple[int, str]:
    connection = http_client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    try:
        connection.putrequest("POST", "/v2/models/rtdetr/infer")
        for key, value in {**auth(), **headers}.items():
            connection.putheader(key, value)
        connection.endheaders()
        try:
            for chunk in body:
                connection.send(chunk)
        except (BrokenPipeError, ConnectionResetError):  # the server answered and stopped reading
            pass
        response = connection.getresponse()
        return response.status, json.loads(response.read())["error"]
    finally:
        connection.close()


@pytest.mark.model
def test_declared_oversized_body_is_refused_before_it_is_read(server):
    """Content-Length over the limit: 413 at once, without waiting for the (never sent) body."""
    status, error = _raw_post(server, {"Content-Length": str(10 * 2**20)}, [b"x" * 10])
    assert (status, error) == (413, f"request body is larger than the server's limit of "
                                    f"{MAX_BODY_MB * 2**20} bytes (--max-body-mb)")  # fmt: skip


@pytest.mark.model
def test_chunked_oversized_body_is_refused_while_it_streams(server):
    """No Content-Length (chunked): 413 as soon as the bytes read pass the limit."""
    chunk = b"x" * 65536
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    body = [frame] * (MAX_BODY_MB * 16 + 1) + [b"0\r\n\r\n"]
    status, error = _raw_post(server, {"Transfer-Encoding": "chunked"}, body)
    assert status == 413 and "larger than the server's limit" in error


# --- load and shutdown -------------------------------------------------------------------------


@pytest.mark.model
def test_concurrent_clients_answered_like_a_sequential_run(server, detector, files):
    """8 clients x 12 requests (both paths, 4 inputs), batched by the server, each answer
    identical to the same request sent alone."""
    feeds = [detector.prepare([photo(40 + 8 * i, 64, seed=10 + i)]) for i in range(2)]
    requests = [lambda c, f=f: c.infer("rtdetr", tensor_inputs(f), headers=auth()) for f in feeds]
    requests += [lambda c, d=d: c.infer("rtdetr", image_input([d]), headers=auth())
                 for d in (files["jpeg"], files["rgba"])]  # fmt: skip
    alone = [outputs_of(request(client_of(server))) for request in requests]

    def client_run(worker: int) -> list[tuple[int, tuple]]:
        client = client_of(server)
        picks = [(worker + i) % len(requests) for i in range(12)]
        return [(pick, outputs_of(requests[pick](client))) for pick in picks]

    with ThreadPoolExecutor(8) as pool:
        answers = [a for run in pool.map(client_run, range(8)) for a in run]
    assert len(answers) == 96
    for pick, outputs in answers:
        for got, want in zip(outputs, alone[pick], strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.model
def test_sigterm_finishes_requests_in_flight(onnx_model, detector, tmp_path):
    """Requests held in the batcher (1 s wait) when SIGTERM arrives are all answered, then the
    process exits 0 and the port is closed."""
    feed = detector.prepare([photo(48, 64, seed=20)])
    expected = detector.run(feed)[2]
    flags = ("--max-wait-ms", "1000", "--max-batch", "64")
    with running_server(onnx_model, tmp_path / "server.log", *flags) as server:
        started = threading.Barrier(7)

        def send(_: int) -> np.ndarray:
            client = client_of(server)
            started.wait(REQUEST_S)
            return client.infer("rtdetr", tensor_inputs(feed)).as_numpy("scores")

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(send, i) for i in range(6)]
            started.wait(REQUEST_S)
            time.sleep(0.5)  # the requests are in the batcher's 1 s wait
            server.process.send_signal(signal.SIGTERM)
            answers = [future.result(REQUEST_S) for future in futures]
        assert server.process.wait(60) == 0, server.log.read_text()[-2000:]
    for scores in answers:
        np.testing.assert_array_equal(scores, expected)
    log = server.log.read_text()
    assert "stopped (SIGTERM)" in log
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", server.port)),
    ):
        pass


@pytest.mark.model
def test_cli_mistakes_are_one_line(tmp_path, onnx_model, capsys):
    """A missing model (the real entry point) and an empty key file: one ``error:`` line and
    status 2, before anything listens."""
    missing = tmp_path / "nope.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "runtime.serve", str(missing)], capture_output=True, text=True,
        timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (2, f"error: {missing}: no such model file\n")
    from runtime.serve import main

    empty = tmp_path / "key"
    empty.write_text("\n")
    assert main([str(onnx_model), "--api-key-file", str(empty)]) == 2
    assert capsys.readouterr().err == f"error: {empty}: the API key file is empty\n"


@pytest.mark.model
def test_a_request_past_the_timeout_is_refused_and_the_next_one_runs(detector):
    """In-process (no HTTP): the model's timeout around the batcher; 504 over HTTP."""
    from kserve.protocol.infer_type import InferInput, InferRequest

    from runtime.serve.batching import Batcher
    from runtime.serve.model import DetectorModel, RequestTimeout, ServeLimits

    delay = {"s": 1.0}

    def slow_run(feed):
        time.sleep(delay["s"])
        return detector.run(feed)

    batcher = Batcher(slow_run, max_batch=8, max_wait_s=0.0, workers=1)
    model = DetectorModel("m", detector, batcher, ServeLimits(timeout_s=0.2))
    feed = detector.prepare([np.full((40, 50, 3), 90, np.uint8)])
    inputs = []
    for name, datatype in (("images", "FP32"), ("orig_target_sizes", "INT64")):
        tensor = InferInput(name, list(feed[name].shape), datatype)
        tensor.set_data_from_numpy(feed[name])
        inputs.append(tensor)
    request = InferRequest("m", infer_inputs=inputs)

    async def main():
        with pytest.raises(RequestTimeout, match=r"longer than the server's 0.2 s \(--timeout\)"):
            await model.predict(request)
        delay["s"] = 0.0
        await asyncio.sleep(1.0)  # the timed-out batch finishes on its thread
        return await model.predict(request)

    response = asyncio.run(main())
    scores = next(o for o in response.outputs if o.name == "scores").as_numpy()
    np.testing.assert_array_equal(scores, detector.run(feed)[2])
