"""MLPerf's *server* scenario on the runtime: N concurrent clients, each submitting one image at a time
through the model's dynamic batcher (``Model.submit``), as requests reach a server.

Per window: images per second over all clients, and each request's latency (submit to result).
The scenario's figure is the highest throughput whose p99 stays under the latency bound (MLPerf's
bound for ResNet is 15 ms).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from .measure import Window


class ServerWorkload:
    """``clients`` threads, each looping ``model.submit(one image).result()`` for a window."""

    def __init__(self, model: Any, images: np.ndarray, clients: int) -> None:
        if clients < 1:
            raise ValueError("clients must be >= 1")
        self.model = model
        self.clients = clients
        # one distinct C-contiguous (1, C, H, W) request per client, made once
        self.requests = [np.ascontiguousarray(images[i % len(images)][None]) for i in range(clients)]

    def warmup(self, calls: int, seconds: float) -> None:
        self.window(max(seconds, 0.2))

    def window(self, seconds: float) -> Window:
        stop = threading.Event()
        latencies: list[list[float]] = [[] for _ in range(self.clients)]
        errors: list[BaseException] = []
        barrier = threading.Barrier(self.clients + 1)
        submit, clock = self.model.submit, time.perf_counter

        def client(i: int) -> None:
            x, mine = self.requests[i], latencies[i]
            try:
                barrier.wait()
                while not stop.is_set():
                    t0 = clock()
                    submit(x).result()
                    mine.append(clock() - t0)
            except BaseException as exc:  # noqa: BLE001 -- reported once the window ends
                errors.append(exc)
                stop.set()

        threads = [threading.Thread(target=client, args=(i,), daemon=True, name=f"bench-client-{i}")
                   for i in range(self.clients)]
        for t in threads:
            t.start()
        barrier.wait()
        start = clock()
        stop.wait(seconds)
        stop.set()
        for t in threads:
            t.join()
        elapsed = clock() - start
        if errors:
            raise errors[0]
        merged = np.fromiter((v for lat in latencies for v in lat), dtype=np.float64)
        return Window(items=int(merged.size), seconds=elapsed, latencies=merged)


def best_under_bound(points: list[tuple[int, float, float]], bound_ms: float) -> tuple[int, float] | None:
    """(concurrency, throughput) of the highest throughput whose p99 is under ``bound_ms``.

    ``points``: (concurrency, throughput, p99 ms) per measured concurrency.
    """
    ok = [(c, t) for c, t, p99 in points if p99 < bound_ms]
    return max(ok, key=lambda ct: ct[1]) if ok else None
