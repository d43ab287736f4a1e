"""``python -m runtime.serve MODEL.onnx``: the detector as an Open Inference Protocol endpoint.

The Open Inference Protocol (KServe v2: ``/v2/health/ready``, ``/v2/models/{name}``,
``POST /v2/models/{name}/infer``) is what Triton, KServe, MLServer and OpenVINO Model Server
speak, and ``tritonclient`` speaks it to all of them: a client written against this server works
unchanged against Triton serving ``python -m export --triton``'s repository (tensor path).

Built on kserve 0.21 (``pip install 'rtdetr-deploy[serve]'``), not on MLServer 1.7, because
tritonclient sends every tensor with Triton's binary extension by default and MLServer's REST
server has none (MLServer issue 324): a stock client cannot talk to it, and the JSON fallback
costs more than the model (measured here: one 640x640 FP32 ``images`` tensor is 4.9 MB binary
against ~20 MB and tens of ms of JSON; numbers in the README). kserve has the extension (with a
BYTES bug fixed in :mod:`runtime.serve.protocol`), its REST server is FastAPI + uvicorn, and it
installs without torch. What it lacks (a batcher in the Python server, a configurable bind
address) is added in :mod:`runtime.serve.batching` and :mod:`runtime.serve.app`.

The server, the benchmark and in-process use run the same ``runtime.Detector`` on the same
engine seam (``--backend onnxruntime|openvino``, :mod:`runtime.engines`).
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """The command line (see ``python -m runtime.serve --help``)."""
    from runtime.serve.cli import main as cli_main

    return cli_main(argv)
