"""Request decoding for the Open Inference Protocol, binary extension included, without the 500s.

tritonclient sends every input with Triton's binary tensor extension by default (a JSON header
of ``Inference-Header-Content-Length`` bytes, then the raw tensors). kserve 0.21 reads that in
``InferRequest.from_bytes``, which then calls ``set_data_from_numpy(binary_data=False)`` on each
input: a BYTES tensor is re-decoded as UTF-8, so a JPEG fails there with a 500 before any model
sees it; a missing key or a size that does not match the body is a ``KeyError``/``ValueError``
and a 500 too. :class:`DetectorDataPlane` replaces that one method (kserve's data plane, routes,
response encoding and model registry stay as they are): it checks the header and each input's
byte range, keeps every binary tensor as the bytes it came in, and answers each mistake with
kserve's ``InvalidInput`` (HTTP 400) naming the input and the problem. :func:`input_array` turns
an input into numpy the same way for binary and JSON requests.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from runtime.errors import first_line

__all__ = ["HEADER_LENGTH", "DetectorDataPlane", "decode_binary_request", "input_array"]

HEADER_LENGTH = "inference-header-content-length"
_DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT64": np.int64,
           "INT32": np.int32, "UINT8": np.uint8, "BOOL": np.bool_, "BYTES": np.object_}  # fmt: skip


def _field(item: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = item.get(key)
    if not isinstance(value, kind):
        raise InvalidInput(f"{where}: '{key}' missing or not a {kind.__name__}")
    return value


def decode_binary_request(body: bytes, header_length: str | None, model_name: str) -> InferRequest:
    """An ``InferRequest`` from a JSON header of ``header_length`` bytes and the binary tensors
    after it (Triton's binary extension; a plain JSON body is all header); binary tensors stay
    raw bytes.

    Raises:
        InvalidInput: the header length, the JSON, an input entry or a byte range is wrong.
    """
    try:
        length = int(header_length or "")
    except ValueError:
        raise InvalidInput(
            f"request: Inference-Header-Content-Length is {header_length!r}, not a byte count"
        ) from None
    if not 0 < length <= len(body):
        raise InvalidInput(
            f"request: Inference-Header-Content-Length {length} is outside the body "
            f"({len(body)} bytes)"
        )
    try:
        header = orjson.loads(body[:length])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request: the JSON header does not parse ({exc})") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput("request: the JSON header has no 'inputs' list")
    inputs, offset = [], length
    for index, item in enumerate(header["inputs"]):
        if not isinstance(item, dict):
            raise InvalidInput(f"request: inputs[{index}] is not an object")
        name = _field(item, "name", str, f"inputs[{index}]")
        where = f"input '{name}'"
        datatype = _field(item, "datatype", str, where)
        shape = _field(item, "shape", list, where)
        if not all(isinstance(dim, int) and not isinstance(dim, bool) for dim in shape):
            raise InvalidInput(f"{where}: shape {shape} is not a list of integers")
        parameters = item.get("parameters") or {}
        tensor = InferInput(name, shape, datatype, parameters=dict(parameters))
        if "data" in item:
            tensor.data = item["data"]
        elif "binary_data_size" in parameters:
            size = parameters["binary_data_size"]
            if not isinstance(size, int) or size < 0 or offset + size > len(body):
                raise InvalidInput(
                    f"{where}: binary_data_size {size!r} does not fit in the body "
                    f"({len(body) - offset} bytes left)"
                )
            tensor._raw_data = body[offset : offset + size]  # as kserve's own from_bytes does
            offset += size
        else:
            raise InvalidInput(f"{where}: neither 'data' nor parameters.binary_data_size given")
        inputs.append(tensor)
    if offset != len(body):
        raise InvalidInput(
            f"request: {len(body) - offset} bytes after the last input's binary data"
        )
    outputs = header.get("outputs")
    requested = None
    if isinstance(outputs, list):
        requested = [RequestedOutput(name=o.get("name"), parameters=o.get("parameters"))
                     for o in outputs if isinstance(o, dict)]  # fmt: skip
    return InferRequest(
        model_name=model_name,
        request_id=header.get("id"),
        parameters=header.get("parameters"),
        infer_inputs=inputs,
        request_outputs=requested,
    )


def input_array(tensor: InferInput) -> np.ndarray:
    """The input as numpy (BYTES: an object array of ``bytes``), checked against its shape.

    Raises:
        InvalidInput: an unknown datatype, or data that does not fill the declared shape.
    """
    where = f"input '{tensor.name}'"
    if tensor.datatype not in _DTYPES:
        raise InvalidInput(f"{where}: unknown datatype {tensor.datatype!r}")
    try:
        if tensor._raw_data is not None and tensor.datatype == "BYTES":
            array = _deserialize_bytes(tensor._raw_data)
        elif tensor._raw_data is not None:
            array = np.frombuffer(tensor._raw_data, dtype=_DTYPES[tensor.datatype])
        elif tensor.datatype == "BYTES":
            array = np.array([_as_bytes(v) for v in np.ravel(np.array(tensor.data, object))],
                             dtype=object)  # fmt: skip
        else:
            array = np.array(tensor.data, dtype=_DTYPES[tensor.datatype])
        return array.reshape(tensor.shape)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(
            f"{where}: {tensor.datatype} data does not fill shape {tensor.shape} "
            f"({first_line(exc)})"
        ) from None


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _deserialize_bytes(raw: bytes) -> np.ndarray:
    """Triton's BYTES layout: each element is a little-endian uint32 length, then the bytes."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ValueError(f"truncated element length at byte {offset}")
        size = int.from_bytes(raw[offset : offset + 4], "little")
        offset += 4
        if offset + size > len(raw):
            raise ValueError(f"element {len(items)} says {size} bytes, {len(raw) - offset} left")
        items.append(raw[offset : offset + size])
        offset += size
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


class DetectorDataPlane(DataPlane):
    """kserve's ``DataPlane`` with :func:`decode_binary_request` for binary-extension bodies
    and an answer to each request mistake (see the module docstring)."""

    def decode_inference_request(
        self, body: bytes | Any, headers: dict[str, str], model_name: str
    ) -> InferRequest:
        if isinstance(body, bytes):
            # no header: all of it is JSON (tritonclient sends JSON without a content type, so
            # it arrives here as bytes; kserve's own decoder refused it)
            header_length = headers.get(HEADER_LENGTH, str(len(body)))
            return decode_binary_request(body, header_length, model_name)
        return InferRequest.from_inference_request(body, model_name)
