"""Execution choices made by measurement on this machine, cached per model, CPU and library versions.

Whether ONNX Runtime's idle intra-op threads should busy-wait between runs ("spinning") depends
on the machine: measured faster at batch 1 by 7-84 % on some 2-core hosts and 1.15-1.75x slower on
another. No fixed default is right, so ``spin=None`` (the default) measures both on the model at
first load and remembers the answer in ``~/.cache/trtinfer/tuning.json``, keyed by the model's
sha256, the CPU model, the library version and the thread count.

It is only a cache: an entry with a missing or mistyped field, or a file that is malformed, huge or not a
regular file (a FIFO), is ignored with a warning and measured again, never a traceback or a hang.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..cache import cache_root
from ..cpu_info import cpu_info
from ..errors import TrtInferError
from ..files import read_bounded

log = logging.getLogger(__name__)

TUNING_FILE = "tuning.json"
TUNING_VERSION = 3  # 3: spinning by one rule for every use, OpenVINO static shapes; older measurements are dropped
MAX_ENTRIES = 512  # the file stays small: oldest entries go first
#: An entry is about half a kB (key, choice, why): MAX_ENTRIES of them fill some 250 kB, so 1 MiB leaves room
#: to spare and a larger file is not one trtinfer wrote.
MAX_TUNING_BYTES = 1 << 20
MAX_WHY_CHARS = 4096
#: The fields an entry may hold, by type; every entry says ``why`` (what was measured), printed on later loads.
ENTRY_FIELDS: dict[str, type] = {"why": str, "spin": bool, "execution": str, "static_sizes": list}
_IGNORED = "ignored, measured again"
_lock = threading.Lock()


def tuning_path() -> Path:
    return cache_root() / TUNING_FILE


def tuning_key(kind: str, model_sha256: str, library: str, threads: int) -> str:
    return f"{kind}|{model_sha256[:32]}|{cpu_info().model}|{library}|threads={threads}"


def entry_problem(entry: Any) -> str | None:
    """What is wrong with one cached entry (a missing ``why``, a field of the wrong type), said from the
    field on; None when nothing is. The callers read the fields they need without further checks."""
    if not isinstance(entry, dict):
        return f"is a {type(entry).__name__}, not an object"
    if "why" not in entry:
        return "'why' is missing"
    for name, kind in ENTRY_FIELDS.items():
        if name in entry and type(entry[name]) is not kind:
            return f"{name!r} is of type {type(entry[name]).__name__}, not {kind.__name__}"
    if len(entry["why"]) > MAX_WHY_CHARS:
        return f"'why' is {len(entry['why']):,} characters long"
    return None


def _cache_problem(path: Path) -> tuple[dict[str, Any], str | None]:
    """(the entries of the cache at ``path``, what made the file unusable or None). No file: no entries, no
    problem. Read bounded and regular files only (:func:`trtinfer.files.read_bounded`): a FIFO does not hang
    it, a huge file is not read."""
    if not os.path.lexists(path):
        return {}, None
    try:
        text = read_bounded(path, MAX_TUNING_BYTES, "tuning cache").decode("utf-8")
        data = json.loads(text)
    except TrtInferError as exc:
        return {}, exc.message
    except UnicodeDecodeError:
        return {}, f"tuning cache {path} is not UTF-8 text"
    except RecursionError:
        return {}, f"tuning cache {path} is nested too deeply"
    except ValueError as exc:
        return {}, f"tuning cache {path} is not JSON ({exc})"
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        return {}, f"tuning cache {path} is not a version-{TUNING_VERSION} tuning cache"
    if data.get("version") != TUNING_VERSION:
        return {}, None  # an older trtinfer's measurements: dropped as the version says, no warning
    return data["entries"], None


def _read_all(path: Path, warn: bool = True) -> dict[str, Any]:
    entries, problem = _cache_problem(path)
    if problem is not None and warn:
        log.warning("%s; %s", problem, _IGNORED)
    return entries


def lookup(key: str) -> dict[str, Any] | None:
    """The entry cached under ``key``, its fields of the types :data:`ENTRY_FIELDS` says; None when there is
    none, or when the entry or the whole cache is unusable (logged as a warning: it is measured again)."""
    path = tuning_path()
    entry = _read_all(path).get(key)
    if entry is None:
        return None
    problem = entry_problem(entry)
    if problem is not None:
        log.warning("tuning cache %s: entry %r %s; %s", path, key, problem, _IGNORED)
        return None
    return entry


def remember(key: str, value: dict[str, Any]) -> None:
    """Store ``value`` under ``key``; a cache that cannot be written is only logged. Unusable entries (or an
    unusable file, already warned about by :func:`lookup`) are dropped."""
    from ..atomic import atomic_file

    path = tuning_path()
    with _lock:
        entries = {k: v for k, v in _read_all(path, warn=False).items() if entry_problem(v) is None}
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
