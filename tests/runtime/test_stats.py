"""The latency ring: a batch's samples written at once land exactly where one-by-one writes would."""

from __future__ import annotations

import numpy as np
import pytest

from trtinfer.runtime.stats import _Ring


@pytest.mark.parametrize("chunks", [[3, 4], [5, 5, 2], [13], [2, 9, 1, 7]])
def test_add_many_equals_adding_one_at_a_time(chunks):
    rng = np.random.default_rng(sum(chunks))
    batched, single = _Ring(8), _Ring(8)
    for n in chunks:  # wrapping around the end, and a batch longer than the ring
        values = [float(v) for v in rng.random(n)]
        batched.add_many(values)
        for v in values:
            single.add(v)
        assert np.array_equal(batched._buf, single._buf)
        assert batched._next == single._next and batched._count == single._count


def test_direct_calls_from_many_threads_are_each_counted_once():
    """Direct calls record themselves without the lock; snapshots taken meanwhile and the periodic fold count each
    call exactly once."""
    import threading

    from trtinfer.runtime import stats as stats_mod

    s = stats_mod.Stats(window=64)
    per_thread, threads = 3000, 8  # 24,000 calls: the fold at FOLD_DIRECT_AT runs many times
    snapshots = []

    def caller(rows):
        for _ in range(per_thread):
            s.record_infer(rows, 0.001)

    workers = [threading.Thread(target=caller, args=(i + 1,)) for i in range(threads)]
    for w in workers:
        w.start()
    while any(w.is_alive() for w in workers):
        snapshots.append(s.snapshot().infer_calls)
    for w in workers:
        w.join()
    final = s.snapshot()
    assert final.infer_calls == per_thread * threads
    assert final.infer_rows == per_thread * sum(range(1, threads + 1))
    assert snapshots == sorted(snapshots) and final.infer_latency_ms["p50"] == pytest.approx(1.0)
    s.reset()
    assert s.snapshot().infer_calls == 0
