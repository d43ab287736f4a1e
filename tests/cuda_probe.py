"""Does CUDA really work in this onnxruntime, decided without the code under test?

Tests of the provider fallback must know which outcome to expect *before* they look at what
``runtime`` did: a test that skips when the runtime reports CUDA in use (or when the strict CLI
exits 0) skips exactly when the check it guards is broken. :func:`cuda_works` answers from a
one-node graph run directly by onnxruntime, never through ``runtime``.
"""

from __future__ import annotations

import functools
import warnings

__all__ = ["CUDA", "cuda_works"]

CUDA = "CUDAExecutionProvider"


def _relu_model() -> bytes:
    """A serialized one-node (Relu) float32 ONNX model, made in memory."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "cuda_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    opset = [helper.make_opsetid("", 17)]
    return helper.make_model(graph, opset_imports=opset, ir_version=9).SerializeToString()


@functools.cache
def cuda_works() -> bool:
    """Whether an onnxruntime session asked for CUDA alone keeps CUDA and computes a Relu.

    onnxruntime-gpu offers CUDA in ``get_available_providers()`` even where it cannot run
    (no GPU, mismatched CUDA/cuDNN) and then silently runs on the CPU; only the session's
    ``get_providers()`` and a real run tell the truth.
    """
    import numpy as np
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            session = ort.InferenceSession(_relu_model(), providers=[CUDA])
            if session.get_providers()[0] != CUDA:
                return False
            x = np.array([[-1.0, 0.0, 2.0], [3.0, -4.0, 5.0]], np.float32)
            (y,) = session.run(None, {"x": x})
        except Exception:  # any failure to create or run it: CUDA does not work here
            return False
    return bool(np.array_equal(y, np.maximum(x, 0)))
