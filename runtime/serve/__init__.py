"""``python -m runtime.serve MODEL.onnx``: the detector as an Open Inference Protocol endpoint.

The Open Inference Protocol (KServe v2: ``/v2/health/ready``, ``/v2/models/{name}``,
``POST /v2/models/{name}/infer``) is what Triton, KServe, MLServer and OpenVINO Model Server
speak, and ``tritonclient`` speaks it to all of them: a client written against this server works
unchanged against Triton serving ``python -m export --triton``'s repository (tensor path).

Built on kserve 0.21 (``pip install 'rtdetr-deploy[serve]'``), not on MLServer 1.7, because
tritonclient sends every tensor with Triton's binary extension by default and MLServer's REST
server has none (MLServer issue 324): a stock client cannot talk to it, and the JSON fallback
costs more than the model. Measured here for one 640x640 FP32 ``images`` tensor (Intel Xeon,
Emerald Rapids, 2 cores, load average 16): 4.9 MB with the binary extension, read by the server
with ``np.frombuffer`` in 1 ms; 23.7 MB as JSON, 18.6 s for tritonclient to encode and 0.9 s
for the server to parse (orjson + numpy). Install size is no tie-breaker (the issue measured
451 MB for kserve, 326 MB for MLServer; kserve's adds the Kubernetes client and pandas), and
MLServer's adaptive batching is the one thing kserve's Python server lacks. kserve has the
extension (with a BYTES bug fixed in :mod:`runtime.serve.protocol`), its REST server is FastAPI
+ uvicorn, and it installs without torch. What it lacks (a batcher in the Python server, a
configurable bind address) is added in :mod:`runtime.serve.batching` and :mod:`runtime.serve.app`.
MLServer itself was not installed or timed here.

The server, the benchmark and in-process use run the same ``runtime.Detector`` on the same
engine seam (``--backend onnxruntime|openvino``, :mod:`runtime.engines`).
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """The command line (see ``python -m runtime.serve --help``)."""
    from runtime.serve.cli import main as cli_main

    return cli_main(argv)
