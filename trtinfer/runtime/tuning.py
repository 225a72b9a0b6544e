"""Execution choices made by measurement on this machine, cached per model, CPU and library versions.

Whether ONNX Runtime's idle intra-op threads should busy-wait between runs ("spinning") depends
on the machine: measured faster at batch 1 by 7-84 % on some 2-core hosts and 1.15-1.75x slower on
another. No fixed default is right, so ``spin=None`` (the default) measures both on the model at
first load and remembers the answer in ``~/.cache/trtinfer/tuning.json``, keyed by the model's
sha256, the CPU model, the library version and the thread count.
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..cache import cache_root
from ..cpu_info import cpu_info

log = logging.getLogger(__name__)

TUNING_FILE = "tuning.json"
TUNING_VERSION = 2  # 2: backend choice by measurement, spin per use; older measurements are dropped
MAX_ENTRIES = 512  # the file stays small: oldest entries go first
_lock = threading.Lock()


def tuning_path() -> Path:
    return cache_root() / TUNING_FILE


def tuning_key(kind: str, model_sha256: str, library: str, threads: int) -> str:
    return f"{kind}|{model_sha256[:32]}|{cpu_info().model}|{library}|threads={threads}"


def _read_all(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or data.get("version") != TUNING_VERSION or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def lookup(key: str) -> dict[str, Any] | None:
    entry = _read_all(tuning_path()).get(key)
    return entry if isinstance(entry, dict) else None


def remember(key: str, value: dict[str, Any]) -> None:
    """Store ``value`` under ``key``; a cache that cannot be written is only logged."""
    from ..atomic import atomic_file

    path = tuning_path()
    with _lock:
        entries = _read_all(path)
        entries.pop(key, None)
        entries[key] = value
        while len(entries) > MAX_ENTRIES:
            entries.pop(next(iter(entries)))
        try:
            with atomic_file(path, "w") as f:
                json.dump({"version": TUNING_VERSION, "entries": entries}, f, indent=1)
        except OSError as exc:
            log.info("could not write the tuning cache %s: %s", path, exc)


def median_seconds(fn: Callable[[], Any], calls: int) -> float:
    clock = time.perf_counter
    samples = []
    for _ in range(calls):
        start = clock()
        fn()
        samples.append(clock() - start)
    return statistics.median(samples)


def race(candidates: dict[Any, dict[str, Callable[[], Any]]], calls: dict[str, int],
         rounds: int = 3, settle_s: float = 0.0) -> dict[Any, dict[str, float]]:
    """Median seconds per call of each candidate's workloads, alternating candidates in rounds so
    drift hits them alike. ``candidates[name][workload]`` is a callable; ``calls[workload]`` how
    many calls of it per round; ``settle_s``: a pause before each timed block, so threads a
    previous candidate left spinning do not bill the next one."""
    times: dict[Any, dict[str, list[float]]] = {c: {w: [] for w in calls} for c in candidates}
    for fns in candidates.values():  # warm-up
        for fn in fns.values():
            fn()
    for _ in range(rounds):
        for name, fns in candidates.items():
            for workload, n in calls.items():
                if settle_s:
                    time.sleep(settle_s)
                times[name][workload].append(median_seconds(fns[workload], n))
    return {c: {w: statistics.median(v) for w, v in ws.items()} for c, ws in times.items()}
