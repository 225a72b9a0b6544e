"""Dynamic batching: requests from many threads or coroutines become one batch, run, scattered back.

* bounded: at most ``max_queue`` requests wait in the queue (plus at most one assembled batch per
  spare worker); beyond that :meth:`DynamicBatcher.submit` fails at once with
  :class:`~trtinfer.errors.OverloadedError` (no unbounded memory);
* a batch closes when it holds ``max_batch`` rows, or when its oldest request has waited
  ``max_delay_s`` and a run slot is free; a request larger than ``max_batch`` runs as a batch of
  its own (the backend splits it);
* a request not yet running when its timeout passes fails with :class:`RequestTimeout` and never
  runs; a cancelled future is dropped before it runs; an error in one batch fails only that batch;
* :meth:`close` finishes every accepted request, then rejects new ones.

Runs are pipelined: ``concurrency`` batches run at once (the backend's limit) and one more worker
thread gathers and assembles the next batch meanwhile; a worker hands its run slot on before it
hands results back, so the next batch starts while the last one's callers are woken. The gaps
between runs, when the cores would idle on Python work, shrink to a hand-over (measured with a
5 ms stand-in model and 64 clients: 94 % of the ideal rate, against 70 % unpipelined).

Expiry and cancellation are settled when a batch gets its run slot, so a request times out at the
latest when the batch it was gathered into could start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from ..errors import OverloadedError, TrtInferError
from .stats import Stats

log = logging.getLogger(__name__)


class RequestTimeout(TrtInferError, TimeoutError):
    """A request waited past its timeout and was dropped before it ran."""


class ModelClosedError(TrtInferError, RuntimeError):
    """The model (or its batcher) is closed and accepts no new work."""


class _Request:
    __slots__ = ("x", "rows", "single", "future", "t_submit", "deadline")

    def __init__(self, x: np.ndarray, rows: int, single: bool, future: Future, t_submit: float,
                 deadline: float | None) -> None:
        self.x = x
        self.rows = rows
        self.single = single
        self.future = future
        self.t_submit = t_submit
        self.deadline = deadline


class DynamicBatcher:
    """Gathers validated requests into batches for ``run(batch) -> outputs`` (a fresh array per call).

    ``run`` is called from at most ``concurrency`` threads at once; with ``pipeline`` one more
    worker assembles the next batch meanwhile. Each worker owns a staging buffer of ``max_batch``
    rows that batches are assembled in, so gathering allocates nothing.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], *, row_shape: tuple[int, ...],
                 dtype: Any = np.float32, max_batch: int, max_delay_s: float, max_queue: int,
                 timeout_s: float | None = None, concurrency: int = 1, pipeline: bool = True,
                 stats: Stats | None = None, name: str = "trtinfer-batcher") -> None:
        if max_batch < 1 or max_queue < 1 or concurrency < 1 or max_delay_s < 0:
            raise ValueError("max_batch, max_queue and concurrency must be >= 1 and max_delay_s >= 0")
        self._run = run
        self._row_shape = tuple(row_shape)
        self._dtype = np.dtype(dtype)
        self.max_batch = int(max_batch)
        self.max_delay_s = float(max_delay_s)
        self.max_queue = int(max_queue)
        self.timeout_s = timeout_s
        self.concurrency = int(concurrency)
        self.stats = stats if stats is not None else Stats()
        self.stats.bind_queue_depth(self.queue_depth)
        lock = threading.Lock()
        self._cond = threading.Condition(lock)       # the gathering worker waits here for requests
        self._slot_free = threading.Condition(lock)  # assembled batches wait here for a run slot
        self._free_slots = self.concurrency
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._closed = False
        self._gather_lock = threading.Lock()  # one worker gathers at a time; the others run
        workers = self.concurrency + (1 if pipeline else 0)
        self._threads = [threading.Thread(target=self._worker, name=f"{name}-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    # -- client side -----------------------------------------------------------------------------
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, x: np.ndarray, rows: int, single: bool = False, timeout: float | None = None) -> Future:
        """Queue ``x`` (already checked: C-contiguous, right dtype and row shape, ``rows >= 1``)."""
        now = time.perf_counter()
        timeout = self.timeout_s if timeout is None else timeout
        future: Future = Future()
        request = _Request(x, rows, single, future, now, None if timeout is None else now + timeout)
        with self._cond:
            if self._closed:
                raise ModelClosedError("the model is closed and accepts no new requests",
                                       hint="submit before close(), or load the artifact again")
            depth = len(self._queue)
            if depth < self.max_queue:
                self._queue.append(request)
                before = self._queued_rows
                self._queued_rows = before + rows
                self.stats.record_accepted(depth + 1)
                # Wake the gathering worker only when it can act: the queue stopped being empty, or
                # a full batch is now waiting. Fewer wake-ups leave the cores to the backend.
                if depth == 0 or before < self.max_batch <= self._queued_rows:
                    self._cond.notify()
                return future
        self.stats.record_rejected()
        raise OverloadedError(f"the request queue is full ({self.max_queue} requests waiting)",
                              hint="retry later, add capacity, or load with a larger max_queue")

    def close(self, wait: bool = True, timeout: float | None = None) -> None:
        """Reject new requests; with ``wait``, return once every accepted request has finished."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            current = threading.current_thread()
            deadline = None if timeout is None else time.monotonic() + timeout
            for thread in self._threads:
                if thread is not current:
                    thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # -- worker side -----------------------------------------------------------------------------
    def _gather(self) -> list[_Request] | None:
        """Wait for the next batch's requests, or None when closed and drained. Requests already
        cancelled are skipped here; expiry and cancellation are settled when a run slot is held."""
        cond, queue = self._cond, self._queue
        with cond:
            while not queue:
                if self._closed:
                    return None
                cond.wait()
            # Close the batch when it is full, or when its oldest request has waited max_delay and
            # a run slot is free (while every slot is busy, waiting longer only fills it better).
            deadline = queue[0].t_submit + self.max_delay_s
            while self._queued_rows < self.max_batch and not self._closed:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    if self._free_slots > 0:
                        break
                    cond.wait()  # woken by a freed slot, a full batch, or close()
                else:
                    cond.wait(remaining)
            taken: list[_Request] = []
            rows = 0
            while queue:
                request = queue[0]
                if taken and rows + request.rows > self.max_batch:
                    break
                queue.popleft()
                self._queued_rows -= request.rows
                taken.append(request)
                rows += request.rows
            return taken

    def _settle(self, taken: list[_Request]) -> list[_Request]:
        """Mark the batch's requests running; fail the expired, drop the cancelled. Returns the rest."""
        now = time.perf_counter()
        keep: list[_Request] = []
        timed_out = cancelled = 0
        for request in taken:
            if not request.future.set_running_or_notify_cancel():
                cancelled += 1
            elif request.deadline is not None and now > request.deadline:
                timed_out += 1
                waited = (now - request.t_submit) * 1e3
                request.future.set_exception(RequestTimeout(
                    f"request of {request.rows} row(s) waited {waited:.1f} ms, past its timeout, before it could run",
                    hint="raise the timeout, lower the load, or add capacity"))
            else:
                keep.append(request)
        if timed_out or cancelled:
            self.stats.record_dropped(timed_out=timed_out, cancelled=cancelled)
        return keep

    def _assemble(self, taken: list[_Request], staging: np.ndarray | None) -> tuple[np.ndarray, int, np.ndarray | None]:
        if len(taken) == 1:
            return taken[0].x, taken[0].rows, staging
        rows = sum(r.rows for r in taken)
        if staging is None:
            staging = np.empty((self.max_batch, *self._row_shape), dtype=self._dtype)
        batch = staging[:rows]
        np.concatenate([r.x for r in taken], axis=0, out=batch)
        return batch, rows, staging

    def _acquire_slot(self) -> None:
        with self._slot_free:
            while self._free_slots == 0:
                self._slot_free.wait()
            self._free_slots -= 1

    def _release_slot(self) -> None:
        with self._slot_free:
            self._free_slots += 1
            self._slot_free.notify()
            self._cond.notify()  # a gatherer holding back a partial batch for a slot may go now

    def _worker(self) -> None:
        staging: np.ndarray | None = None
        stats = self.stats
        while True:
            with self._gather_lock:
                taken = self._gather()
            if taken is None:
                return
            live = [r for r in taken if not r.future.cancelled()]
            if len(live) != len(taken):
                stats.record_dropped(cancelled=len(taken) - len(live))
                taken = live
            if not taken:
                continue
            # Assemble before taking a run slot: with every slot busy, this overlaps a running batch.
            batch, rows, staging = self._assemble(taken, staging)
            self._acquire_slot()
            kept = self._settle(taken)
            if len(kept) != len(taken):  # rare: some expired or were cancelled while waiting for the slot
                taken = kept
                if not taken:
                    self._release_slot()
                    continue
                batch, rows, staging = self._assemble(taken, staging)
            try:
                outputs = self._run(batch)
            except BaseException as exc:  # noqa: BLE001 -- the batch's callers get the error, the worker lives on
                self._release_slot()
                if not isinstance(exc, Exception):
                    log.error("batch of %d rows interrupted by %s", rows, type(exc).__name__)
                for request in taken:
                    request.future.set_exception(exc)
                stats.record_batch(rows, [0.0] * len(taken), ok=False)
                continue
            self._release_slot()
            # Let a worker waiting with the next batch take the interpreter and start its run
            # (which releases it again) before this one wakes its callers.
            time.sleep(0)
            done = time.perf_counter()
            latencies = []
            offset = 0
            for request in taken:
                n = request.rows
                result = outputs[offset] if request.single else outputs[offset:offset + n]
                offset += n
                latencies.append(done - request.t_submit)
                request.future.set_result(result)
            stats.record_batch(rows, latencies, ok=True)
