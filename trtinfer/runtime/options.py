"""The options of :func:`trtinfer.load`, typed and checked in one place, with their defaults and bounds.

Every number is bounded: an unbounded option is a way to wedge the process (``max_batch=10**7``
allocates a multi-GB staging buffer in the batcher's worker, ``max_delay_ms=inf`` overflows its
wait, ``threads=10_000`` wedges the host). The checks here are shared with the batcher and with
per-call arguments (``submit(timeout=...)``) so every entry point refuses the same values with the
same one-line message.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..cpu_info import usable_cores
from ..errors import TrtInferError

BACKENDS = ("auto", "tensorrt", "onnxruntime", "openvino")

#: Batcher defaults: rows per batch on CPU backends (TensorRT uses its profile's OPT), how long the
#: oldest request may wait for company, and how many requests may wait at all.
DEFAULT_CPU_MAX_BATCH = 32
#: Rows per call that ``prefer`` measures with: a full CPU batch, or one row.
PREFER_BATCH = {"throughput": DEFAULT_CPU_MAX_BATCH, "latency": 1}
DEFAULT_MAX_DELAY_MS = 2.0
DEFAULT_MAX_QUEUE = 1024
#: Largest batch one CPU backend run takes; bigger calls are split so memory stays bounded.
DEFAULT_CPU_CHUNK = 256
#: TensorRT: execution contexts, each with its own CUDA stream and staging buffers.
DEFAULT_STREAMS = 2
#: TensorRT: CUDA graphs kept per context (one per (profile, batch size) seen), least recent evicted.
DEFAULT_GRAPH_CACHE = 16

#: Upper bounds. Far above any useful setting, low enough that a typo cannot exhaust the host.
MAX_BATCH_LIMIT = 65_536          # rows per batch (the batcher's staging buffer grows up to this)
MAX_DELAY_MS_LIMIT = 60_000.0     # one minute: a batch never waits longer for company
MAX_TIMEOUT_MS = 3_600_000.0      # one hour: a request's timeout, default or per call
MAX_QUEUE_LIMIT = 1_000_000       # requests waiting
MAX_CHUNK_LIMIT = 65_536          # rows per backend run
MAX_WORKERS = 64                  # batches run at once
THREADS_PER_CORE = 4              # intra-op threads per usable core (1,000 ran 9x slower; 10,000 wedged the host)
MAX_STREAMS = 16                  # TensorRT execution contexts
MAX_GRAPH_CACHE = 1024            # CUDA graphs kept per context


def available_cores() -> int:
    """CPU cores this process may run on (affinity and cgroup-limited sets count, not the host's)."""
    return usable_cores()


def max_threads() -> int:
    """The most intra-op threads a CPU backend may be given here."""
    return THREADS_PER_CORE * available_cores()


def is_integer(value: Any) -> bool:
    """A Python or numpy integer, but not a bool (``True`` is an int to Python, never a count here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """A Python or numpy int or float, but not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_int(what: str, name: str, value: Any, minimum: int, maximum: int | None = None,
              allow_none: bool = False, hint: str | None = None) -> int | None:
    """``value`` as a Python int within ``[minimum, maximum]``; TrtInferError naming both bounds otherwise."""
    if value is None and allow_none:
        return None
    if is_integer(value) and value >= minimum and (maximum is None or value <= maximum):
        return int(value)
    bound = f"from {minimum:,} to {maximum:,}" if maximum is not None else f">= {minimum:,}"
    none = " or None" if allow_none else ""
    raise TrtInferError(f"{what} {name}={value!r} must be an integer {bound}{none}", hint=hint)


def check_number(what: str, name: str, value: Any, minimum: float, maximum: float, *, above_minimum: bool = False,
                 allow_none: bool = False, unit: str = "", hint: str | None = None) -> float | None:
    """``value`` as a finite float within the bounds (``above_minimum``: strictly above ``minimum``)."""
    if value is None and allow_none:
        return None
    if is_real(value):
        number = float(value)
        low_ok = number > minimum if above_minimum else number >= minimum
        if math.isfinite(number) and low_ok and number <= maximum:
            return number
    low = f"> {_show(minimum)}" if above_minimum else f">= {_show(minimum)}"
    none = ", or None" if allow_none else ""
    raise TrtInferError(f"{what} {name}={value!r} must be a finite number {low} and at most {_show(maximum)}{unit}"
                        f"{none}", hint=hint)


def _show(number: float) -> str:
    """3600000.0 -> '3,600,000'; 0.5 -> '0.5'."""
    return f"{int(number):,}" if float(number).is_integer() else f"{number:,}"


def check_timeout_s(what: str, value: Any) -> float | None:
    """A per-request timeout in seconds: None (no timeout) or finite, > 0 and at most :data:`MAX_TIMEOUT_MS`."""
    return check_number(what, "timeout", value, 0.0, MAX_TIMEOUT_MS / 1e3, above_minimum=True, allow_none=True,
                        unit=" seconds", hint="pass seconds as a number (e.g. 0.5), or None for no timeout")


def _plain(value: Any) -> Any:
    """numpy scalars as the Python values they stand for (np.int64(2) -> 2), so backends get plain types."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


@dataclass(frozen=True)
class RuntimeOptions:
    """Everything :func:`trtinfer.load` accepts besides the artifact and the backend."""

    max_batch: int | None = None        # batcher: most rows gathered into one batch (None: backend default)
    max_delay_ms: float = DEFAULT_MAX_DELAY_MS  # batcher: longest the oldest request waits for company
    max_queue: int = DEFAULT_MAX_QUEUE  # batcher: requests waiting before submit() fails with OverloadedError
    timeout_ms: float | None = None     # batcher: default per-request timeout (None: none)
    workers: int | None = None          # batcher: batches run at once (None: as many as the backend overlaps)
    threads: int | None = None          # CPU backends: intra-op threads (None: the cores available)
    chunk_size: int | None = None       # most rows one backend run takes; larger inputs are split
    spin: bool | None = None            # ONNX Runtime: let idle intra-op threads busy-wait between runs;
    #                                     None: measured on this machine at first load and cached (runtime.tuning),
    #                                     because it is 7-84 % faster at batch 1 on some hosts, 1.15-1.75x slower on others
    streams: int = DEFAULT_STREAMS      # TensorRT: execution contexts / CUDA streams
    cuda_graphs: bool = False           # TensorRT: capture and replay a CUDA graph per batch size
    graph_cache: int = DEFAULT_GRAPH_CACHE  # TensorRT: graphs kept per context
    device: int = 0                     # TensorRT: CUDA device index
    openvino_precision: str | None = None  # OpenVINO: precision hint for float layers (f32, bf16, f16); None: f32,
    #                                     or bf16 where backend="auto" measured it faster and the build checked it
    openvino_streams: int | None = None  # OpenVINO: runs overlapped, each on threads/streams cores (the throughput
    #                                     configuration benchmark_app uses); None: 1, one run on every core, fastest for a
    #                                     single caller; more pays when callers (or the batcher's workers, as many as the
    #                                     streams) run at once: 2 streams ran 2 callers' batches of 32 1.13x faster here
    static_shapes: bool | None = None   # OpenVINO: also compile the model at fixed batch sizes 1 and max_batch (one
    #                                     row, the batcher's full batch); None: each size kept where a first-load race
    #                                     finds it faster, cached (5-14 % on an AMX Xeon; a copy costs memory)
    prefer: str = "throughput"          # backend="auto": time full batches (throughput) or single rows (latency)
    #                                     when measuring which CPU execution runs fastest here
    check_finite: bool = True           # refuse host input holding NaN or inf (each backend answers it differently:
    #                                     NaN on one, a confident class on another); False skips the check

    def __post_init__(self) -> None:
        # numpy scalars (np.int64(2) from a config array) become plain Python values, so the checks
        # and every backend see ints and floats.
        for f in fields(self):
            value = getattr(self, f.name)
            plain = _plain(value)
            if plain is not value:
                object.__setattr__(self, f.name, plain)

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> RuntimeOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TrtInferError(f"unknown load option(s): {', '.join(unknown)}",
                                hint=f"valid options are {', '.join(sorted(known))}")
        opts = cls(**options)
        opts.check()
        return opts

    def check(self) -> None:
        what = "load option"
        check_int(what, "max_batch", self.max_batch, 1, MAX_BATCH_LIMIT, allow_none=True,
                  hint="rows per batch; leave it unset for the backend's default")
        check_int(what, "max_queue", self.max_queue, 1, MAX_QUEUE_LIMIT,
                  hint="requests allowed to wait; beyond it submit() fails fast with OverloadedError")
        check_int(what, "workers", self.workers, 1, MAX_WORKERS, allow_none=True,
                  hint="batches run at once; leave it unset to match what the backend overlaps")
        threads_limit = max_threads()
        if self.threads is not None and is_integer(self.threads) and self.threads > threads_limit:
            raise TrtInferError(
                f"load option threads={self.threads!r} is more than {THREADS_PER_CORE}x the {available_cores()} "
                f"usable core(s) (at most {threads_limit:,})",
                hint="more intra-op threads than cores make inference slower (1,000 threads ran 9x slower); "
                     "leave threads unset to use the cores available")
        check_int(what, "threads", self.threads, 1, threads_limit, allow_none=True,
                  hint="leave threads unset to use the cores available")
        check_int(what, "chunk_size", self.chunk_size, 1, MAX_CHUNK_LIMIT, allow_none=True,
                  hint="rows per backend run; leave it unset for the default")
        check_int(what, "streams", self.streams, 1, MAX_STREAMS, hint=f"the default is {DEFAULT_STREAMS}")
        check_int(what, "openvino_streams", self.openvino_streams, 1, MAX_STREAMS, allow_none=True,
                  hint="runs OpenVINO overlaps; leave it unset for one run on every core")
        check_int(what, "graph_cache", self.graph_cache, 0, MAX_GRAPH_CACHE,
                  hint=f"the default is {DEFAULT_GRAPH_CACHE}")
        check_int(what, "device", self.device, 0, hint="a CUDA device index, 0 for the first GPU")
        check_number(what, "max_delay_ms", self.max_delay_ms, 0.0, MAX_DELAY_MS_LIMIT,
                     hint="milliseconds the oldest request waits for company, e.g. 2")
        check_number(what, "timeout_ms", self.timeout_ms, 0.0, MAX_TIMEOUT_MS, above_minimum=True, allow_none=True,
                     hint="milliseconds a request may wait before it runs, or None for no timeout")
        for name in ("spin", "static_shapes"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise TrtInferError(f"load option {name}={getattr(self, name)!r} must be True, False or None "
                                    "(measure it here)")
        for name in ("cuda_graphs", "check_finite"):
            if not isinstance(getattr(self, name), bool):
                raise TrtInferError(f"load option {name}={getattr(self, name)!r} must be True or False")
        if self.prefer not in PREFER_BATCH:
            raise TrtInferError(f"load option prefer={self.prefer!r} is not one of {', '.join(PREFER_BATCH)}",
                                hint="throughput: batches of 32 (servers, offline); latency: one row at a time")
        if self.openvino_precision not in (None, "f32", "bf16", "f16"):
            raise TrtInferError(f"load option openvino_precision={self.openvino_precision!r} is not f32, bf16 or f16",
                                hint="f32 keeps the artifact's float layers exact; bf16 is faster and lossy")

    @property
    def cpu_threads(self) -> int:
        return self.threads or available_cores()
