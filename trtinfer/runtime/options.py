"""The options of :func:`trtinfer.load`, typed and checked in one place, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..cpu_info import usable_cores
from ..errors import TrtInferError

BACKENDS = ("auto", "tensorrt", "onnxruntime", "openvino")

#: Batcher defaults: rows per batch on CPU backends (TensorRT uses its profile's OPT), how long the
#: oldest request may wait for company, and how many requests may wait at all.
DEFAULT_CPU_MAX_BATCH = 32
DEFAULT_MAX_DELAY_MS = 2.0
DEFAULT_MAX_QUEUE = 1024
#: Largest batch one CPU backend run takes; bigger calls are split so memory stays bounded.
DEFAULT_CPU_CHUNK = 256
#: TensorRT: execution contexts, each with its own CUDA stream and staging buffers.
DEFAULT_STREAMS = 2
#: TensorRT: CUDA graphs kept per context (one per (profile, batch size) seen), least recent evicted.
DEFAULT_GRAPH_CACHE = 16


def available_cores() -> int:
    """CPU cores this process may run on (affinity and cgroup-limited sets count, not the host's)."""
    return usable_cores()


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
    openvino_precision: str = "f32"     # OpenVINO: inference precision hint for float layers

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
        def positive_int(name: str, value: Any, allow_none: bool = True, minimum: int = 1) -> None:
            if value is None and allow_none:
                return
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise TrtInferError(f"load option {name}={value!r} must be an integer >= {minimum}")

        positive_int("max_batch", self.max_batch)
        positive_int("max_queue", self.max_queue, allow_none=False)
        positive_int("workers", self.workers)
        positive_int("threads", self.threads)
        positive_int("chunk_size", self.chunk_size)
        positive_int("streams", self.streams, allow_none=False)
        positive_int("graph_cache", self.graph_cache, allow_none=False, minimum=0)
        positive_int("device", self.device, allow_none=False, minimum=0)
        if not isinstance(self.max_delay_ms, (int, float)) or self.max_delay_ms < 0:
            raise TrtInferError(f"load option max_delay_ms={self.max_delay_ms!r} must be a number >= 0")
        if self.timeout_ms is not None and (not isinstance(self.timeout_ms, (int, float)) or self.timeout_ms <= 0):
            raise TrtInferError(f"load option timeout_ms={self.timeout_ms!r} must be a positive number or None")
        if self.spin is not None and not isinstance(self.spin, bool):
            raise TrtInferError(f"load option spin={self.spin!r} must be True, False or None (measure it here)")
        if self.openvino_precision not in ("f32", "bf16", "f16"):
            raise TrtInferError(f"load option openvino_precision={self.openvino_precision!r} is not f32, bf16 or f16",
                                hint="f32 keeps the artifact's float layers exact; bf16 is faster and lossy")

    @property
    def cpu_threads(self) -> int:
        return self.threads or available_cores()
