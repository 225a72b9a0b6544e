"""The HTTP middleware for the life of a request: in-flight count, body deadline and the drain."""

from __future__ import annotations

import asyncio
from typing import Any

from .failures import SHUTTING_DOWN, ServeError
from .responses import error_response
from .service import ServerState


class DrainGuard:
    """ASGI middleware for the life of a request: counts it while in flight, bounds the time its body may take
    (``limits.body_timeout_s``: then 408), and carries the drain. Once draining (the first SIGTERM), every
    response says ``Connection: close`` so clients reconnect elsewhere while still being served; once the drain
    delay is over (``refusing``), new requests get 503 with Retry-After, what is being sent of their body read
    first (up to :data:`REFUSED_BODY_BYTES`) so that the answer reaches the client rather than a reset. Health and
    metrics keep answering, so probes see the drain."""

    REFUSED_BODY_BYTES = 1 << 20

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if self.state.refusing and not path.startswith(("/v2/health", "/metrics")):
            await self._discard_body(receive)
            response = error_response(503, SHUTTING_DOWN, {"Retry-After": "5", "Connection": "close"})
            await response(scope, receive, send)
            return
        self.state.enter()
        try:
            await self.app(scope, self._timed(receive), self._closing(send))
        finally:
            self.state.leave()

    def _timed(self, receive: Any) -> Any:
        """``receive`` with the body's deadline: a ServeError(408) once it passes before the body is complete."""
        timeout = self.state.limits.body_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout
        complete = False

        async def receive_in_time() -> Any:
            nonlocal complete
            if complete:  # after the body: waiting for a disconnect is not bounded
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except asyncio.TimeoutError:
                raise ServeError(408, f"the request body did not arrive within {timeout:g} s "
                                      "(--body-timeout-seconds)", {"Connection": "close"}) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return receive_in_time

    def _closing(self, send: Any) -> Any:
        """``send`` that adds ``Connection: close`` to a response started while the server drains."""

        async def send_closing(message: Any) -> None:
            if message["type"] == "http.response.start" and self.state.draining:
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return send_closing

    async def _discard_body(self, receive: Any) -> None:
        """Read what the client sends of a refused request's body, up to a bound and for at most a second."""

        async def discard() -> None:
            size = 0
            while size <= self.REFUSED_BODY_BYTES:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                size += len(message.get("body", b""))

        try:
            await asyncio.wait_for(discard(), 1.0)
        except asyncio.TimeoutError:
            pass
