"""Running the server: uvicorn on the app, the models warmed up in the background, and a graceful
shutdown on SIGTERM/SIGINT.

On the first signal readiness turns 503 and new requests are refused (503) while the ones in
flight finish; then uvicorn stops, the models close, and the process exits 0, all within
``grace_seconds`` (Kubernetes' default termination grace period is 30 s). A second SIGINT forces
an immediate exit.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from types import FrameType
from typing import Any

import uvicorn

from .app import DrainGuard, create_app
from .metrics import Metrics
from .registry import ModelSet
from .options import ServeOptions
from .service import ServerState

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn, with its signal handling replaced by a drain: flag first, stop once nothing is in flight."""

    def __init__(self, config: uvicorn.Config, state: ServerState, grace_seconds: float) -> None:
        super().__init__(config)
        self.state, self.grace_seconds = state, grace_seconds
        self.drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:  # called in the main thread
        if self.drain_deadline is not None:  # a second signal: stop now
            self.should_exit = True
            if sig == signal.SIGINT:
                self.force_exit = True
            return
        log.warning("received %s: draining (readiness 503, new requests refused, %d in flight)",
                    signal.Signals(sig).name, self.state.inflight)
        self.state.draining = self.state.refusing = True
        self.drain_deadline = time.monotonic() + self.grace_seconds

    async def on_tick(self, counter: int) -> bool:
        """Every 0.1 s: once draining, stop when nothing is in flight or the grace period is spent."""
        deadline = self.drain_deadline
        if deadline is not None and not self.should_exit and (self.state.inflight == 0
                                                               or time.monotonic() >= deadline):
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: Any = None) -> None:
        if self.drain_deadline is not None:  # what is left of the grace period bounds the rest
            self.config.timeout_graceful_shutdown = max(1, math.ceil(self.drain_deadline - time.monotonic()))
        await super().shutdown(sockets)


def serve(models: ModelSet, options: ServeOptions) -> int:
    """Serve until a signal; returns the exit code (0 after a graceful shutdown)."""
    state = ServerState(models=models, metrics=Metrics(models), limits=options.limits)
    app = DrainGuard(create_app(state), state)
    grace = options.shutdown.grace_s
    config = uvicorn.Config(app, host=options.host, port=options.port, log_level=options.log_level,
                            lifespan="off", timeout_graceful_shutdown=int(grace) or 1, access_log=False)
    server = _Server(config, state, grace)
    warm = threading.Thread(target=models.warm_up, name="trtinfer-warm-up", daemon=True)
    warm.start()
    grpc_server = None
    if options.grpc_port is not None:
        from .grpc_service import start_grpc

        grpc_server = start_grpc(state, options.host, options.grpc_port)
    if options.metrics_port is not None:
        state.metrics.serve_triton(options.host, options.metrics_port)
    try:
        server.run()
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=max(0.0, (server.drain_deadline or time.monotonic()) - time.monotonic())).wait()
        remaining = None if server.drain_deadline is None else max(0.1, server.drain_deadline - time.monotonic())
        models.close(timeout=remaining)
    return 0
