"""Running the server: uvicorn on the app (with header timeouts), the gRPC server beside it, the models warmed up in
the background, and a rollout-safe stop on SIGTERM/SIGINT.

The stop, all within ``grace_s`` of the first signal (``--grace-seconds``; Kubernetes' terminationGracePeriodSeconds
is 30 s by default):

1. **Draining**, for ``drain_delay_s``: readiness (HTTP ``/v2/health/ready``, gRPC ``ServerReady``) answers not
   ready while every request on both transports is still served, so load balancers stop routing here (Kubernetes
   takes a few seconds to remove a terminating pod from its endpoints). Every HTTP response says
   ``Connection: close`` and keep-alive connections left idle are closed, so clients reconnect elsewhere.
2. **Refusing**: new requests get 503 with ``Retry-After`` (gRPC UNAVAILABLE), which clients retry elsewhere; the
   listeners stay open while the requests in flight finish, so no client meets a reset or a refused connection.
3. **Stopping**, once nothing is in flight: uvicorn closes its listener and connections, the gRPC server stops (no
   call is left for its ``stop(grace)`` to cancel), the models close, and the process exits 0.

The drain delay takes at most half the grace period (``--drain-delay-seconds 30 --grace-seconds 30`` drains for
15 s), so the requests in flight keep the other half. If work is still in flight :data:`CLOSE_RESERVE_S` before the
end, the models close: a batch waiting to fill runs at once, and a request that cannot start in time fails with
503/UNAVAILABLE ("shutting down") instead of being cut. A batch still running at the end of the grace period cannot
be interrupted: the process exits without it (Kubernetes would kill it then anyway). SIGINT (Ctrl-C) skips the drain
delay; a second SIGTERM ends the drain delay at once; a second SIGINT exits at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

import uvicorn

from ..errors import TrtInferError
from .app import create_app
from .middleware import DrainGuard
from .metrics import Metrics
from .options import Limits, ServeOptions, Shutdown
from .registry import ModelSet
from .service import ServerState

log = logging.getLogger(__name__)

#: Keep-alive connections idle this long are closed: longer than the idle timeout of common load balancers
#: (60 s on AWS ALB), so the balancer closes first and never sends a request on a connection being closed.
KEEP_ALIVE_S = 75.0
#: Once the drain starts, a keep-alive connection idle this long (at most) is closed so its client reconnects
#: elsewhere; connections in use close after their next response (``Connection: close``).
DRAIN_IDLE_S = 1.0
#: The models close this long before the end of the grace period if work is still in flight (at most a quarter).
CLOSE_RESERVE_S = 1.0
#: What is left of the grace period for the process to exit once everything is closed (at most a tenth).
EXIT_MARGIN_S = 0.5


@dataclass(frozen=True)
class DrainPlan:
    """When each phase of a stop begins (``time.monotonic()`` seconds)."""

    refuse_at: float  # draining ends: new requests are refused
    close_at: float   # the models close if work is still in flight
    end: float        # every wait ends; then the process exits

    @classmethod
    def starting(cls, shutdown: Shutdown, now: float) -> DrainPlan:
        grace = shutdown.grace_s
        end = now + grace - min(EXIT_MARGIN_S, grace / 10)
        return cls(refuse_at=now + min(shutdown.drain_delay_s, grace / 2),
                   close_at=end - min(CLOSE_RESERVE_S, grace / 4), end=end)


# -- HTTP connections: a header timeout, and idle connections closed during a drain ---------------------------
class _Timeouts:
    """What the HTTP protocol classes add to uvicorn's: a request's headers must arrive within ``header_timeout_s``
    of its first byte (or of the connection, for the first request), else 408 and the connection closes; uvicorn's
    keep-alive timeout covers only the time between requests. ``drain()`` closes the connection once idle."""

    header_timeout_s: float = Limits.header_timeout_s
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]  # uvicorn's protocol, after this mixin
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # else a response is being written: just close
            body = json.dumps({"error": f"the request headers did not arrive within {self.header_timeout_s:g} s"
                                        " (--header-timeout-seconds)"}).encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        self.transport.close()

    def drain(self, idle_s: float) -> None:
        """The server is draining: close this connection if it is still idle after ``idle_s``."""
        self.loop.call_later(idle_s, self._close_if_idle)

    def _close_if_idle(self) -> None:
        idle = (self.cycle is None or self.cycle.response_complete) and self._header_timer is None
        if idle and not self.transport.is_closing():
            self.transport.close()


def http_protocol(limits: Limits, parser: str = "auto") -> tuple[type[asyncio.Protocol], str]:
    """uvicorn's HTTP protocol with :class:`_Timeouts`: httptools where it is installed (uvicorn's faster parser;
    it is not a dependency of trtinfer), else h11 (a dependency of uvicorn); ``parser="h11"`` chooses h11.
    Returns the class and the parser's name."""
    if parser != "h11":
        try:
            return _httptools_protocol(limits), "httptools"
        except ImportError:
            pass
    return _h11_protocol(limits), "h11"


def _httptools_protocol(limits: Limits) -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpTools(_Timeouts, HttpToolsProtocol):
        header_timeout_s = limits.header_timeout_s

        def on_message_begin(self) -> None:  # the first bytes of a request
            super().on_message_begin()
            self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._disarm_header_timer()
            super().on_headers_complete()

    return HttpTools


def _h11_protocol(limits: Limits) -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class H11(_Timeouts, H11Protocol):
        header_timeout_s = limits.header_timeout_s

        def handle_events(self) -> None:
            if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
                self._arm_header_timer()  # the first bytes of a request
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:
                self._disarm_header_timer()  # its headers are complete

    return H11


# -- the server and its stop ----------------------------------------------------------------------------------
class _Server(uvicorn.Server):
    """uvicorn with its signal handling replaced by the drain (see the module's docstring); it also stops the gRPC
    server and closes the models, so that all of the stop runs under its signal handlers."""

    def __init__(self, config: uvicorn.Config, state: ServerState, shutdown: Shutdown, grpc_server: Any) -> None:
        super().__init__(config)
        self.state, self.plan_for, self.grpc_server = state, shutdown, grpc_server
        self.plan: DrainPlan | None = None
        self.announced = False
        self.closer: threading.Thread | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:  # a signal handler: set flags, no more
        now = time.monotonic()
        if self.plan is None:  # Ctrl-C at a terminal has no load balancer to wait for: no drain delay
            shutdown = replace(self.plan_for, drain_delay_s=0.0) if sig == signal.SIGINT else self.plan_for
            self.plan = DrainPlan.starting(shutdown, now)
            self.state.draining = True
            self.state.refusing = self.plan.refuse_at <= now  # no drain delay
            return
        if sig == signal.SIGINT:  # a second Ctrl-C: exit at once
            self.force_exit = self.should_exit = True
            self.plan = DrainPlan(now, now, now)
        elif now < self.plan.refuse_at:  # a second SIGTERM: end the drain delay now
            self.plan = DrainPlan(now, self.plan.close_at, self.plan.end)

    async def on_tick(self, counter: int) -> bool:
        """Every 0.1 s: move the drain on (these flags are only ever set here or in ``handle_exit``)."""
        plan, state = self.plan, self.state
        if plan is not None and not self.should_exit:
            now = time.monotonic()
            if not self.announced:
                self.announced = True
                log.warning("draining: readiness 503, %d request(s) in flight, new ones served for %.1f s more",
                            state.inflight, plan.refuse_at - now)
                for connection in list(self.server_state.connections):
                    if isinstance(connection, _Timeouts):
                        connection.drain(min(DRAIN_IDLE_S, (plan.refuse_at - now) / 2))
            if not state.refusing and now >= plan.refuse_at:
                state.refusing = True
                log.warning("drain delay over: refusing new requests (503/UNAVAILABLE), %d in flight", state.inflight)
            if now >= plan.close_at:
                self._close_models(plan)
            if (state.refusing and state.inflight == 0) or now >= plan.close_at:
                self.should_exit = True
        return await super().on_tick(counter)

    def _close_models(self, plan: DrainPlan) -> None:
        """Close the models in a thread (once), within what is left of the plan."""
        if self.closer is not None:
            return
        if self.state.inflight:
            log.warning("%d request(s) still in flight %.1f s before the end of the grace period: closing the "
                        "models (batches run now, requests that cannot start fail with 503/UNAVAILABLE)",
                        self.state.inflight, plan.end - time.monotonic())
        self.closer = threading.Thread(target=close_models, args=(self.state.models, plan.end),
                                       name="trtinfer-close", daemon=True)
        self.closer.start()

    async def shutdown(self, sockets: Any = None) -> None:
        plan = self.plan or DrainPlan(*[time.monotonic()] * 3)  # no signal (a failed start): stop at once
        self.config.timeout_graceful_shutdown = max(0.1, plan.end - time.monotonic())  # type: ignore[assignment]
        await super().shutdown(sockets)  # HTTP: listener and connections closed, requests finished
        while self.state.inflight and time.monotonic() < plan.end and not self.force_exit:  # gRPC calls
            await asyncio.sleep(0.02)
        if self.grpc_server is not None:  # nothing is in flight: its grace only lets other RPCs finish
            stopped = self.grpc_server.stop(grace=max(0.0, min(1.0, plan.end - time.monotonic())))
            while not stopped.is_set() and time.monotonic() < plan.end + 0.2:
                await asyncio.sleep(0.02)
        self._close_models(plan)
        while self.closer is not None and self.closer.is_alive() and time.monotonic() < plan.end:
            await asyncio.sleep(0.02)


def close_models(models: ModelSet, end: float) -> None:
    """Close every model by ``end`` (monotonic): accepted requests finish, those that cannot start fail."""
    for served in models.models.values():
        try:
            served.model.close(timeout=max(0.0, end - time.monotonic()))
        except TrtInferError as exc:  # a batch still running: the backend stays open under it
            log.warning("closing %s: %s", served.name, exc.one_line())
        except Exception:  # noqa: BLE001 -- close every model even if one fails
            log.exception("closing %s failed", served.name)


def serve(models: ModelSet, options: ServeOptions) -> int:
    """Serve until a signal; returns the exit code (0 after a graceful shutdown)."""
    state = ServerState(models=models, metrics=Metrics(models), limits=options.limits)
    http_app = create_app(state)
    app = DrainGuard(http_app, state)
    protocol, parser = http_protocol(options.limits)
    # The protocol and the loop are chosen here, not by what happens to be installed: asyncio's own loop, and
    # httptools (or h11) with the timeouts above. No WebSockets are served.
    config = uvicorn.Config(app, host=options.host, port=options.port, log_level=options.log_level,
                            lifespan="off", access_log=False, loop="asyncio", http=protocol, ws="none",
                            timeout_keep_alive=int(KEEP_ALIVE_S))
    log.debug("HTTP parser: %s", parser)
    warm = threading.Thread(target=models.warm_up, name="trtinfer-warm-up", daemon=True)
    warm.start()
    grpc_server = None
    if options.grpc_port is not None:
        from .grpc_service import start_grpc

        grpc_server = start_grpc(state, options.host, options.grpc_port)
    if options.metrics_port is not None:
        state.metrics.serve_triton(options.host, options.metrics_port)
    server = _Server(config, state, options.shutdown, grpc_server)
    try:
        server.run()
    finally:
        if server.closer is None:  # uvicorn never got to its shutdown (it failed to start: SystemExit)
            if grpc_server is not None:
                grpc_server.stop(grace=0)
            close_models(models, time.monotonic())
    if state.inflight or (server.closer is not None and server.closer.is_alive()):
        # The grace period is over with a batch still running: it cannot be interrupted, and the interpreter's
        # exit would wait for the threads serving it. Exit without them.
        log.warning("the grace period is over with %d request(s) still running; exiting without them", state.inflight)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    http_app.state.close()  # the JSON parser process
    return 0
