"""The dynamic batcher on its own, with plain functions as the model: exact rows per caller,
batch sizes and delays, overload, timeouts, cancellation, per-batch errors and shutdown."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError

import numpy as np
import pytest

from trtinfer.errors import OverloadedError
from trtinfer.runtime.batcher import DynamicBatcher, ModelClosedError, RequestTimeout
from trtinfer.runtime.stats import Stats

from .helpers import run_in_threads

ROW = (3,)


def double(x: np.ndarray) -> np.ndarray:
    return x * 2.0


class Recorder:
    """A model that records every batch it runs and can be held at a gate."""

    def __init__(self, fn=double, gated: bool = False) -> None:
        self.fn = fn
        self.batches: list[np.ndarray] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        if not gated:
            self.gate.set()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(10), "test gate never opened"
        self.batches.append(x.copy())
        return self.fn(x)

    def seen(self) -> np.ndarray:
        return np.concatenate(self.batches) if self.batches else np.zeros((0, *ROW), np.float32)


def make(run, **kw) -> DynamicBatcher:
    options = dict(row_shape=ROW, dtype=np.float32, max_batch=8, max_delay_s=0.005, max_queue=64)
    options.update(kw)
    return DynamicBatcher(run, **options)


def rows(values, n: int = 1) -> np.ndarray:
    return np.full((n, *ROW), values, dtype=np.float32)


def test_each_caller_gets_exactly_its_rows_from_many_threads():
    batcher = make(Recorder(), max_batch=16, max_queue=10_000)
    errors: list[str] = []

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(200):
            x = rng.standard_normal((int(rng.integers(1, 6)), *ROW), dtype=np.float32)
            y = batcher.submit(x, len(x)).result(timeout=30)
            if y.shape != x.shape or not np.array_equal(y, x * 2):
                errors.append(f"client {seed}: wrong rows")

    run_in_threads(client, 32)
    batcher.close()
    assert errors == []
    snap = batcher.stats.snapshot()
    assert snap.completed == snap.requests == 32 * 200
    assert snap.batches < snap.requests  # requests were actually batched
    assert max(snap.batch_sizes) <= 16


def test_batches_never_exceed_max_batch_and_do_form():
    slow = Recorder(fn=lambda x: (time.sleep(0.01), x * 2)[1])
    batcher = make(slow, max_batch=8, max_delay_s=0.05)
    futures = [batcher.submit(rows(i), 1) for i in range(40)]
    results = [f.result(timeout=10) for f in futures]
    batcher.close()
    assert [float(r[0, 0]) for r in results] == [2.0 * i for i in range(40)]
    sizes = [len(b) for b in slow.batches]
    assert max(sizes) <= 8 and sum(sizes) == 40 and len(sizes) <= 10


def test_single_request_waits_at_most_max_delay():
    batcher = make(Recorder(), max_batch=64, max_delay_s=0.05)
    start = time.perf_counter()
    batcher.submit(rows(1), 1).result(timeout=5)
    waited = time.perf_counter() - start
    batcher.close()
    assert 0.03 <= waited < 1.0


def test_full_batch_runs_without_waiting_for_the_delay():
    batcher = make(Recorder(), max_batch=4, max_delay_s=5.0)
    start = time.perf_counter()
    batcher.submit(rows(1, 4), 4).result(timeout=5)
    assert time.perf_counter() - start < 2.0
    batcher.close()


def test_request_larger_than_max_batch_runs_alone_and_whole():
    rec = Recorder()
    batcher = make(rec, max_batch=4)
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    assert np.array_equal(batcher.submit(x, 10).result(timeout=5), x * 2)
    batcher.close()
    assert [len(b) for b in rec.batches] == [10]


def test_single_sample_requests_get_one_row_back():
    batcher = make(Recorder())
    y = batcher.submit(rows(3), 1, single=True).result(timeout=5)
    batcher.close()
    assert y.shape == ROW and np.all(y == 6)


def wait_until(condition, seconds: float = 5.0) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "condition never became true"
        time.sleep(0.001)


def test_overload_fails_fast_and_recovers():
    rec = Recorder(gated=True)
    batcher = make(rec, max_batch=1, max_queue=3)
    first = batcher.submit(rows(0), 1)
    assert rec.entered.wait(5)  # one worker runs the first request
    queued = [batcher.submit(rows(1), 1)]
    wait_until(lambda: batcher.queue_depth() == 0)  # the pipelining worker holds the next batch
    queued += [batcher.submit(rows(i), 1) for i in range(2, 5)]
    start = time.perf_counter()
    with pytest.raises(OverloadedError, match="queue is full"):
        batcher.submit(rows(99), 1)
    assert time.perf_counter() - start < 0.5
    rec.gate.set()
    assert [float(f.result(timeout=5)[0, 0]) for f in [first, *queued]] == [0, 2, 4, 6, 8]
    assert batcher.submit(rows(5), 1).result(timeout=5)[0, 0] == 10  # accepts again
    batcher.close()
    assert batcher.stats.snapshot().rejected == 1
    assert 99 not in rec.seen()


def test_timed_out_requests_are_dropped_before_they_run():
    rec = Recorder(gated=True)
    batcher = make(rec, max_batch=1)
    busy = batcher.submit(rows(0), 1)
    assert rec.entered.wait(5)
    late = batcher.submit(rows(7), 1, timeout=0.02)
    patient = batcher.submit(rows(8), 1, timeout=30)
    time.sleep(0.1)
    rec.gate.set()
    with pytest.raises(RequestTimeout) as info:
        late.result(timeout=5)
    assert isinstance(info.value, TimeoutError)
    assert busy.result(timeout=5)[0, 0] == 0 and patient.result(timeout=5)[0, 0] == 16
    batcher.close()
    assert 7 not in rec.seen()
    assert batcher.stats.snapshot().timed_out == 1


def test_default_timeout_applies_to_every_request():
    rec = Recorder(gated=True)
    batcher = make(rec, max_batch=1, timeout_s=0.02)
    batcher.submit(rows(0), 1)
    assert rec.entered.wait(5)
    late = batcher.submit(rows(1), 1)
    time.sleep(0.1)
    rec.gate.set()
    with pytest.raises(RequestTimeout):
        late.result(timeout=5)
    batcher.close()


def test_cancelled_requests_never_run():
    rec = Recorder(gated=True)
    batcher = make(rec, max_batch=1)
    batcher.submit(rows(0), 1)
    assert rec.entered.wait(5)
    doomed = batcher.submit(rows(5), 1)
    kept = batcher.submit(rows(6), 1)
    assert doomed.cancel()
    rec.gate.set()
    with pytest.raises(CancelledError):
        doomed.result(timeout=5)
    assert kept.result(timeout=5)[0, 0] == 12
    batcher.close()
    assert 5 not in rec.seen()
    assert batcher.stats.snapshot().cancelled == 1


def test_an_error_fails_only_its_batch():
    def picky(x: np.ndarray) -> np.ndarray:
        if np.any(x == -1):
            raise ValueError("bad batch")
        return x * 2

    batcher = make(Recorder(picky), max_batch=1)
    good1 = batcher.submit(rows(1), 1)
    bad = batcher.submit(rows(-1), 1)
    good2 = batcher.submit(rows(2), 1)
    with pytest.raises(ValueError, match="bad batch"):
        bad.result(timeout=5)
    assert good1.result(timeout=5)[0, 0] == 2 and good2.result(timeout=5)[0, 0] == 4
    assert batcher.submit(rows(3), 1).result(timeout=5)[0, 0] == 6  # the worker lives on
    batcher.close()
    snap = batcher.stats.snapshot()
    assert snap.failed == 1 and snap.completed == 3


def test_next_batch_is_assembled_while_one_runs_but_never_run_beside_it():
    rec = Recorder(gated=True)
    batcher = make(rec, max_batch=2, max_delay_s=0.0)
    futures = [batcher.submit(rows(i), 1) for i in range(2)]
    assert rec.entered.wait(5)
    futures += [batcher.submit(rows(i), 1) for i in range(2, 4)]
    wait_until(lambda: batcher.queue_depth() == 0)  # taken by the second worker...
    time.sleep(0.05)
    assert len(rec.batches) == 0  # ...which waits for the run slot (concurrency 1)
    rec.gate.set()
    assert [float(f.result(timeout=5)[0, 0]) for f in futures] == [0, 2, 4, 6]
    batcher.close()
    assert [len(b) for b in rec.batches] == [2, 2]


def test_close_finishes_accepted_work_then_rejects():
    rec = Recorder(gated=True)
    batcher = make(rec, max_batch=2)
    accepted = [batcher.submit(rows(i), 1) for i in range(10)]
    assert rec.entered.wait(5)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    deadline = time.time() + 5
    while not batcher.closed and time.time() < deadline:
        time.sleep(0.001)
    with pytest.raises(ModelClosedError):
        batcher.submit(rows(99), 1)
    assert closer.is_alive()  # still finishing the accepted work
    rec.gate.set()
    closer.join(10)
    assert not closer.is_alive()
    assert [float(f.result(timeout=0)[0, 0]) for f in accepted] == [2.0 * i for i in range(10)]
    assert 99 not in rec.seen()


def test_close_without_work_returns_at_once_and_is_idempotent():
    batcher = make(Recorder(), concurrency=3)
    start = time.perf_counter()
    batcher.close()
    batcher.close()
    assert time.perf_counter() - start < 2.0


def test_several_workers_run_batches_concurrently():
    inside, peak, lock = [0], [0], threading.Lock()

    def slow(x: np.ndarray) -> np.ndarray:
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        time.sleep(0.05)
        with lock:
            inside[0] -= 1
        return x * 2

    batcher = make(slow, max_batch=1, concurrency=2, stats=Stats())
    futures = [batcher.submit(rows(i), 1) for i in range(6)]
    assert [float(f.result(timeout=10)[0, 0]) for f in futures] == [2.0 * i for i in range(6)]
    batcher.close()
    assert peak[0] == 2


def test_stats_histogram_and_latency():
    batcher = make(Recorder(), max_batch=4, max_delay_s=0.02)
    for f in [batcher.submit(rows(i), 1) for i in range(8)]:
        f.result(timeout=5)
    batcher.close()
    snap = batcher.stats.snapshot()
    assert sum(size * n for size, n in snap.batch_sizes.items()) == 8
    assert snap.request_latency_ms["p50"] > 0 and snap.request_latency_ms["max"] < 5000
    data = snap.as_dict()
    assert data["requests"] == 8 and "p99" in data["request_latency_ms"] and data["queue_depth"] == 0
