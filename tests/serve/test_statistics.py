"""The statistics extension's counters on a real model and its dynamic batcher: requests the batcher ran count,
the warm-up does not (Triton leaves model warm-up out of its statistics)."""

from __future__ import annotations

import numpy as np

from trtinfer.serve.registry import ModelSet


def test_counts_start_after_the_warm_up(tiny_served):
    from trtinfer.serve.statistics import Statistics

    models = ModelSet.load([tiny_served])
    try:
        statistics = Statistics(models)
        models.warm_up()
        served = models.models["tiny"]
        (before,) = statistics.document("tiny")["model_stats"]
        assert before["inference_count"] == 0 and before["execution_count"] == 0, before
        x = np.zeros((3, *served.model.row_shape), np.float32)
        served.model.submit(x).result(timeout=60)
        statistics.record("tiny", ok=True, total_s=0.01, input_s=0.001, output_s=0.001)
        (after,) = statistics.document("tiny")["model_stats"]
        assert after["inference_count"] == 3 and after["execution_count"] == 1, after
        stats = after["inference_stats"]
        assert stats["success"]["count"] == 1 and stats["queue"]["count"] == 1 and stats["compute_infer"]["ns"] > 0
        assert after["batch_stats"][0]["batch_size"] == 3
    finally:
        models.close()


def test_a_batch_is_counted_before_its_callers_wake(tiny_served):
    """A client that reads the statistics right after its answer must find its own batch in them: the batcher tells
    its observers (the statistics, the metrics) before it hands the results over. A slow observer shows the order."""
    import threading
    import time

    import trtinfer

    with trtinfer.load(tiny_served) as model:
        observed = threading.Event()

        def slow_observer(rows: int, ok: bool, queued: list[float], compute_s: float | None) -> None:
            time.sleep(0.3)
            observed.set()

        model.add_batch_observer(slow_observer)
        model.submit(np.zeros((2, *model.row_shape), np.float32)).result(timeout=60)
        assert observed.is_set()
