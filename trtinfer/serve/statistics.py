"""The statistics extension: per model, what Triton reports (``GET /v2/models[/<name>]/stats`` and gRPC
``ModelStatistics``), in Triton's own document so its clients and tools read it unchanged.

Reference: Triton's ``docs/protocol/extension_statistics.md``: ``model_stats`` entries with
``inference_count``, ``execution_count``, ``last_inference`` (ms since the epoch) and
``inference_stats`` of ``success``, ``fail``, ``queue``, ``compute_input``, ``compute_infer`` and
``compute_output``, each a ``{"count", "ns"}`` duration, plus ``batch_stats`` per batch size. Here
``compute_input`` is turning the request into the model's batch (parsing checks, image decoding),
``queue`` the wait in the dynamic batcher, ``compute_infer`` the batch that carried the request on the
backend, and ``compute_output`` building the response.

Failures are also counted by Triton's failure reason (its ``nv_inference_request_failure{reason}``, which
``metrics.py`` mirrors; they are not part of the statistics document).
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .registry import VERSION, ModelSet

DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
#: Triton's failure reasons (``service.Failure.reason``): REJECTED by the scheduler (queue full, timed out
#: waiting), CANCELED, BACKEND (the model failed), OTHER (everything else, e.g. a malformed request).
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)


@dataclass
class ModelStatistics:
    name: str
    inference_count: int = 0   # rows inferred
    execution_count: int = 0   # batches run
    last_inference_ms: int = 0
    durations: dict[str, _Duration] = field(default_factory=lambda: {k: _Duration() for k in DURATIONS})
    batches: dict[int, _Duration] = field(default_factory=dict)  # batch size -> compute_infer of those batches
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0))  # by reason

    def document(self) -> dict[str, Any]:
        return {"name": self.name, "version": VERSION, "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count, "execution_count": self.execution_count,
                "inference_stats": {k: {"count": d.count, "ns": d.ns} for k, d in self.durations.items()},
                "batch_stats": [{"batch_size": size, "compute_infer": {"count": d.count, "ns": d.ns}}
                                for size, d in sorted(self.batches.items())]}


class Statistics:
    """Counters per served model, fed by the transports (one call per request) and by each model's dynamic
    batcher (one call per batch). Thread-safe: gRPC threads, the event loop and batcher workers all write."""

    def __init__(self, models: ModelSet) -> None:
        self._lock = threading.Lock()
        self._models = {name: ModelStatistics(name) for name in models.models}
        for served in models.models.values():
            served.model.add_batch_observer(self._observer(served.name, served.ready))

    def _observer(self, name: str, ready: threading.Event) -> Any:
        def observe(rows: int, ok: bool, queued: list[float], compute_s: float | None) -> None:
            # The warm-up's batch is not a request (Triton leaves model warm-up out of its statistics too). The
            # batcher tells its observers before it hands any result over, so this runs before the warm-up thread
            # wakes and marks the model ready.
            if not ready.is_set():
                return
            with self._lock:
                stats = self._models[name]
                stats.execution_count += 1
                if ok:
                    stats.inference_count += rows
                    stats.last_inference_ms = int(time.time() * 1000)
                for seconds in queued:
                    stats.durations["queue"].add(seconds)
                if compute_s is not None:
                    stats.durations["compute_infer"].add(compute_s * len(queued), len(queued))
                    stats.batches.setdefault(rows, _Duration()).add(compute_s)

        return observe

    def record(self, model: str, ok: bool, total_s: float, input_s: float = 0.0, output_s: float = 0.0,
               reason: str = "OTHER") -> None:
        """One request to ``model`` (a served name, not its image twin's) has ended; a failed one for ``reason``
        (one of :data:`FAILURE_REASONS`)."""
        with self._lock:
            stats = self._models.get(model)
            if stats is None:
                return
            stats.durations["success" if ok else "fail"].add(total_s)
            if ok:
                stats.durations["compute_input"].add(input_s)
                stats.durations["compute_output"].add(output_s)
            else:
                stats.failures[reason if reason in stats.failures else "OTHER"] += 1

    def snapshot(self) -> list[ModelStatistics]:
        """A consistent copy of every model's counters (for the metrics port's Triton names)."""
        with self._lock:
            return [copy.deepcopy(s) for s in self._models.values()]

    def document(self, name: str | None = None) -> dict[str, Any]:
        """``{"model_stats": [...]}`` for one model, or every model when ``name`` is None."""
        with self._lock:
            chosen = [self._models[name]] if name is not None else list(self._models.values())
            return {"model_stats": [s.document() for s in chosen]}
