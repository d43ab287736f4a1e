"""Command line of ``python -m runtime.serve``: flags -> :class:`~runtime.serve.app.ServeOptions`.

Every mistake in the flags, the model file or the key file is one ``error:`` line and exit
status 2, before anything listens. The API key comes from ``RTDETR_DEPLOY_API_KEY`` or
``--api-key-file`` (a file keeps it out of ``ps`` and shell history); it is never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from runtime.engines import BACKENDS
from runtime.errors import first_line
from runtime.extras import install_hint

__all__ = ["API_KEY_ENV", "main", "parse_args"]

API_KEY_ENV = "RTDETR_DEPLOY_API_KEY"


def _positive(kind: type) -> object:
    def parse(text: str) -> object:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.serve",
        description="Serve an exported model over the Open Inference Protocol (KServe v2 REST).",
    )
    add = parser.add_argument
    add("model", type=Path, help="the exported .onnx file")
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine)")
    add("--port", type=int, default=8000)
    add("--name", default="rtdetr", help="model name in /v2/models/{name}")
    add("--backend", choices=BACKENDS, default="onnxruntime", help="engine (runtime.engines)")
    add("--providers", help="onnxruntime execution providers, comma-separated (e.g. cuda,cpu)")
    add("--threads", type=_positive(int), help="engine threads per call (default: all cores)")
    add("--workers", type=_positive(int), default=1, help="engine calls at the same time")
    add("--max-batch", type=_positive(int), default=8, help="images per engine call, at most")
    wait = "wait this long for more requests to batch (default 0: batch what is queued)"
    add("--max-wait-ms", type=float, default=0.0, help=wait)
    add("--max-body-mb", type=_positive(float), default=20.0, help="request body limit")
    add("--max-pixels", type=_positive(int), default=40_000_000, help="per decoded image")
    add("--timeout", type=_positive(float), default=30.0, help="seconds per request")
    add("--grace", type=_positive(int), default=30, help="seconds to finish requests on SIGTERM")
    add("--api-key-file", type=Path, help=f"file holding the API key (or set {API_KEY_ENV})")
    return parser


def _api_key(path: Path | None) -> str | None:
    if path is None:
        return os.environ.get(API_KEY_ENV) or None
    try:
        key = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the API key file ({first_line(exc)})") from None
    if not key:
        raise ValueError(f"{path}: the API key file is empty")
    return key


def parse_args(argv: list[str] | None = None) -> tuple[Path, object]:
    """``(model path, ServeOptions)`` from the command line."""
    from runtime.serve.app import ServeOptions
    from runtime.serve.model import ServeLimits

    args = _parser().parse_args(argv)
    if args.max_wait_ms < 0:
        raise ValueError(f"--max-wait-ms: expected >= 0, got {args.max_wait_ms}")
    providers = tuple(p.strip() for p in args.providers.split(",")) if args.providers else None
    options = ServeOptions(
        host=args.host,
        port=args.port,
        name=args.name,
        backend=args.backend,
        providers=providers,
        threads=args.threads,
        workers=args.workers,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        limits=ServeLimits(max_pixels=args.max_pixels, timeout_s=args.timeout),
        grace_s=args.grace,
        api_key=_api_key(args.api_key_file),
    )
    return args.model, options


def main(argv: list[str] | None = None) -> int:
    """Parse, load, serve; one ``error:`` line and status 2 for a user's mistake."""
    argv = sys.argv[1:] if argv is None else argv
    # kserve's model_server module parses sys.argv when imported: hide ours from it.
    saved, sys.argv = sys.argv, sys.argv[:1]
    try:
        from runtime.serve.app import serve
    except ImportError as exc:
        print(
            f"error: python -m runtime.serve needs the [serve] extra ({first_line(exc)}): "
            f"{install_hint('serve')}",
            file=sys.stderr,
        )
        return 2
    finally:
        sys.argv = saved
    try:
        model, options = parse_args(argv)
        serve(str(model), options)  # type: ignore[arg-type]
    except (ValueError, OSError) as exc:  # FileNotFoundError, ModelLoadError, ImageError...
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 2
    return 0
