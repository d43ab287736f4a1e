"""The server's parts without a server or a model: the batcher and the binary request decoder.

Everything runs in-process on an event loop, in about two seconds (the per-request timeout,
which needs the model, is tested in ``test_serve.py``).
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time

import numpy as np
import pytest

kserve_errors = pytest.importorskip("kserve.errors", reason="pip install -e '.[serve]'")
from runtime.serve.batching import Batcher  # noqa: E402
from runtime.serve.protocol import decode_binary_request, input_array  # noqa: E402

InvalidInput = kserve_errors.InvalidInput


def _feed(*values: float) -> dict[str, np.ndarray]:
    images = np.array(values, np.float32).reshape(-1, 1)
    return {"images": images, "orig_target_sizes": np.ones((len(values), 2), np.int64)}


class SlowEngine:
    """``run`` doubles the images after ``delay_s``; records each call's batch size."""

    def __init__(self, delay_s: float = 0.05, fail: bool = False) -> None:
        self.delay_s, self.fail, self.calls = delay_s, fail, []
        self.lock = threading.Lock()

    def __call__(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        with self.lock:
            self.calls.append(len(feed["images"]))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("engine broke")
        return (feed["images"] * 2, feed["orig_target_sizes"])


def _gather(batcher: Batcher, feeds: list[dict[str, np.ndarray]], gap_s: float = 0.0):
    async def main():
        async def one(index, feed):
            await asyncio.sleep(gap_s * index)
            return await batcher.submit(feed)

        return await asyncio.gather(*(one(i, f) for i, f in enumerate(feeds)))

    return asyncio.run(main())


@pytest.mark.unit
def test_requests_arriving_while_the_engine_runs_go_as_one_batch():
    """First request alone (engine idle, no wait), the 5 that queued behind it together; each
    caller gets its own rows back."""
    engine = SlowEngine(0.2)
    batcher = Batcher(engine, max_batch=8, max_wait_s=0.0, workers=1)
    results = _gather(batcher, [_feed(i) for i in range(6)], gap_s=0.01)
    assert engine.calls == [1, 5]
    assert [r[0].ravel().tolist() for r in results] == [[2.0 * i] for i in range(6)]


@pytest.mark.unit
def test_max_batch_is_respected_and_the_overflow_carried_over():
    engine = SlowEngine(0.1)
    batcher = Batcher(engine, max_batch=4, max_wait_s=0.0, workers=1)
    feeds = [_feed(0), _feed(1, 2), _feed(3, 4), _feed(5, 6), _feed(7)]
    results = _gather(batcher, feeds, gap_s=0.01)
    assert engine.calls == [1, 4, 3]  # 2+2 fill a batch of 4; the third pair starts the next
    assert np.concatenate([r[0] for r in results]).ravel().tolist() == [2.0 * i for i in range(8)]


@pytest.mark.unit
def test_max_wait_collects_requests_that_arrive_later():
    engine = SlowEngine(0.0)
    batcher = Batcher(engine, max_batch=8, max_wait_s=0.5, workers=1)
    _gather(batcher, [_feed(i) for i in range(3)], gap_s=0.05)
    assert engine.calls == [3]


@pytest.mark.unit
def test_an_engine_error_reaches_every_caller_of_the_batch_and_the_batcher_goes_on():
    engine = SlowEngine(0.0, fail=True)
    batcher = Batcher(engine, max_batch=8, max_wait_s=0.1, workers=1)

    async def main():
        first = await asyncio.gather(
            *(batcher.submit(_feed(i)) for i in range(2)), return_exceptions=True
        )
        engine.fail = False
        return first, await batcher.submit(_feed(9))

    failed, later = asyncio.run(main())
    assert [str(e) for e in failed] == ["engine broke", "engine broke"]
    assert later[0].ravel().tolist() == [18.0]


@pytest.mark.unit
def test_a_feed_that_fails_to_build_fails_its_request_only():
    """Lazy feeds (decoded on the engine's thread): one bad image, the batch still runs."""
    engine = SlowEngine(0.2)
    batcher = Batcher(engine, max_batch=8, max_wait_s=0.0, workers=1)

    def broken():
        raise ValueError("input 'image'[0]: not an image")

    async def main():
        first = asyncio.ensure_future(batcher.submit(_feed(0)))  # the engine is busy with it
        await asyncio.sleep(0.05)
        rest = await asyncio.gather(
            batcher.submit_lazy(1, lambda: _feed(1)), batcher.submit_lazy(1, broken),
            batcher.submit_lazy(2, lambda: _feed(2, 3)), return_exceptions=True,
        )  # fmt: skip
        return await first, rest

    first, (one, bad, two) = asyncio.run(main())
    assert engine.calls == [1, 3]
    assert first[0].ravel().tolist() == [0.0] and one[0].ravel().tolist() == [2.0]
    assert two[0].ravel().tolist() == [4.0, 6.0]
    assert isinstance(bad, ValueError) and "not an image" in str(bad)


@pytest.mark.unit
@pytest.mark.parametrize("bad", [{"max_batch": 0}, {"workers": 0}, {"max_wait_s": -1}])
def test_batcher_refuses_bad_settings(bad):
    settings = {"max_batch": 8, "max_wait_s": 0.0, "workers": 1, **bad}
    with pytest.raises(ValueError, match="expected max_batch >= 1"):
        Batcher(SlowEngine(), **settings)


# --- the binary request decoder ----------------------------------------------------------------


def _body(inputs: list[dict], payload: bytes) -> tuple[bytes, str]:
    header = json.dumps({"inputs": inputs}).encode()
    return header + payload, str(len(header))


def _bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


@pytest.mark.unit
def test_bytes_inputs_stay_bytes():
    """kserve 0.21 re-decodes BYTES as UTF-8 (a 500 for a JPEG); here they stay raw."""
    jpeg_like = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\xff\xd9"
    raw = _bytes_tensor(jpeg_like, b"\x89PNG\r\n")
    body, length = _body(
        [{"name": "image", "datatype": "BYTES", "shape": [2],
          "parameters": {"binary_data_size": len(raw)}}], raw,
    )  # fmt: skip
    (tensor,) = decode_binary_request(body, length, "m").inputs
    assert input_array(tensor).tolist() == [jpeg_like, b"\x89PNG\r\n"]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("inputs", "payload", "length", "message"),
    [
        ([], b"", "x", r"Inference-Header-Content-Length is 'x', not a byte count"),
        ([], b"", "999", r"Inference-Header-Content-Length 999 is outside the body"),
        ([{"name": "image", "datatype": "BYTES", "shape": [1],
           "parameters": {"binary_data_size": 50}}], b"abc", None,
         r"input 'image': binary_data_size 50 does not fit in the body \(3 bytes left\)"),
        ([{"name": "image", "datatype": "BYTES", "shape": [1]}], b"", None,
         r"input 'image': neither 'data' nor parameters.binary_data_size"),
        ([{"datatype": "BYTES", "shape": [1], "data": ["a"]}], b"", None,
         r"inputs\[0\]: 'name' missing"),
        ([{"name": "image", "datatype": "BYTES", "shape": ["1"], "data": ["a"]}], b"", None,
         r"input 'image': shape \['1'\] is not a list of integers"),
        ([{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["a"]}], b"tail", None,
         r"request: 4 bytes after the last input's binary data"),
    ],
    ids=["length-not-a-number", "length-past-body", "size-past-body", "no-data", "no-name",
         "shape-strings", "trailing-bytes"],
)  # fmt: skip
def test_malformed_requests_are_invalid_input(inputs, payload, length, message):
    body, header_length = _body(inputs, payload)
    with pytest.raises(InvalidInput, match=message):
        decode_binary_request(body, length or header_length, "m")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("FP32", [1, 3], np.zeros(2, np.float32).tobytes(), r"FP32 data does not fill shape"),
        (
            "BYTES",
            [1],
            b"\x05\x00\x00\x00ab",
            r"BYTES data does not fill shape \[1\] \(element 0 says 5 bytes, 2 left",
        ),
        (
            "BYTES",
            [1],
            b"\x05\x00",
            r"BYTES data does not fill shape \[1\] \(truncated element length",
        ),
        ("INT3", [1], b"", r"unknown datatype 'INT3'"),
    ],
)
def test_input_data_that_does_not_fit_is_invalid_input(datatype, shape, raw, message):
    body, length = _body(
        [{"name": "x", "datatype": datatype, "shape": shape,
          "parameters": {"binary_data_size": len(raw)}}], raw,
    )  # fmt: skip
    (tensor,) = decode_binary_request(body, length, "m").inputs
    with pytest.raises(InvalidInput, match=f"input 'x': {message}"):
        input_array(tensor)
