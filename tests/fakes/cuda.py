"""A CUDA stand-in whose streams are queues: a check of *our* ordering, not of CUDA or TensorRT.

Real CUDA runs a copy or a kernel some time after it is queued, in stream order; the host goes on
at once. This stand-in makes that visible on a CPU by running nothing when it is queued:

* every copy, memset and kernel is appended to its stream's queue and runs only when something
  waits for it (``Stream.synchronize``, ``Event.synchronize``, or a stream that waits on an event
  whose stream must first run up to that event), always in stream order;
* a copy reads its source (a pinned host buffer too) when it runs, not when it is queued, so a
  host buffer refilled before its upload ran sends the new rows: exactly the bug of restaging a
  lane too early;
* ``Event.record`` marks the position reached in its stream; ``Stream.wait(event)`` takes the
  mark at call time (``cudaStreamWaitEvent`` semantics);
* a graph capture collects the operations queued on the stream instead of queueing them; a
  launch queues the collected operations again (kernels keep the tensor addresses and shapes they
  were captured with, as CUDA graphs do).

Device and pinned memory are numpy blocks at fake, far-apart, 256-byte aligned addresses.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from trtinfer.runtime import cuda as real_cuda

ALIGNMENT = 256


class Memory:
    """Blocks of bytes at fake, far-apart addresses, each aligned to 256 bytes like cudaMalloc's."""

    def __init__(self) -> None:
        self.blocks: dict[int, np.ndarray] = {}
        self._next = 1 << 32
        self._lock = threading.Lock()

    def alloc(self, nbytes: int) -> int:
        with self._lock:
            base = self._next
            self._next += -(-(nbytes + (1 << 24)) // ALIGNMENT) * ALIGNMENT
            self.blocks[base] = np.zeros(max(1, nbytes), np.uint8)
        return base

    def free(self, base: int) -> None:
        with self._lock:
            del self.blocks[base]  # a double free raises KeyError

    def at(self, ptr: int, nbytes: int) -> np.ndarray:
        for base, block in self.blocks.items():
            if base <= ptr and ptr + nbytes <= base + len(block):
                return block[ptr - base: ptr - base + nbytes]
        raise AssertionError(f"access of {nbytes} bytes at {ptr:#x} is outside every allocation")


class Op:
    """One queued operation; ``context`` is set for TensorRT kernels (the graph launch checks it)."""

    def __init__(self, run: Callable[[], None], what: str, context: Any = None) -> None:
        self.run, self.what, self.context = run, what, context

    def __repr__(self) -> str:
        return f"<Op {self.what}>"


class StreamQueue:
    def __init__(self, handle: int) -> None:
        self.handle = handle
        self.pending: deque[Op] = deque()
        self.queued = 0  # operations ever queued (the position an event records)
        self.done = 0  # operations run
        self.capture: list[Op] | None = None


class FakeCuda:
    """Module-like object with the names ``tensorrt_backend`` uses from ``trtinfer.runtime.cuda``."""

    CudaError = real_cuda.CudaError
    DeviceArray = real_cuda.DeviceArray
    stream_handle = staticmethod(real_cuda.stream_handle)

    def __init__(self) -> None:
        self.memory = Memory()
        self.counts = {"stream_sync": 0, "event_sync": 0, "graph_capture": 0, "graph_launch": 0, "streams": 0,
                       "events": 0, "ops": 0}
        self.live: set[Any] = set()
        self.queues: dict[int, StreamQueue] = {}
        self._lock = threading.RLock()
        self.producer_streams: dict[int, int] = {}  # device array ptr -> stream (see producer_stream)
        fake = self

        class _Owner:
            _handle = 0

            def close(self) -> None:
                if self._handle:
                    handle, self._handle = self._handle, 0
                    self._free(handle)
                    fake.live.discard(self)

            def _free(self, handle: int) -> None:
                pass

            def __enter__(self) -> Any:
                return self

            def __exit__(self, *exc: Any) -> None:
                self.close()

        class PinnedBuffer(_Owner):
            def __init__(self, nbytes: int) -> None:
                self.nbytes = nbytes
                self._handle = fake.memory.alloc(nbytes)
                fake.live.add(self)

            @property
            def ptr(self) -> int:
                return self._handle

            def view(self, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
                dtype = np.dtype(dtype)
                count = int(np.prod(shape))
                return fake.memory.at(self._handle, count * dtype.itemsize).view(dtype).reshape(shape)

            def _free(self, handle: int) -> None:
                fake.memory.free(handle)

        class DeviceBuffer(PinnedBuffer):
            pass

        class Stream(_Owner):
            def __init__(self, non_blocking: bool = True) -> None:
                fake.counts["streams"] += 1
                self._handle = 0x5000 + fake.counts["streams"]
                fake.queue(self._handle)
                fake.live.add(self)

            @property
            def handle(self) -> int:
                return self._handle

            def synchronize(self) -> None:
                fake.counts["stream_sync"] += 1
                fake.drain(self._handle)

            def wait(self, event: Any) -> None:
                fake.stream_wait(self._handle, event)

        class Event(_Owner):
            def __init__(self, timing: bool = False) -> None:
                fake.counts["events"] += 1
                self._handle = 0x9000 + fake.counts["events"]
                self.mark: tuple[StreamQueue, int] | None = None
                fake.live.add(self)

            @property
            def handle(self) -> int:
                return self._handle

            def record(self, stream: Any) -> None:
                queue = fake.queue(real_cuda.stream_handle(stream))
                assert queue.capture is None, "an event was recorded inside a graph capture"
                self.mark = (queue, queue.queued)

            def synchronize(self) -> None:
                fake.counts["event_sync"] += 1
                if self.mark is not None:
                    fake.run_until(*self.mark)

            def query(self) -> bool:
                return self.mark is None or self.mark[0].done >= self.mark[1]

            @staticmethod
            def elapsed_ms(start: Any, end: Any) -> float:
                return 1.0

        class CudaGraph(_Owner):
            def __init__(self, stream: Any, record: Callable[[], None]) -> None:
                queue = fake.queue(real_cuda.stream_handle(stream))
                queue.capture = []
                try:
                    record()
                    self.ops = queue.capture
                finally:
                    queue.capture = None
                fake.counts["graph_capture"] += 1
                self._handle = 0xC000 + fake.counts["graph_capture"]
                fake.live.add(self)

            def launch(self, stream: Any) -> None:
                fake.counts["graph_launch"] += 1
                for op in self.ops:
                    if op.context is not None:
                        op.context.check_replay()
                    fake.enqueue(stream, op)

        self.PinnedBuffer, self.DeviceBuffer, self.Stream, self.Event, self.CudaGraph = (
            PinnedBuffer, DeviceBuffer, Stream, Event, CudaGraph)

    # -- queues ------------------------------------------------------------------------------------
    def queue(self, handle: int) -> StreamQueue:
        """The queue of a stream handle; other libraries' streams (a caller's) get one on first use."""
        with self._lock:
            found = self.queues.get(int(handle))
            if found is None:
                found = self.queues[int(handle)] = StreamQueue(int(handle))
            return found

    def enqueue(self, stream: Any, op: Op) -> None:
        queue = self.queue(real_cuda.stream_handle(stream))
        with self._lock:
            if queue.capture is not None:
                queue.capture.append(op)
                return
            queue.pending.append(op)
            queue.queued += 1
            self.counts["ops"] += 1

    def run_until(self, queue: StreamQueue, position: int) -> None:
        """Run ``queue``'s operations in order until ``position`` of them have run."""
        with self._lock:
            while queue.done < position:
                op = queue.pending.popleft()
                queue.done += 1
                op.run()

    def drain(self, handle: int) -> None:
        queue = self.queue(handle)
        self.run_until(queue, queue.queued)

    def drain_all(self) -> None:
        for handle in list(self.queues):
            self.drain(handle)

    def idle(self) -> bool:
        return all(not q.pending for q in self.queues.values())

    # -- the functions of trtinfer.runtime.cuda ------------------------------------------------------
    def _copy(self, dst: int, src: int, nbytes: int, stream: Any = None) -> None:
        if nbytes:
            def run() -> None:
                self.memory.at(dst, nbytes)[:] = self.memory.at(src, nbytes)
            self.enqueue(stream, Op(run, f"copy {nbytes} B {src:#x} -> {dst:#x}"))

    htod_async = dtoh_async = dtod_async = _copy

    def memset_async(self, dst: int, value: int, nbytes: int, stream: Any = None) -> None:
        if nbytes:
            def run() -> None:
                self.memory.at(dst, nbytes)[:] = value
            self.enqueue(stream, Op(run, f"memset {nbytes} B at {dst:#x}"))

    def stream_wait(self, stream: Any, event: Any) -> None:
        mark = getattr(event, "mark", None)
        if mark is not None:
            queue, position = mark
            self.enqueue(stream, Op(lambda: self.run_until(queue, position), "wait"))

    def set_device(self, device: int) -> None:
        pass

    def device_array(self, obj: Any) -> real_cuda.DeviceArray:
        """``trtinfer.runtime.cuda.device_array``; for the stand-in's torch-like arrays the stream is
        the one the real function takes from ``torch.cuda.current_stream()`` (its own test covers that)."""
        found = real_cuda.device_array(obj)
        torch_stream = getattr(obj, "torch_stream", None)
        if torch_stream is not None:
            assert found.stream == real_cuda.LEGACY_DEFAULT_STREAM  # what a non-torch v2 array gets
            return dataclasses.replace(found, stream=torch_stream)
        return found


class FakeDeviceArray:
    """A device array in simulated memory, seen through ``__cuda_array_interface__``.

    ``stream`` is the interface's ``stream`` key (version 3); ``torch_stream`` makes the array
    behave like a torch tensor, which exports version 2 with no ``stream`` key while its data is
    written by kernels still queued on torch's current stream (``written_on`` queues the write).
    """

    def __init__(self, fake: FakeCuda, host: np.ndarray, stream: int | None = None,
                 torch_stream: int | None = None, offset: int = 0) -> None:
        self.fake = fake
        self.shape, self.dtype = host.shape, host.dtype
        nbytes = max(1, host.nbytes)
        self.base = fake.memory.alloc(nbytes + offset)
        self.ptr = self.base + offset  # offset != 0: a slice that starts inside an allocation
        self.torch_stream = torch_stream
        data = np.ascontiguousarray(host).view(np.uint8).ravel()
        if torch_stream is not None:  # the producer's kernel has not run yet
            def run() -> None:
                fake.memory.at(self.ptr, host.nbytes)[:] = data
            fake.enqueue(torch_stream, Op(run, "producer kernel"))
        else:
            fake.memory.at(self.ptr, host.nbytes)[:] = data
        self.__cuda_array_interface__: dict[str, Any] = {
            "shape": host.shape, "typestr": host.dtype.str, "data": (self.ptr, False), "strides": None}
        if torch_stream is None:
            self.__cuda_array_interface__.update(version=3, stream=stream)
        else:
            self.__cuda_array_interface__.update(version=2)

    def host(self) -> np.ndarray:
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        return self.fake.memory.at(self.ptr, nbytes).view(self.dtype).reshape(self.shape).copy()
