"""How ``trtinfer bench`` times things: warm-up, timed windows until three agree, interleaved rounds.

The rules, and why:

* **Warm-up by count and by time** (at least ``count`` calls and ``seconds``): first calls allocate,
  JIT-compile and fault pages in; a count alone is too short for fast cases, a time alone too
  short for slow ones.
* **Timed windows until three consecutive ones agree within 10 %**, at most ``max_windows``; a
  case that never settles is reported as *unstable*, never silently.
* **Interleaved rounds**: every case runs one window per round (A B C, A B C, ...), so drift of a
  shared machine (another process, thermal limits, a noisy neighbour VM) hits every case alike.
  Each figure is the median over the case's windows. A short pause separates two windows, so
  threads still busy-waiting after one case's last call do not slow the next case's first.

A :class:`Workload` is anything with ``warmup`` and ``window``: one caller timing single calls
(:class:`CallWorkload`), or many clients at once (the server scenario). Nothing here knows
about models.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .options import DEFAULT_MAX_WINDOWS, DEFAULT_WARMUP_CALLS, DEFAULT_WARMUP_SECONDS, DEFAULT_WINDOW_SECONDS

STABLE_TOLERANCE = 0.10  # three consecutive windows within 10 % of each other
STABLE_WINDOWS = 3
MIN_CALLS_PER_WINDOW = 3  # a window of a slow case still holds a few calls
#: Pause between two cases' windows: a backend whose idle threads busy-wait after a run (ONNX
#: Runtime with spinning, OpenVINO's TBB workers) would otherwise bill the next case for its spin.
SETTLE_SECONDS = 0.05
LATENCY_KEYS = ("min", "mean", "p50", "p90", "p95", "p99", "max", "std")


def resident_mb(trim: bool = True) -> float | None:
    """This process's resident memory in MB (None where /proc is not readable). With ``trim``, after a
    garbage collection and glibc's ``malloc_trim``: freed heap the allocator keeps cached otherwise
    makes RSS swing by tens of MB (87-224 MB over load/close cycles measured here, no trend), which
    hides or fakes growth; after the trim, what remains is memory still in use."""
    if trim:
        import ctypes
        import gc

        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: RSS as it is
            pass
    try:
        import resource

        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / (1 << 20)
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Window:
    """One timed window: how many items (images) were done in how long, and each call's latency."""

    items: int
    seconds: float
    latencies: np.ndarray  # seconds per call (or per request)

    @property
    def throughput(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


def latency_ms(samples: Sequence[float] | np.ndarray) -> dict[str, float]:
    """min / mean / p50 / p90 / p95 / p99 / max / std of latencies given in seconds, in ms."""
    arr = np.asarray(samples, dtype=np.float64) * 1e3
    if arr.size == 0:
        return {}
    p50, p90, p95, p99 = np.percentile(arr, [50, 90, 95, 99])
    return {"min": float(arr.min()), "mean": float(arr.mean()), "p50": float(p50), "p90": float(p90),
            "p95": float(p95), "p99": float(p99), "max": float(arr.max()), "std": float(arr.std())}


def agree(values: Sequence[float], tolerance: float = STABLE_TOLERANCE) -> bool:
    """Whether every value lies within ``tolerance`` of the others (max / min - 1)."""
    lo, hi = min(values), max(values)
    return lo > 0 and hi / lo - 1.0 <= tolerance


def is_stable(throughputs: Sequence[float], tolerance: float = STABLE_TOLERANCE,
              needed: int = STABLE_WINDOWS) -> bool:
    """The last ``needed`` windows agree within ``tolerance``."""
    return len(throughputs) >= needed and agree(throughputs[-needed:], tolerance)


class Workload(Protocol):
    def warmup(self, calls: int, seconds: float) -> None: ...

    def window(self, seconds: float) -> Window: ...


class CallWorkload:
    """One caller timing ``call()``, which processes ``items`` images per call.

    ``sync`` runs after every call inside the timed region (``torch.cuda.synchronize`` for GPU
    work, so a call's time includes the device work it queued). With ``calls`` set, a window is
    that many calls instead of a time (``--iterations``).
    """

    def __init__(self, call: Callable[[], Any], items: int, sync: Callable[[], None] | None = None,
                 calls: int | None = None) -> None:
        self.call = call
        self.items = items
        self.sync = sync
        self.calls = calls

    def warmup(self, calls: int, seconds: float) -> None:
        end = time.perf_counter() + seconds
        done = 0
        while done < calls or time.perf_counter() < end:
            self.call()
            if self.sync:
                self.sync()
            done += 1

    def window(self, seconds: float) -> Window:
        call, sync, clock = self.call, self.sync, time.perf_counter
        latencies: list[float] = []
        start = clock()
        end = start + seconds
        now = start
        wanted = self.calls
        while (len(latencies) < wanted) if wanted else (now < end or len(latencies) < MIN_CALLS_PER_WINDOW):
            t0 = clock()
            call()
            if sync:
                sync()
            now = clock()
            latencies.append(now - t0)
        return Window(items=self.items * len(latencies), seconds=now - start, latencies=np.asarray(latencies))


class CallersWorkload:
    """``callers`` threads each calling ``call(i)`` back to back, none waiting for another: requests in
    flight the way ``benchmark_app -hint throughput`` keeps them. A window runs them all for ``seconds``
    (or ``calls`` calls each); its items are every call's, its latencies each call's own."""

    def __init__(self, call: Callable[[int], Any], items: int, callers: int, calls: int | None = None) -> None:
        self.call = call
        self.items = items
        self.callers = callers
        self.calls = calls

    def warmup(self, calls: int, seconds: float) -> None:
        self._run(seconds, calls)

    def _run(self, seconds: float, calls: int | None) -> tuple[float, list[list[float]]]:
        import threading

        clock = time.perf_counter
        latencies: list[list[float]] = [[] for _ in range(self.callers)]
        start = clock()
        end = start + seconds

        def caller(i: int) -> None:
            mine = latencies[i]
            while (len(mine) < calls) if calls else (clock() < end or len(mine) < MIN_CALLS_PER_WINDOW):
                t0 = clock()
                self.call(i)
                mine.append(clock() - t0)

        threads = [threading.Thread(target=caller, args=(i,), name=f"bench-caller-{i}") for i in range(self.callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return clock() - start, latencies

    def window(self, seconds: float) -> Window:
        elapsed, latencies = self._run(seconds, self.calls)
        every = [t for mine in latencies for t in mine]
        return Window(items=self.items * len(every), seconds=elapsed, latencies=np.asarray(every))


@dataclass
class Measured:
    """A workload's windows and the figures taken from them (medians over windows)."""

    windows: list[Window] = field(default_factory=list)

    @property
    def throughputs(self) -> list[float]:
        return [w.throughput for w in self.windows]

    @property
    def stable(self) -> bool:
        return is_stable(self.throughputs)

    @property
    def throughput(self) -> float:
        return float(statistics.median(self.throughputs)) if self.windows else 0.0

    def latency_ms(self) -> dict[str, float]:
        """Each statistic is the median over windows of that window's statistic."""
        per_window = [latency_ms(w.latencies) for w in self.windows if len(w.latencies)]
        if not per_window:
            return {}
        return {k: float(statistics.median(s[k] for s in per_window)) for k in LATENCY_KEYS}

    def spread(self) -> float:
        """max / min - 1 over the windows the figure is taken from (the noise of this case)."""
        t = self.throughputs[-STABLE_WINDOWS:]
        return (max(t) / min(t) - 1.0) if t and min(t) > 0 else 0.0


def interleave(workloads: dict[str, Workload], window_seconds: float = DEFAULT_WINDOW_SECONDS,
               max_windows: int = DEFAULT_MAX_WINDOWS, warmup_calls: int = DEFAULT_WARMUP_CALLS,
               warmup_seconds: float = DEFAULT_WARMUP_SECONDS,
               progress: Callable[[str], None] | None = None,
               on_error: Callable[[str, BaseException], None] | None = None,
               settle_seconds: float = SETTLE_SECONDS, min_windows: int = STABLE_WINDOWS) -> dict[str, Measured]:
    """Warm every workload up, then run rounds of one window each until all are stable.

    The first ``min_windows`` rounds (at least :data:`STABLE_WINDOWS`) run every workload; later rounds (up
    to ``max_windows``) only those not yet stable, still interleaved. A workload that raises is
    dropped (``on_error(name, exc)``), the others go on.
    """
    if max_windows < STABLE_WINDOWS:
        raise ValueError(f"max_windows must be at least {STABLE_WINDOWS}")
    say = progress or (lambda message: None)
    live = dict(workloads)
    results = {name: Measured() for name in workloads}

    def attempt(name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # a failing case must not take the whole benchmark down
            live.pop(name, None)
            results.pop(name, None)
            if on_error:
                on_error(name, exc)
            return None

    for name, workload in list(live.items()):
        say(f"warming up {name}")
        attempt(name, functools.partial(workload.warmup, warmup_calls, warmup_seconds))
    for round_index in range(max_windows):
        todo = [n for n in live if round_index < max(STABLE_WINDOWS, min_windows) or not results[n].stable]
        if not todo:
            break
        say(f"round {round_index + 1}: {len(todo)} case(s)")
        for name in todo:
            time.sleep(settle_seconds)
            window = attempt(name, functools.partial(live[name].window, window_seconds))
            if window is not None:
                results[name].windows.append(window)
    return results
