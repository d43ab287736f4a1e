"""ASGI middlewares in front of kserve's app: the API key and the request body limit.

Both answer in the protocol's error shape, ``{"error": "..."}`` (what tritonclient raises as
``InferenceServerException``). The key is compared in constant time (``hmac.compare_digest``)
and never logged or echoed; health and readiness endpoints stay open so that Kubernetes probes
need no secret.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["OPEN_PATHS", "ApiKeyAuth", "BodyLimit", "error_response"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# liveness, readiness and model readiness (per model and version): the protocol's probes
OPEN_PATHS = re.compile(r"^/(v2/health/(live|ready)|v2/models/[^/]+(/versions/[^/]+)?/ready)?$")


async def error_response(
    send: Send, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    """Send ``{"error": message}`` with ``status``."""
    body = json.dumps({"error": message}).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), *extra],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class ApiKeyAuth:
    """Require ``Authorization: Bearer <key>`` on every path but the health endpoints."""

    def __init__(self, app: App, key: str) -> None:
        if not key:
            raise ValueError("the API key is empty")
        self.app = app
        self._key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or OPEN_PATHS.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            await error_response(
                send, 401, "missing 'Authorization: Bearer <key>' header (the server has an "
                "API key)", {"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
            return
        if not hmac.compare_digest(token.strip(), self._key):
            await error_response(send, 401, "invalid API key", {"WWW-Authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, by ``Content-Length`` or, for a
    chunked body, as soon as the bytes read pass the limit (the body is then replayed)."""

    def __init__(self, app: App, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = (
            f"request body is larger than the server's limit of {self.max_bytes} bytes "
            "(--max-body-mb)"
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await error_response(send, 413, message, {"Connection": "close"})
            return
        chunks, size = [], 0
        while True:
            event = await receive()
            if event["type"] != "http.request":  # the client went away
                chunks.append(event)
                break
            size += len(event.get("body", b""))
            if size > self.max_bytes:
                await error_response(send, 413, message, {"Connection": "close"})
                return
            chunks.append(event)
            if not event.get("more_body", False):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)
