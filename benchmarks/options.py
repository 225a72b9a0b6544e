"""What one ``trtinfer bench`` is asked to do: :class:`BenchSettings`, its defaults said once here.

``trtinfer bench`` shows these defaults in ``--help`` and the Python API falls back to them; the timing
(:mod:`.measure`) and the server scenario (:mod:`.server`) take theirs from here too. The model and data
options it shares with ``trtinfer build`` keep theirs in :mod:`trtinfer.defaults`. Standard library and
trtinfer's light modules only: the CLI imports this for ``--help`` without NumPy or torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtinfer.cpu_info import usable_cores
from trtinfer.errors import TrtInferError
from trtinfer.manifest import PRECISIONS

#: Where cases run; ``all`` runs both, and GPU rows are skipped with the reason on a host without one.
DEVICES = ("cpu", "cuda", "all")
DEFAULT_DEVICE = "all"
#: MLPerf's scenarios: single-stream (batch 1), offline (larger batches), server (concurrent clients).
SCENARIOS = ("single-stream", "offline", "server")
#: Batch sizes timed for every case (batch 1 is the single-stream scenario).
DEFAULT_BATCH_SIZES = (1, 8, 32, 128)
#: One timed window, and the most windows a case gets to settle (three consecutive ones must agree).
DEFAULT_WINDOW_SECONDS = 1.0
DEFAULT_MAX_WINDOWS = 5
#: Warm-up per case and batch size: at least this many calls and at least this long.
DEFAULT_WARMUP_CALLS = 3
DEFAULT_WARMUP_SECONDS = 0.5
#: Server scenario: concurrent single-image clients, and the p99 bound (MLPerf's for ResNet).
DEFAULT_CONCURRENCY = (1, 8, 64)
DEFAULT_LATENCY_BOUND_MS = 15.0


@dataclass
class BenchSettings:
    checkpoint: Path
    artifact_dirs: list[Path] = field(default_factory=list)
    backends: tuple[str, ...] | None = None  # None: every backend that applies
    precisions: tuple[str, ...] = PRECISIONS
    device: str = DEFAULT_DEVICE
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    threads: int | None = None  # None: the usable cores
    seconds: float = DEFAULT_WINDOW_SECONDS
    iterations: int | None = None  # calls per window instead of ``seconds``
    warmup: int = DEFAULT_WARMUP_CALLS
    warmup_seconds: float = DEFAULT_WARMUP_SECONDS
    max_windows: int = DEFAULT_MAX_WINDOWS
    min_windows: int = 3  # rounds every case runs before stable ones stop (the figures: at least 5)
    scenarios: tuple[str, ...] = SCENARIOS
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    latency_bound_ms: float = DEFAULT_LATENCY_BOUND_MS
    build: dict[str, Any] = field(default_factory=dict)  # BuildOptions fields: model and data options
    rebuild: bool = False
    cache_root: Path | None = None

    def check(self) -> None:
        from .cases import ALL_BACKENDS

        unknown = [b for b in (self.backends or ()) if b not in ALL_BACKENDS]
        if unknown:
            raise TrtInferError(f"unknown backend(s) {', '.join(unknown)}",
                                hint=f"known backends: {', '.join(ALL_BACKENDS)}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise TrtInferError(f"unknown precision(s) {', '.join(bad) or '(none)'}", hint=f"use {', '.join(PRECISIONS)}")
        if self.device not in DEVICES:
            raise TrtInferError(f"--device {self.device!r} is not one of {', '.join(DEVICES)}")
        if not self.batch_sizes or any(b < 1 or b > 4096 for b in self.batch_sizes):
            raise TrtInferError(f"--batch-sizes {','.join(map(str, self.batch_sizes))}: each must be 1..4096")
        if not self.concurrency or any(c < 1 or c > 1024 for c in self.concurrency):
            raise TrtInferError(f"--concurrency {','.join(map(str, self.concurrency))}: each must be 1..1024")
        if self.threads is not None and not 1 <= self.threads <= 4 * usable_cores():
            raise TrtInferError(f"--threads {self.threads} must be 1..{4 * usable_cores()} (4x the usable cores)")
        if not (math.isfinite(self.seconds) and 0 < self.seconds <= 600):
            raise TrtInferError(f"--seconds {self.seconds} must be a number of seconds in (0, 600]")
        if self.iterations is not None and not 1 <= self.iterations <= 10**6:
            raise TrtInferError(f"--iterations {self.iterations} must be 1..1000000")
        if not (math.isfinite(self.latency_bound_ms) and self.latency_bound_ms > 0):
            raise TrtInferError(f"--latency-bound-ms {self.latency_bound_ms} must be a positive number")
        if self.max_windows < 3:
            raise TrtInferError(f"--max-windows {self.max_windows} must be at least 3 (three windows must agree)")
        if not 3 <= self.min_windows <= self.max_windows:
            raise TrtInferError(f"--min-windows {self.min_windows} must be between 3 and --max-windows ({self.max_windows})",
                                hint="rounds every case runs before a stable one stops, e.g. 5 for a median of 5")

    def wants(self, backend: str) -> bool:
        return self.backends is None or backend in self.backends

    def wants_device(self, device: str) -> bool:
        return self.device in ("all", device)
