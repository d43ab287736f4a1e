"""``python -m runtime.web MODEL.onnx``: serve the browser page (``examples/web``) with a model.

The page runs the model on the visitor's machine with onnxruntime-web. This server only hands
out files: the page's folder at ``/`` and the model and its sidecar at ``/models/<name>``
(those two files, nothing else of their folder), on 127.0.0.1 unless told otherwise, with the
cross-origin isolation headers (COOP ``same-origin``, COEP ``require-corp``) that WebAssembly
threads need (``SharedArrayBuffer``). A plain static server works too; the page then runs one
thread.

``--verify`` runs the browser check instead (:mod:`runtime.web_verify`): headless Chromium
runs the same tensors and files as :class:`runtime.Detector`, and the outcome is written into
the sidecar's ``verified.runtimes``, which the page reads before it runs a model.

Standard library only (``http.server``): the runtime-only install serves the page.
"""

from __future__ import annotations

import argparse
import http.server
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from runtime.sidecar import sidecar_path

__all__ = ["ISOLATION_HEADERS", "default_page", "main", "serve"]

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Module scripts and streaming WebAssembly compilation are refused under other types.
MIME_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm"}
MODELS = "/models/"


def default_page() -> Path:
    """``examples/web`` of the repository this ``runtime`` was imported from."""
    return Path(__file__).resolve().parents[1] / "examples" / "web"


def check_page(page: Path) -> None:
    """The page's folder with its npm dependencies installed, or a one-line ``ValueError``."""
    if not (page / "index.html").is_file():
        raise ValueError(
            f"{page}: no index.html (the page is examples/web of the rtdetr-deploy repository; "
            "pass --page DIR)"
        )
    if not (page / "node_modules" / "onnxruntime-web").is_dir():
        raise ValueError(
            f"{page}: onnxruntime-web is not installed; run `npm ci --ignore-scripts` there"
        )


def _handler(
    page: Path, files: dict[str, Path], routes: dict[str, Callable[[bytes | None], bytes]]
) -> type[http.server.SimpleHTTPRequestHandler]:
    """A request handler: ``routes`` (path -> body -> JSON reply), ``files``, then ``page``."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map: ClassVar[dict[str, str]] = {
            **http.server.SimpleHTTPRequestHandler.extensions_map,
            **MIME_TYPES,
        }

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(page), **kwargs)

        def end_headers(self) -> None:
            for key, value in ISOLATION_HEADERS.items():
                self.send_header(key, value)
            self.send_header("Cache-Control", "no-cache")  # a re-exported model is seen at once
            super().end_headers()

        def translate_path(self, path: str) -> str:
            name = urllib.parse.unquote(urllib.parse.urlsplit(path).path)
            if name.startswith(MODELS):
                # Only the files served by name; anything else under /models/ is not found.
                return str(files.get(name[len(MODELS) :], page / ".not-served"))
            return super().translate_path(path)

        def _route(self, body: bytes | None) -> bool:
            route = routes.get(urllib.parse.urlsplit(self.path).path)
            if route is None:
                return False
            reply = route(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            return True

        def do_GET(self) -> None:
            if not self._route(None):
                super().do_GET()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if not self._route(self.rfile.read(length)):
                self.send_error(404)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the page shows what happened; a log line per file is noise

    return Handler


@contextmanager
def serve(
    model: Path,
    *,
    page: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    routes: dict[str, Callable[[bytes | None], bytes]] | None = None,
    extra_files: dict[str, Path] | None = None,
) -> Iterator[str]:
    """Serve ``page`` with ``model`` and its sidecar in a thread; yields the page's URL with
    ``?model=`` set. ``routes`` and ``extra_files`` are for :mod:`runtime.web_verify`."""
    page = Path(page) if page is not None else default_page()
    check_page(page)
    model = Path(model)
    if not model.is_file():
        raise ValueError(f"{model}: no such model file")
    files = {
        model.name: model,
        sidecar_path(model).name: sidecar_path(model),
        **(extra_files or {}),
    }
    handler = _handler(page, files, routes or {})
    server = http.server.ThreadingHTTPServer((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        shown = f"[{host}]" if ":" in host else host
        query = urllib.parse.quote(f"{MODELS}{model.name}")
        yield f"http://{shown}:{server.server_address[1]}/?model={query}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.web",
        description="Serve the browser page (examples/web) with an exported model, "
        "cross-origin isolated (WebAssembly threads), or --verify it in headless Chromium.",
    )
    parser.add_argument("model", type=Path, help="exported .onnx file (its sidecar beside it)")
    parser.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free one")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    parser.add_argument("--page", type=Path, default=None, help="the page's folder (examples/web)")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="run the browser check in headless Chromium and record it in the sidecar",
    )
    parser.add_argument("--threads", type=int, default=None, help="WASM threads for --verify")
    parser.add_argument("--chromium", default=None, help="Chromium executable for --verify")
    parser.add_argument("--provider", default="wasm", help="wasm (default) or webgpu, for --verify")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted, or verify once (exit 0 passed, 1 failed, 2 a usage error)."""
    args = _parser().parse_args(argv)
    try:
        if args.verify:
            from runtime.web_verify import verify_in_browser

            outcome = verify_in_browser(
                args.model,
                page=args.page,
                threads=args.threads,
                chromium=args.chromium,
                provider=args.provider,
            )
            verdict = "PASSED" if outcome["passed"] else "FAILED: " + "; ".join(outcome["failures"])
            print(f"{args.model}: {outcome['runtime']} ({outcome['provider']}) {verdict}")
            print(f"recorded in {sidecar_path(args.model)}")
            return 0 if outcome["passed"] else 1
        with serve(args.model, page=args.page, host=args.host, port=args.port) as url:
            print(f"serving {args.model} at {url} (Ctrl-C stops)", flush=True)
            threading.Event().wait()
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
