"""Runtime statistics: counters, the batch-size histogram, queue depth and latency percentiles.

One lock, taken once per batch (never per request in the batcher's hot path); a direct ``infer`` call
appends to a queue without it, counted at the next snapshot (or every FOLD_DIRECT_AT calls). Bounded
memory: latencies live in a fixed-size ring of recent samples.
"""

from __future__ import annotations

import threading
from array import array
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: How many recent latencies the percentiles are computed over.
LATENCY_WINDOW = 8192
#: Direct calls wait in a queue, without the lock, until a snapshot or this many have gathered.
FOLD_DIRECT_AT = 1024
PERCENTILES = (50.0, 90.0, 99.0)


class _Ring:
    """Fixed-size ring of float samples (seconds). A plain ``array`` rather than numpy: a direct ``infer`` call
    writes one sample, and on a core whose caches the backend's run has just filled, numpy's item assignment
    cost several microseconds where the array's costs well under one."""

    __slots__ = ("_buf", "_next", "_count")

    def __init__(self, size: int) -> None:
        self._buf = array("d", bytes(8 * size))
        self._next = 0
        self._count = 0

    def add(self, value: float) -> None:
        self._buf[self._next] = value
        self._next = (self._next + 1) % len(self._buf)
        self._count += 1

    def add_many(self, values: list[float]) -> None:
        """``add`` each value, in one or two slice writes (a batch's latencies at once)."""
        size, total, start = len(self._buf), len(values), self._next
        end = (start + total) % size
        if total >= size:  # only the last ``size`` survive, the newest ending just before ``end``
            tail = values[total - size:]
            self._buf[end:] = array("d", tail[:size - end])
            self._buf[:end] = array("d", tail[size - end:])
        elif start + total <= size:
            self._buf[start:start + total] = array("d", values)
        else:
            split = size - start
            self._buf[start:] = array("d", values[:split])
            self._buf[:total - split] = array("d", values[split:])
        self._next = end
        self._count += total

    def values(self) -> np.ndarray:
        n = min(self._count, len(self._buf))
        return np.frombuffer(self._buf, dtype=np.float64, count=n).copy()

    def clear(self) -> None:
        self._next = 0
        self._count = 0


def _percentiles_ms(samples: np.ndarray) -> dict[str, float]:
    if samples.size == 0:
        return {}
    out = {f"p{p:g}": float(np.percentile(samples, p) * 1e3) for p in PERCENTILES}
    out["mean"] = float(samples.mean() * 1e3)
    out["max"] = float(samples.max() * 1e3)
    return out


@dataclass
class StatsSnapshot:
    """A consistent copy of the counters at one moment; ``as_dict()`` is JSON-ready."""

    requests: int = 0          # requests accepted by submit()/infer_async()
    completed: int = 0         # requests that got their rows
    failed: int = 0            # requests whose batch raised, or whose rows were refused (NaN/inf)
    timed_out: int = 0         # requests dropped because their timeout passed before they ran
    cancelled: int = 0         # requests cancelled before they ran
    rejected: int = 0          # submit() refused: queue full (overload)
    batches: int = 0           # batches the batcher ran
    batch_rows: int = 0        # rows in those batches
    infer_calls: int = 0       # direct infer() calls (the batcher's batches not included)
    infer_rows: int = 0
    queue_depth: int = 0       # requests waiting right now
    max_queue_depth: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)   # rows per batch -> batches
    request_latency_ms: dict[str, float] = field(default_factory=dict)  # submit -> result
    infer_latency_ms: dict[str, float] = field(default_factory=dict)    # direct infer() calls

    @property
    def mean_batch_size(self) -> float:
        return self.batch_rows / self.batches if self.batches else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["batch_sizes"] = {str(k): v for k, v in sorted(self.batch_sizes.items())}
        data["mean_batch_size"] = round(self.mean_batch_size, 3)
        return data


class Stats:
    """Thread-safe counters shared by a model and its batcher."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self._lock = threading.Lock()
        # (rows, seconds) of direct calls not yet counted: deque.append is atomic, so a call records itself
        # without the lock (on a core the backend's run has just filled, 3 us where the locked update took 9)
        self._direct: deque[tuple[int, float]] = deque()
        self._window = window
        self._queue_depth_fn: Any = None
        self._observers: list[Any] = []
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._c: Counter[str] = Counter()
            self._infer_calls = 0  # plain ints: bumped on every direct call (a Counter's item update costs more)
            self._infer_rows = 0
            self._sizes: Counter[int] = Counter()
            self._max_depth = 0
            self._accepted = 0
            self._request_lat = _Ring(self._window)
            self._infer_lat = _Ring(self._window)
            self._direct.clear()

    def bind_queue_depth(self, fn: Any) -> None:
        """Read the live queue depth from the batcher when a snapshot is taken."""
        self._queue_depth_fn = fn

    # -- recording (hot paths) -----------------------------------------------------------------
    def record_infer(self, rows: int, seconds: float) -> None:
        direct = self._direct
        direct.append((rows, seconds))
        if len(direct) >= FOLD_DIRECT_AT:
            self._fold_direct()

    def _fold_direct(self) -> None:
        """Count the direct calls recorded so far (each exactly once: popped one by one under the lock)."""
        with self._lock:
            direct = self._direct
            for _ in range(len(direct)):
                rows, seconds = direct.popleft()
                self._infer_calls += 1
                self._infer_rows += rows
                self._infer_lat.add(seconds)

    def record_accepted(self, depth: int) -> None:
        # Called with the batcher's lock held, which serialises every writer of these two fields.
        self._accepted += 1
        if depth > self._max_depth:
            self._max_depth = depth

    def record_rejected(self) -> None:
        with self._lock:
            self._c["rejected"] += 1

    def record_dropped(self, timed_out: int = 0, cancelled: int = 0, refused: int = 0) -> None:
        """Requests that never ran: past their timeout, cancelled, or refused (NaN/inf rows: counted as failed)."""
        if timed_out or cancelled or refused:
            with self._lock:
                self._c["timed_out"] += timed_out
                self._c["cancelled"] += cancelled
                self._c["failed"] += refused

    def record_batch(self, rows: int, latencies: list[float], ok: bool, queued: list[float] | None = None,
                     compute_s: float | None = None) -> None:
        with self._lock:
            self._c["batches"] += 1
            self._c["batch_rows"] += rows
            self._sizes[rows] += 1
            if ok:
                self._c["completed"] += len(latencies)
                self._request_lat.add_many(latencies)
            else:
                self._c["failed"] += len(latencies)
        for observer in self._observers:  # outside the lock: an observer may take its own
            observer(rows, ok, queued or [], compute_s)

    @property
    def observed(self) -> bool:
        """Whether any batch observer listens (the batcher builds their per-request lists only then)."""
        return bool(self._observers)

    def add_observer(self, observer: Any) -> None:
        """``observer(rows, ok, queued_seconds_per_request, compute_seconds)`` after every batch (the
        server's Prometheus histograms); it must be quick and must not raise."""
        self._observers.append(observer)

    # -- reading -------------------------------------------------------------------------------
    def snapshot(self) -> StatsSnapshot:
        depth = int(self._queue_depth_fn()) if self._queue_depth_fn is not None else 0
        self._fold_direct()
        with self._lock:
            c = dict(self._c)
            c["infer_calls"], c["infer_rows"] = self._infer_calls, self._infer_rows
            sizes = dict(self._sizes)
            req = self._request_lat.values()
            inf = self._infer_lat.values()
            max_depth = self._max_depth
            accepted = self._accepted
        return StatsSnapshot(
            requests=accepted, completed=c.get("completed", 0), failed=c.get("failed", 0),
            timed_out=c.get("timed_out", 0), cancelled=c.get("cancelled", 0), rejected=c.get("rejected", 0),
            batches=c.get("batches", 0), batch_rows=c.get("batch_rows", 0), infer_calls=c.get("infer_calls", 0),
            infer_rows=c.get("infer_rows", 0), queue_depth=depth, max_queue_depth=max(max_depth, depth),
            batch_sizes=sizes, request_latency_ms=_percentiles_ms(req), infer_latency_ms=_percentiles_ms(inf),
        )
