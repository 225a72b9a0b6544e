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

It is strict where CUDA's documentation is, so that our code breaking one of these rules fails here:

* device memory and pinned host memory are apart (device blocks from ``DEVICE_BASE``, pinned blocks
  from ``HOST_BASE``, 256-byte aligned like cudaMalloc's); each copy checks that its kind fits its
  pointers (``htod``: pinned source, device target; ``dtoh``: device source, pinned target;
  ``dtod`` and memset: device), and each queued operation checks again when it runs that its
  memory was not freed meanwhile;
* during a graph capture (thread-local mode, the only one our code uses), the capturing thread
  may not allocate or free memory (cudaMalloc, cudaMallocHost, cudaFree, cudaFreeHost) nor use
  the legacy default stream; no thread may synchronise the capturing stream, synchronise or query
  an event recorded in the capture, or make the capture wait on an event recorded outside it. The
  call fails, the capture is invalidated, and ``cudaStreamEndCapture`` then fails with
  ``cudaErrorStreamCaptureInvalidated``. Other threads' allocations and streams are not
  restricted (thread-local mode);
* every failed call leaves its error as the calling thread's last error until
  ``cudaGetLastError`` takes it, as the CUDA runtime does (code that reads the last error after its
  own launches, as TensorRT does, then sees it: ``take_last_error``);
* a simulated GPU clock: each operation costs a fixed time per byte (``COPY_BYTES_PER_MS``) or, for
  kernels, what its queuer says; it starts when its stream is free and not before the host queued
  it (the host's clock moves only when it waits); streams never slow each other down. An event
  takes the time its stream reaches, and ``Event.elapsed_ms`` is the difference, so the time between
  two events is the work queued between them.

Graphs are our own :class:`~trtinfer.runtime.backends.tensorrt.cuda_graphs.CudaGraph` over
:class:`FakeCudart`, a stand-in for the calls of ``cuda.bindings.runtime`` it makes (:func:`install`
puts it in place): its handling of a failed capture runs here as written, checked for the order of
its calls, not against CUDA.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from trtinfer.errors import TrtInferError
from trtinfer.runtime.backends.tensorrt import cuda as real_cuda

ALIGNMENT = 256
DEVICE_BASE = 1 << 40
HOST_BASE = 1 << 44
DEVICE, PINNED = "device", "pinned host"
COPY_BYTES_PER_MS = 25_000_000  # 25 GB/s, copies in either direction
MEMSET_BYTES_PER_MS = 1_000_000_000


# -- the enums of cuda.bindings.runtime that the stand-in answers with (same names and values) ----------------
class cudaError_t(enum.IntEnum):  # noqa: N801 -- CUDA's names
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalState = 401
    cudaErrorNotReady = 600
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901
    cudaErrorStreamCaptureIsolation = 905
    cudaErrorStreamCaptureImplicit = 906
    cudaErrorCapturedEvent = 907
    cudaErrorStreamCaptureWrongThread = 908


class cudaStreamCaptureStatus(enum.IntEnum):  # noqa: N801
    cudaStreamCaptureStatusNone = 0
    cudaStreamCaptureStatusActive = 1
    cudaStreamCaptureStatusInvalidated = 2


class cudaStreamCaptureMode(enum.IntEnum):  # noqa: N801
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


ERROR_TEXT = {
    cudaError_t.cudaErrorStreamCaptureUnsupported: "operation not permitted when stream is capturing",
    cudaError_t.cudaErrorStreamCaptureInvalidated: "operation failed due to a previous error during capture",
    cudaError_t.cudaErrorStreamCaptureIsolation: "dependency created on uncaptured work in another stream",
    cudaError_t.cudaErrorStreamCaptureImplicit: "operation would make the legacy stream depend on a capturing "
                                                "blocking stream",
    cudaError_t.cudaErrorCapturedEvent: "operation not permitted on an event last recorded in a capturing stream",
    cudaError_t.cudaErrorNotReady: "device not ready",
}

LEGACY_STREAMS = (0, real_cuda.LEGACY_DEFAULT_STREAM)


# -- memory -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Block:
    kind: str  # DEVICE or PINNED
    data: np.ndarray
    caller: bool = False  # the caller's memory (a test's device array), not ours to free


class Memory:
    """Blocks of bytes at fake, far-apart addresses, 256-byte aligned; device and pinned host apart."""

    def __init__(self) -> None:
        self.blocks: dict[int, Block] = {}
        self._next = {DEVICE: DEVICE_BASE, PINNED: HOST_BASE}
        self._lock = threading.Lock()

    def alloc(self, nbytes: int, kind: str, caller: bool = False) -> int:
        with self._lock:
            base = self._next[kind]
            self._next[kind] += -(-(nbytes + (1 << 24)) // ALIGNMENT) * ALIGNMENT
            self.blocks[base] = Block(kind, np.zeros(max(1, nbytes), np.uint8), caller)
        return base

    def free(self, base: int, kind: str) -> None:
        with self._lock:
            block = self.blocks.get(base)
            assert block is not None, f"free of {base:#x}, which is not allocated (freed twice?)"
            assert block.kind == kind, f"{kind} free of {base:#x}, which is {block.kind} memory"
            del self.blocks[base]

    def at(self, ptr: int, nbytes: int, kind: str | None = None, what: str = "access") -> np.ndarray:
        """The bytes at ``ptr``; ``kind``: the memory they must be (else the test fails, naming ``what``)."""
        with self._lock:
            found = [(base, block) for base, block in self.blocks.items()
                     if base <= ptr and ptr + nbytes <= base + len(block.data)]
        if not found:
            raise AssertionError(f"{what} of {nbytes} bytes at {ptr:#x} is outside every allocation "
                                 "(never allocated, or freed before the work that uses it ran)")
        base, block = found[0]
        if kind is not None and block.kind != kind:
            raise AssertionError(f"{what} at {ptr:#x} must be {kind} memory; it is {block.kind} memory")
        return block.data[ptr - base: ptr - base + nbytes]

    def ours(self) -> list[int]:
        with self._lock:
            return [base for base, block in self.blocks.items() if not block.caller]


# -- queues -------------------------------------------------------------------------------------------------
class Op:
    """One queued operation; ``context`` is set for TensorRT kernels (a graph launch checks it)."""

    def __init__(self, run: Callable[[], None], what: str, cost: float = 0.0, context: Any = None) -> None:
        self.run, self.what, self.cost, self.context = run, what, cost, context

    def __repr__(self) -> str:
        return f"<Op {self.what}>"


class Capture:
    """A capture in progress: the operations collected and, once a violation spoilt it, why."""

    def __init__(self, thread: int) -> None:
        self.thread = thread
        self.ops: list[Op] = []
        self.invalidated: str | None = None


class StreamQueue:
    def __init__(self, handle: int) -> None:
        self.handle = handle
        self.non_blocking = True
        self.destroyed = False
        self.pending: deque[Op] = deque()
        self.queued = 0  # operations ever queued (the position an event records)
        self.done = 0  # operations run
        self.clock = 0.0  # simulated time (ms) at which the last queued operation finishes
        self.capture: Capture | None = None


@dataclasses.dataclass
class Mark:
    """Where an event was recorded: a position and time in a stream, or inside a capture."""

    queue: StreamQueue
    position: int = 0
    time: float = 0.0
    capture: Capture | None = None


COPY_KINDS = {"HostToDevice": (PINNED, DEVICE), "DeviceToHost": (DEVICE, PINNED), "DeviceToDevice": (DEVICE, DEVICE)}


class FakeCuda:
    """Module-like object with the names the TensorRT backend (``runner``, ``lanes``) uses from ``cuda``."""

    CudaError = real_cuda.CudaError
    DeviceArray = real_cuda.DeviceArray
    stream_handle = staticmethod(real_cuda.stream_handle)

    def __init__(self) -> None:
        self.memory = Memory()
        self.counts = {"stream_sync": 0, "event_sync": 0, "graph_capture": 0, "graph_launch": 0, "streams": 0,
                       "events": 0, "ops": 0}
        self.live: set[Any] = set()
        self.queues: dict[int, StreamQueue] = {}
        self.host_time = 0.0  # simulated time the host has waited up to
        self.last_errors: dict[int, cudaError_t] = {}  # thread -> its last CUDA error
        self._lock = threading.RLock()
        self.runtime = FakeCudart(self)
        fake = self

        class _Owner:
            _handle = 0

            @property
            def closed(self) -> bool:
                return not self._handle

            def close(self) -> None:  # as backends/tensorrt/cuda.py: the handle is cleared before the free
                handle, self._handle = self._handle, 0
                if handle:
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
                self.nbytes = int(nbytes)
                if self.nbytes <= 0:
                    raise ValueError("a pinned buffer needs at least one byte")
                fake.unsafe_during_capture("cudaMallocHost")
                self._handle = fake.memory.alloc(self.nbytes, PINNED)
                fake.live.add(self)

            @property
            def ptr(self) -> int:
                return self._handle

            def view(self, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
                if not self._handle:
                    raise TrtInferError("the pinned buffer is closed")
                dtype = np.dtype(dtype)
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if nbytes > self.nbytes:
                    raise ValueError(f"view of {nbytes} bytes exceeds the buffer's {self.nbytes}")
                return fake.memory.at(self._handle, nbytes, PINNED, "a pinned view").view(dtype).reshape(shape)

            def _free(self, handle: int) -> None:
                fake.unsafe_during_capture("cudaFreeHost")
                fake.memory.free(handle, PINNED)

        class DeviceBuffer(_Owner):
            def __init__(self, nbytes: int) -> None:
                self.nbytes = int(nbytes)
                if self.nbytes <= 0:
                    raise ValueError("a device buffer needs at least one byte")
                fake.unsafe_during_capture("cudaMalloc")
                self._handle = fake.memory.alloc(self.nbytes, DEVICE)
                fake.live.add(self)

            @property
            def ptr(self) -> int:
                return self._handle

            def _free(self, handle: int) -> None:
                fake.unsafe_during_capture("cudaFree")
                fake.memory.free(handle, DEVICE)

        class Stream(_Owner):
            def __init__(self, non_blocking: bool = True) -> None:
                with fake._lock:
                    fake.counts["streams"] += 1
                    self._handle = 0x5000 + fake.counts["streams"]
                    fake.queue(self._handle).non_blocking = non_blocking
                fake.live.add(self)

            @property
            def handle(self) -> int:
                return self._handle

            def synchronize(self) -> None:
                fake.counts["stream_sync"] += 1
                fake.stream_synchronize(self._handle)

            def wait(self, event: Any) -> None:
                fake.stream_wait(self._handle, event)

            def _free(self, handle: int) -> None:
                queue = fake.queue(handle)
                assert queue.capture is None, f"stream {handle:#x} destroyed while capturing"
                queue.destroyed = True

        class Event(_Owner):
            def __init__(self, timing: bool = False) -> None:
                with fake._lock:
                    fake.counts["events"] += 1
                    self._handle = 0x9000 + fake.counts["events"]
                self._timing = timing
                self._mark: Mark | None = None
                fake.live.add(self)

            @property
            def handle(self) -> int:
                return self._handle

            def record(self, stream: Any) -> None:
                fake.event_record(self, stream)

            def synchronize(self) -> None:
                fake.counts["event_sync"] += 1
                fake.event_synchronize(self)

            def query(self) -> bool:
                return fake.event_query(self)

            @staticmethod
            def elapsed_ms(start: Any, end: Any) -> float:
                return fake.elapsed_ms(start, end)

        self.PinnedBuffer, self.DeviceBuffer, self.Stream, self.Event = PinnedBuffer, DeviceBuffer, Stream, Event

    # -- errors and capture rules --------------------------------------------------------------------------
    def fail(self, call: str, error: cudaError_t, invalidate: Iterable[Capture] = ()) -> None:
        """A refused call: invalidate ``invalidate``, set the thread's last error, raise as ``cuda_call`` would."""
        with self._lock:
            for capture in invalidate:
                capture.invalidated = capture.invalidated or f"{call}: {error.name}"
            self.last_errors[threading.get_ident()] = error
        raise real_cuda.CudaError(call, error.name, int(error), ERROR_TEXT.get(error, ""))

    def set_last_error(self, error: cudaError_t) -> None:
        if error:
            self.last_errors[threading.get_ident()] = error

    def take_last_error(self) -> cudaError_t:
        """``cudaGetLastError`` for the calling thread."""
        return self.last_errors.pop(threading.get_ident(), cudaError_t.cudaSuccess)

    def captures(self, thread: int | None = None) -> list[Capture]:
        """Captures in progress (of ``thread`` when given)."""
        with self._lock:
            return [q.capture for q in self.queues.values()
                    if q.capture is not None and (thread is None or q.capture.thread == thread)]

    def unsafe_during_capture(self, call: str) -> None:
        """Allocations and frees: refused on a thread that is capturing (thread-local mode)."""
        mine = self.captures(threading.get_ident())
        if mine:
            self.fail(call, cudaError_t.cudaErrorStreamCaptureUnsupported, mine)

    def _check_use(self, queue: StreamQueue, call: str) -> None:
        """Queueing on ``queue``: not a destroyed stream, not the legacy stream while that is unsafe, not a
        spoilt capture."""
        assert not queue.destroyed, f"{call} on stream {queue.handle:#x} after it was destroyed"
        if queue.handle in LEGACY_STREAMS:
            mine = self.captures(threading.get_ident())
            blocking = [q.capture for q in self.queues.values() if q.capture is not None and not q.non_blocking]
            if mine or blocking:
                self.fail(call, cudaError_t.cudaErrorStreamCaptureImplicit, mine + blocking)
        if queue.capture is not None and queue.capture.invalidated:
            self.fail(call, cudaError_t.cudaErrorStreamCaptureInvalidated)

    # -- queues ---------------------------------------------------------------------------------------------
    def queue(self, handle: int) -> StreamQueue:
        """The queue of a stream handle; other libraries' streams (a caller's) get one on first use."""
        with self._lock:
            found = self.queues.get(int(handle))
            if found is None:
                found = self.queues[int(handle)] = StreamQueue(int(handle))
            return found

    def enqueue(self, stream: Any, op: Op, call: str = "a launch") -> None:
        with self._lock:
            queue = self.queue(real_cuda.stream_handle(stream))
            self._check_use(queue, call)
            if queue.capture is not None:
                queue.capture.ops.append(op)
                return
            queue.clock = max(queue.clock, self.host_time) + op.cost
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
        """Run what is queued on a stream; the host's clock moves to its end (what a caller's
        ``synchronize`` of its own stream does)."""
        with self._lock:
            queue = self.queue(handle)
            self.run_until(queue, queue.queued)
            self.host_time = max(self.host_time, queue.clock)

    def drain_all(self) -> None:
        for handle in list(self.queues):
            self.drain(handle)

    def idle(self) -> bool:
        return all(not q.pending for q in self.queues.values())

    def leaks(self) -> list[str]:
        """What was made and never freed: owning objects, our memory blocks, graphs."""
        found = [repr(obj) for obj in self.live]
        found += [f"memory block at {base:#x}" for base in self.memory.ours()]
        found += [f"graph {h:#x}" for h in self.runtime.graphs] + [f"graph exec {h:#x}" for h in self.runtime.execs]
        return found

    # -- synchronisation and events -------------------------------------------------------------------------
    def stream_synchronize(self, handle: int, call: str = "cudaStreamSynchronize", run: bool = True) -> None:
        """``cudaStreamSynchronize``; ``run=False``: only its capture rules (for a library's own
        synchronisation whose running of work would hide ordering bugs here)."""
        with self._lock:
            queue = self.queue(handle)
            if queue.capture is not None:
                self.fail(call, cudaError_t.cudaErrorStreamCaptureUnsupported, [queue.capture])
            if handle in LEGACY_STREAMS:
                self._check_use(queue, call)
            if run:
                self.drain(handle)

    def device_synchronize(self) -> None:
        captures = self.captures()
        if captures:
            self.fail("cudaDeviceSynchronize", cudaError_t.cudaErrorStreamCaptureUnsupported, captures)
        self.drain_all()

    def stream_wait(self, stream: Any, event: Any) -> None:
        with self._lock:
            queue = self.queue(real_cuda.stream_handle(stream))
            self._check_use(queue, "cudaStreamWaitEvent")
            mark: Mark | None = event._mark
            if queue.capture is not None:
                if mark is None or mark.capture is not queue.capture:  # a dependency on work outside the capture
                    self.fail("cudaStreamWaitEvent", cudaError_t.cudaErrorStreamCaptureIsolation, [queue.capture])
                return  # inside one capture on one stream: already in order
            if mark is None:
                return  # never recorded: nothing to wait for
            assert mark.capture is None, "a stream joined to a capture (not modelled by the stand-in)"
            other, position = mark.queue, mark.position
            self.enqueue(queue.handle, Op(lambda: self.run_until(other, position), f"wait for {event!r}"),
                         "cudaStreamWaitEvent")
            queue.clock = max(queue.clock, mark.time)

    def event_record(self, event: Any, stream: Any) -> None:
        with self._lock:
            queue = self.queue(real_cuda.stream_handle(stream))
            self._check_use(queue, "cudaEventRecord")
            if queue.capture is not None:
                event._mark = Mark(queue, capture=queue.capture)
            else:
                event._mark = Mark(queue, queue.queued, max(queue.clock, self.host_time))

    def _captured_event(self, event: Any, call: str) -> None:
        mark: Mark | None = event._mark
        if mark is not None and mark.capture is not None:
            live = [mark.capture] if mark.queue.capture is mark.capture else []
            self.fail(call, cudaError_t.cudaErrorCapturedEvent, live)

    def event_synchronize(self, event: Any) -> None:
        with self._lock:
            self._captured_event(event, "cudaEventSynchronize")
            mark: Mark | None = event._mark
            if mark is not None:
                self.run_until(mark.queue, mark.position)
                self.host_time = max(self.host_time, mark.time)

    def event_query(self, event: Any) -> bool:
        with self._lock:
            self._captured_event(event, "cudaEventQuery")
            mark: Mark | None = event._mark
            return mark is None or mark.queue.done >= mark.position

    def elapsed_ms(self, start: Any, end: Any) -> float:
        with self._lock:
            for event in (start, end):
                if not event._timing or event._mark is None or event._mark.capture is not None:
                    self.fail("cudaEventElapsedTime", cudaError_t.cudaErrorInvalidResourceHandle)
                if event._mark.queue.done < event._mark.position:
                    self.fail("cudaEventElapsedTime", cudaError_t.cudaErrorNotReady)
            return float(end._mark.time - start._mark.time)

    # -- the functions of backends/tensorrt/cuda.py --------------------------------------------------------
    def _copy(self, kind: str, dst: int, src: int, nbytes: int, stream: Any) -> None:
        if nbytes <= 0:
            return
        src_kind, dst_kind = COPY_KINDS[kind]
        call = f"cudaMemcpy{kind}"
        self.memory.at(src, nbytes, src_kind, f"{call}'s source")
        self.memory.at(dst, nbytes, dst_kind, f"{call}'s target")

        def run() -> None:
            self.memory.at(dst, nbytes, dst_kind, f"{call}'s target")[:] = self.memory.at(src, nbytes, src_kind,
                                                                                           f"{call}'s source")
        self.enqueue(stream, Op(run, f"{call} {nbytes} B {src:#x} -> {dst:#x}", nbytes / COPY_BYTES_PER_MS), call)

    def htod_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._copy("HostToDevice", dst, src, nbytes, stream)

    def dtoh_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._copy("DeviceToHost", dst, src, nbytes, stream)

    def dtod_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._copy("DeviceToDevice", dst, src, nbytes, stream)

    def memset_async(self, dst: int, value: int, nbytes: int, stream: Any) -> None:
        if nbytes <= 0:
            return
        self.memory.at(dst, nbytes, DEVICE, "cudaMemsetAsync's target")

        def run() -> None:
            self.memory.at(dst, nbytes, DEVICE, "cudaMemsetAsync's target")[:] = value
        self.enqueue(stream, Op(run, f"memset {nbytes} B at {dst:#x}", nbytes / MEMSET_BYTES_PER_MS), "cudaMemsetAsync")

    def device_array(self, obj: Any) -> real_cuda.DeviceArray:
        """``backends.tensorrt.cuda.device_array``; for the stand-in's torch-like arrays the stream is
        the one the real function takes from ``torch.cuda.current_stream()`` (its own test covers that)."""
        found = real_cuda.device_array(obj)
        torch_stream = getattr(obj, "torch_stream", None)
        if torch_stream is not None:
            assert found.stream == real_cuda.LEGACY_DEFAULT_STREAM  # what a non-torch v2 array gets
            return dataclasses.replace(found, stream=torch_stream)
        return found


class FakeCudart:
    """The calls of ``cuda.bindings.runtime`` that our ``CudaGraph`` (backends/tensorrt/cuda_graphs.py) and
    ``cuda_call`` (backends/tensorrt/cuda.py) make, over a :class:`FakeCuda`'s queues: each returns
    ``(err, *values)`` (values None on error), and a failed one sets the calling thread's last error.
    ``instantiate_error`` makes ``cudaGraphInstantiate`` fail with that error."""

    cudaError_t = cudaError_t
    cudaStreamCaptureMode = cudaStreamCaptureMode
    cudaStreamCaptureStatus = cudaStreamCaptureStatus

    def __init__(self, fake: FakeCuda) -> None:
        self._fake = fake
        self.graphs: dict[int, list[Op]] = {}
        self.execs: dict[int, list[Op]] = {}
        self.instantiate_error: cudaError_t | None = None
        self.calls: list[str] = []
        self._next = 0xC000

    def _answer(self, call: str, err: cudaError_t, *values: Any) -> tuple:
        self.calls.append(call)
        self._fake.set_last_error(err)
        return (err, *values) if not err else (err, *(None for _ in values))

    def _new_handle(self) -> int:
        self._next += 1
        return self._next

    def cudaStreamBeginCapture(self, stream: Any, mode: Any) -> tuple:  # noqa: N802 -- CUDA's names
        assert int(mode) == cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal, \
            "only thread-local capture is modelled (the mode trtinfer uses)"
        fake = self._fake
        with fake._lock:
            queue = fake.queue(int(stream))
            if queue.handle in LEGACY_STREAMS:
                return self._answer("cudaStreamBeginCapture", cudaError_t.cudaErrorStreamCaptureUnsupported)
            if queue.capture is not None:
                return self._answer("cudaStreamBeginCapture", cudaError_t.cudaErrorIllegalState)
            queue.capture = Capture(threading.get_ident())
        return self._answer("cudaStreamBeginCapture", cudaError_t.cudaSuccess)

    def cudaStreamIsCapturing(self, stream: Any) -> tuple:  # noqa: N802
        capture = self._fake.queue(int(stream)).capture
        status = (cudaStreamCaptureStatus.cudaStreamCaptureStatusNone if capture is None else
                  cudaStreamCaptureStatus.cudaStreamCaptureStatusInvalidated if capture.invalidated else
                  cudaStreamCaptureStatus.cudaStreamCaptureStatusActive)
        return self._answer("cudaStreamIsCapturing", cudaError_t.cudaSuccess, status)

    def cudaStreamEndCapture(self, stream: Any) -> tuple:  # noqa: N802
        fake = self._fake
        with fake._lock:
            queue = fake.queue(int(stream))
            capture = queue.capture
            if capture is None:
                return self._answer("cudaStreamEndCapture", cudaError_t.cudaErrorIllegalState, None)
            if capture.thread != threading.get_ident():
                return self._answer("cudaStreamEndCapture", cudaError_t.cudaErrorStreamCaptureWrongThread, None)
            queue.capture = None
            if capture.invalidated:
                return self._answer("cudaStreamEndCapture", cudaError_t.cudaErrorStreamCaptureInvalidated, None)
            handle = self._new_handle()
            self.graphs[handle] = capture.ops
        return self._answer("cudaStreamEndCapture", cudaError_t.cudaSuccess, handle)

    def cudaGraphInstantiate(self, graph: Any, flags: int) -> tuple:  # noqa: N802
        ops = self.graphs.get(int(graph))
        if ops is None:
            return self._answer("cudaGraphInstantiate", cudaError_t.cudaErrorInvalidValue, None)
        if self.instantiate_error is not None:
            return self._answer("cudaGraphInstantiate", self.instantiate_error, None)
        handle = self._new_handle()
        self.execs[handle] = list(ops)
        self._fake.counts["graph_capture"] += 1
        return self._answer("cudaGraphInstantiate", cudaError_t.cudaSuccess, handle)

    def cudaGraphLaunch(self, graph_exec: Any, stream: Any) -> tuple:  # noqa: N802
        fake = self._fake
        ops = self.execs.get(int(graph_exec))
        if ops is None:
            return self._answer("cudaGraphLaunch", cudaError_t.cudaErrorInvalidResourceHandle)
        assert fake.queue(int(stream)).capture is None, "a graph launched into a capture (not modelled)"
        fake.counts["graph_launch"] += 1
        try:
            for op in ops:
                if op.context is not None:
                    op.context._check_replay()
                fake.enqueue(stream, op, "cudaGraphLaunch")
        except real_cuda.CudaError as exc:
            return self._answer("cudaGraphLaunch", cudaError_t(exc.code))
        return self._answer("cudaGraphLaunch", cudaError_t.cudaSuccess)

    def cudaGraphDestroy(self, graph: Any) -> tuple:  # noqa: N802
        found = self.graphs.pop(int(graph), None)
        return self._answer("cudaGraphDestroy", cudaError_t.cudaSuccess if found is not None else
                            cudaError_t.cudaErrorInvalidValue)

    def cudaGraphExecDestroy(self, graph_exec: Any) -> tuple:  # noqa: N802
        found = self.execs.pop(int(graph_exec), None)
        return self._answer("cudaGraphExecDestroy", cudaError_t.cudaSuccess if found is not None else
                            cudaError_t.cudaErrorInvalidValue)

    def cudaGetLastError(self) -> tuple:  # noqa: N802
        self.calls.append("cudaGetLastError")
        return (self._fake.take_last_error(),)

    def cudaPeekAtLastError(self) -> tuple:  # noqa: N802
        return (self._fake.last_errors.get(threading.get_ident(), cudaError_t.cudaSuccess),)

    def cudaGetErrorString(self, err: Any) -> tuple:  # noqa: N802
        return (cudaError_t.cudaSuccess, ERROR_TEXT.get(cudaError_t(int(err)), "").encode())


def install(monkeypatch: Any) -> FakeCuda:
    """A fresh stand-in, with :class:`FakeCudart` as the CUDA layer's runtime module for the test."""
    fake = FakeCuda()
    monkeypatch.setattr(real_cuda, "_CUDART", fake.runtime)
    return fake


class FakeDeviceArray:
    """A device array in simulated device memory (the caller's), seen through ``__cuda_array_interface__``.

    ``stream`` is the interface's ``stream`` key (version 3); ``torch_stream`` makes the array
    behave like a torch tensor, which exports version 2 with no ``stream`` key while its data is
    written by kernels still queued on torch's current stream (``written_on`` queues the write).
    """

    def __init__(self, fake: FakeCuda, host: np.ndarray, stream: int | None = None,
                 torch_stream: int | None = None, offset: int = 0) -> None:
        self.fake = fake
        self.shape, self.dtype = host.shape, host.dtype
        nbytes = max(1, host.nbytes)
        self.base = fake.memory.alloc(nbytes + offset, DEVICE, caller=True)
        self.ptr = self.base + offset  # offset != 0: a slice that starts inside an allocation
        self.torch_stream = torch_stream
        data = np.ascontiguousarray(host).view(np.uint8).ravel()
        if torch_stream is not None:  # the producer's kernel has not run yet
            def run() -> None:
                fake.memory.at(self.ptr, host.nbytes, DEVICE)[:] = data
            fake.enqueue(torch_stream, Op(run, "producer kernel"))
        else:
            fake.memory.at(self.ptr, host.nbytes, DEVICE)[:] = data
        self.__cuda_array_interface__: dict[str, Any] = {
            "shape": host.shape, "typestr": host.dtype.str, "data": (self.ptr, False), "strides": None}
        if torch_stream is None:
            self.__cuda_array_interface__.update(version=3, stream=stream)
        else:
            self.__cuda_array_interface__.update(version=2)

    def host(self) -> np.ndarray:
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        return self.fake.memory.at(self.ptr, nbytes, DEVICE).view(self.dtype).reshape(self.shape).copy()
