"""The timing rules of ``trtinfer bench`` (benchmarks/measure.py), on stand-in workloads.

The stand-ins below are labelled for what they are: they check our own ordering and stopping
rules (interleaving, stability, failure isolation), not any backend's speed.
"""

from __future__ import annotations

import numpy as np
import pytest

from trtinfer.benchmarks.measure import (CallWorkload, Measured, Window, agree, interleave, is_stable, latency_ms)


def test_latency_statistics_are_in_milliseconds():
    stats = latency_ms([0.001, 0.002, 0.003, 0.004])
    assert stats["min"] == pytest.approx(1.0)
    assert stats["max"] == pytest.approx(4.0)
    assert stats["mean"] == pytest.approx(2.5)
    assert stats["p50"] == pytest.approx(2.5)
    assert stats["p99"] == pytest.approx(3.97)
    assert stats["std"] == pytest.approx(np.std([1, 2, 3, 4]))
    assert set(stats) == {"min", "mean", "p50", "p90", "p95", "p99", "max", "std"}
    assert latency_ms([]) == {}


@pytest.mark.parametrize("values, stable", [
    ([100, 105, 109], True),      # within 10 %
    ([100, 105, 111], False),     # 11 % apart
    ([50, 100, 105, 109], True),  # only the last three count
    ([100, 101], False),          # three windows are needed
])
def test_three_consecutive_windows_must_agree_within_ten_percent(values, stable):
    assert is_stable(values) is stable


def test_agree_refuses_zero():
    assert not agree([0.0, 0.0, 0.0])


def test_call_workload_times_each_call_and_counts_items():
    calls = []
    w = CallWorkload(lambda: calls.append(1), items=8)
    window = w.window(0.01)
    assert window.items == 8 * len(window.latencies) == 8 * len(calls)
    assert len(calls) >= 3  # a window always holds a few calls
    fixed = CallWorkload(lambda: calls.append(1), items=2, calls=7).window(10.0)
    assert len(fixed.latencies) == 7 and fixed.items == 14


class StandIn:
    """Stand-in workload: returns a scripted throughput per window and logs the order of windows."""

    def __init__(self, name: str, log: list[str], rates: list[float], fail_at: int | None = None) -> None:
        self.name, self.log, self.rates, self.fail_at = name, log, list(rates), fail_at
        self.warmed = False

    def warmup(self, calls: int, seconds: float) -> None:
        self.warmed = True

    def window(self, seconds: float) -> Window:
        index = sum(1 for entry in self.log if entry == self.name)
        if self.fail_at is not None and index == self.fail_at:
            raise RuntimeError(f"{self.name} broke")
        self.log.append(self.name)
        rate = self.rates[min(index, len(self.rates) - 1)]
        return Window(items=int(rate), seconds=1.0, latencies=np.array([1.0 / rate]))


def test_rounds_interleave_cases_and_stop_once_all_are_stable():
    log: list[str] = []
    workloads = {n: StandIn(n, log, [100, 100, 100]) for n in "ABC"}
    results = interleave(workloads, window_seconds=0.0, max_windows=5)
    assert log == list("ABC" * 3)  # A B C, A B C, A B C: then all three are stable
    assert all(w.warmed for w in workloads.values())
    assert all(r.stable and r.throughput == 100 for r in results.values())


def test_an_unstable_case_runs_to_max_windows_and_is_reported_unstable():
    log: list[str] = []
    workloads = {"steady": StandIn("steady", log, [100]), "noisy": StandIn("noisy", log, [100, 200, 100, 200, 100])}
    results = interleave(workloads, window_seconds=0.0, max_windows=5)
    assert log.count("steady") == 3 and log.count("noisy") == 5  # only the unstable case gets more rounds
    assert results["steady"].stable and not results["noisy"].stable
    assert results["noisy"].throughput == 100  # the median over its windows
    assert results["noisy"].spread() == pytest.approx(1.0)


def test_a_failing_case_is_dropped_and_the_others_go_on():
    log: list[str] = []
    errors = {}
    workloads = {"ok": StandIn("ok", log, [10]), "bad": StandIn("bad", log, [10], fail_at=1)}
    results = interleave(workloads, window_seconds=0.0, max_windows=3,
                         on_error=lambda name, exc: errors.__setitem__(name, str(exc)))
    assert errors == {"bad": "bad broke"}
    assert set(results) == {"ok"} and len(results["ok"].windows) == 3


def test_measured_figures_are_medians_over_windows():
    m = Measured([Window(100, 1.0, np.array([0.010, 0.020])), Window(300, 1.0, np.array([0.030])),
                  Window(200, 1.0, np.array([0.040, 0.050]))])
    assert m.throughput == 200
    assert m.latency_ms()["p50"] == pytest.approx(30.0)  # median of per-window medians 15, 30, 45


def test_max_windows_below_three_is_refused():
    with pytest.raises(ValueError):
        interleave({}, max_windows=2)


def test_callers_run_at_once_and_every_call_counts():
    import threading
    import time as _time

    from trtinfer.benchmarks.measure import CallersWorkload

    seen: set[int] = set()
    lock = threading.Lock()

    def call(i: int) -> None:
        with lock:
            seen.add(threading.get_ident())
        _time.sleep(0.01)  # releases the GIL, as a backend's run does

    workload = CallersWorkload(call, items=4, callers=3, calls=5)
    window = workload.window(0.0)
    assert len(seen) == 3 and len(window.latencies) == 15 and window.items == 60
    # overlapped: the window took about a third of its calls' summed time, never all of it
    assert window.seconds < 0.6 * float(window.latencies.sum())


def test_min_windows_makes_every_figure_a_median_of_that_many_rounds():
    import numpy as _np

    from trtinfer.benchmarks.measure import Window, interleave

    class Steady:  # a stand-in workload whose every window is the same (labelled as such): tests the rounds only
        calls = None

        def warmup(self, calls, seconds):
            pass

        def window(self, seconds):
            return Window(items=10, seconds=0.01, latencies=_np.full(10, 0.001))

    assert len(interleave({"a": Steady()}, max_windows=9, settle_seconds=0)["a"].windows) == 3  # stable after three
    assert len(interleave({"a": Steady()}, max_windows=9, min_windows=5, settle_seconds=0)["a"].windows) == 5
