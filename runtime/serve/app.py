"""Assemble and run the server: kserve's REST server, data plane and model registry, ours in front.

What is kserve's: the FastAPI app and its Open Inference Protocol routes (health, readiness,
server and model metadata, model ready, infer), the model registry, response encoding (binary
outputs included), uvicorn and its graceful shutdown. What is ours, and why:

- ``RESTServer`` is started here, not through ``ModelServer.start``: that builds its
  ``RESTServer`` with ``host="0.0.0.0"`` hard-coded (and the gRPC server on ``[::]``), so a
  default start would listen on every interface. :class:`_LocalRESTServer` sets uvicorn's host
  to ``--host`` (127.0.0.1 unless told otherwise); gRPC is not started for the same reason.
- :class:`~runtime.serve.protocol.DetectorDataPlane` decodes binary-extension requests (see
  there: kserve's own decoder turns JPEG bytes into a 500).
- ``GET /v2/models/{name}`` answers kserve's metadata (declared inputs and outputs) plus
  ``parameters.rtdetr_deploy``, the sidecar document (label map, preprocessing, contract):
  kserve's response model would drop that key.
- ``InvalidInput`` answers 400 with one log line (kserve logs a traceback per bad request);
  a request past ``--timeout`` answers 504.
- SIGTERM/SIGINT: uvicorn stops accepting connections, finishes the requests in flight (up to
  ``--grace`` seconds) and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from typing import Any

from runtime.detector import Detector
from runtime.serve.batching import Batcher
from runtime.serve.model import DetectorModel, RequestTimeout, ServeLimits
from runtime.serve.protocol import DetectorDataPlane
from runtime.serve.security import ApiKeyAuth, BodyLimit

__all__ = ["ServeOptions", "build_model", "serve"]

logger = logging.getLogger("kserve.rtdetr_deploy")  # kserve configures its loggers


@dataclass(frozen=True)
class ServeOptions:
    """How the server listens, batches and limits (the CLI flags of ``python -m runtime.serve``).

    ``api_key`` is never printed: its ``repr`` shows only whether one is set.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    name: str = "rtdetr"
    backend: str = "onnxruntime"
    providers: tuple[str, ...] | None = None
    threads: int | None = None
    workers: int = 1
    max_batch: int = 8
    max_wait_ms: float = 0.0
    max_body_bytes: int = 20 * 1024 * 1024
    limits: ServeLimits = field(default_factory=ServeLimits)
    grace_s: int = 30
    api_key: str | None = field(default=None, repr=False)


def build_model(model: str, options: ServeOptions) -> DetectorModel:
    """Load the ``Detector`` on the chosen engine and wrap it for kserve."""
    providers = list(options.providers) if options.providers else None
    detector = Detector(model, providers, threads=options.threads, backend=options.backend)
    batcher = Batcher(
        detector.run,
        max_batch=options.max_batch,
        max_wait_s=options.max_wait_ms / 1000,
        workers=options.workers,
    )
    return DetectorModel(options.name, detector, batcher, options.limits)


def _rest_server_class() -> type:
    from kserve.errors import InvalidInput
    from kserve.protocol.rest.server import RESTServer
    from starlette.responses import JSONResponse

    async def invalid_input(_: Any, exc: Exception) -> JSONResponse:
        logger.warning("400: %s", exc)
        return JSONResponse({"error": str(exc)}, status_code=400)

    async def timed_out(_: Any, exc: Exception) -> JSONResponse:
        logger.warning("504: %s", exc)
        return JSONResponse({"error": str(exc)}, status_code=504)

    class _LocalRESTServer(RESTServer):
        """kserve's ``RESTServer`` on ``host`` instead of its hard-coded 0.0.0.0."""

        def __init__(self, *args: Any, host: str, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = host

        def _add_exception_handlers(self, app: Any) -> None:
            super()._add_exception_handlers(app)
            app.add_exception_handler(InvalidInput, invalid_input)
            app.add_exception_handler(RequestTimeout, timed_out)

    return _LocalRESTServer


def _add_routes(app: Any, dataplane: Any, model: DetectorModel) -> None:
    """Routes that must win over kserve's (Starlette matches in order; these come first)."""

    async def model_metadata(model_name: str) -> dict[str, Any]:
        metadata = await dataplane.model_metadata(model_name)  # ModelNotFound -> 404
        return {**metadata, "parameters": {"rtdetr_deploy": model.document}}

    app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"])


def serve(model: str, options: ServeOptions) -> None:
    """Load ``model`` and serve it until SIGTERM/SIGINT (see the module docstring)."""
    from kserve import logging as kserve_logging
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.model_repository import ModelRepository
    from kserve.model_server import app
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension

    kserve_logging.configure_logging()
    # kserve's trace logger writes a line per request (route timings): not by default
    logging.getLogger(kserve_logging.KSERVE_TRACE_LOGGER_NAME).setLevel(logging.WARNING)
    detector_model = build_model(model, options)
    registry = ModelRepository()
    registry.update(detector_model)
    dataplane = DetectorDataPlane(model_registry=registry)
    _add_routes(app, dataplane, detector_model)
    app.add_middleware(BodyLimit, max_bytes=options.max_body_bytes)
    if options.api_key:
        app.add_middleware(ApiKeyAuth, key=options.api_key)  # outermost: before the body
    rest = _rest_server_class()(
        FASTAPI_APP_IMPORT_STRING,
        dataplane,
        ModelRepositoryExtension(model_registry=registry),
        options.port,
        host=options.host,
        grace_period=options.grace_s,
        event_loop="auto",  # uvloop (a kserve dependency) where it is installed
    )
    detector = detector_model.detector
    logger.info(
        "serving %s as %r on http://%s:%d (%s, %s; batches of <= %d, wait %g ms, %d worker(s); "
        "API key %s)",
        model, options.name, options.host, options.port, detector.backend,
        ", ".join(detector.providers), options.max_batch, options.max_wait_ms, options.workers,
        "required" if options.api_key else "off",
    )  # fmt: skip
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        # uvicorn captures these while it serves and re-raises them afterwards: this handler
        # then only records them, so a graceful stop exits 0 instead of dying of the signal.
        signal.signal(sig, lambda number, _: stopping.append(number))
    asyncio.run(rest.start())
    logger.info("stopped (%s)", ", ".join(signal.Signals(s).name for s in stopping) or "done")
