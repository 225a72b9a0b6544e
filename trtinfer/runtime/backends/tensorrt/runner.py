"""TensorRT on the GPU: a thin layer that carries out :mod:`trtinfer.runtime.planning`'s plans with
:mod:`.cuda`, over :class:`~.lanes.Lane` objects and the engine's :class:`~.engine_io.EngineIO`.

``streams=N`` lanes, each an execution context (not thread-safe: one caller at a time) with its
own non-blocking CUDA stream, pinned host staging and device buffers sized once for the largest
profile MAX, and two events (upload done, chunk done). A call splits its rows into chunks some
profile can run (``planning.plan_chunks``), rotates them over the lanes it holds
(``planning.lane_schedule``) so one chunk's copies overlap another's compute, and waits once at
the end: the first lane's stream waits on the others' events and is synchronised.

Ordering rules (CUDA runs queued work later; the host must not get ahead of it):

* a lane's pinned input buffer is refilled only after its previous upload ran (the upload event),
  and its pinned output buffer is read only after its chunk finished (the done event);
* a device array's producer may still be writing it: the lanes first wait on the producer's
  stream (``stream=``, else :func:`.cuda.producer_stream`'s rule: torch's current stream for
  torch tensors);
* TensorRT needs 256-byte aligned tensor addresses: chunks are cut at multiples of
  ``planning.zero_copy_granule`` rows so they stay aligned, and a chunk whose address is not
  aligned (a slice of an array) is copied through the lane's buffers instead of bound in place;
* with ``cuda_graphs=True`` a lane keeps one graph per (profile, batch size), batch sizes rounded
  up to ``planning.graph_batch_sizes``; graphs always read and write the lane's own buffers
  (device arrays are copied in and out: a graph replays the addresses it was captured with), and
  after a profile or shape change the first launch is a regular ``execute_async_v3``, which
  applies TensorRT's pending updates, before any graph is captured or replayed.

Engines with more than one input or output are refused at load: every output would need an address.

TensorRT and cuda-python are imported when a model is loaded (:mod:`.loader`), never at import time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ....errors import ArtifactError, DataError, InternalError
from ...model import Model
from ...planning import Chunk, aligned, lane_schedule, lanes_for_call
from . import cuda, devices, loader
from .engine_io import EngineIO
from .lanes import Lane

log = logging.getLogger(__name__)


class TensorRTModel(Model):
    backend = "tensorrt"
    accepts_device_arrays = True

    # -- loading -------------------------------------------------------------------------------
    def _open(self, model_bytes: bytes) -> None:
        self._lanes: list[Lane] = []
        self._engine: Any = None
        self._runtime: Any = None
        trt = loader.import_tensorrt()
        device = self.options.device
        info = loader.check_plan_for_gpu(self.manifest, device, self.artifact_dir)
        devices.set_device(device)
        self._device = device
        self._thread_device = threading.local()
        self._thread_device.device = device
        self.gpu_name = info["name"]
        try:
            self._runtime, self._engine = loader.deserialize_engine(model_bytes, self.artifact_dir)
            io = EngineIO(trt, self._engine, self.manifest, self.options.chunk_size)
            if io.row_shape != self.row_shape:
                raise ArtifactError(f"the engine takes rows of {io.row_shape}, the manifest says {self.row_shape}",
                                    hint=loader.REBUILD_HINT.format(dir=self.artifact_dir))
            recorded = self.manifest.engine.profiles if self.manifest.engine is not None else None
            if recorded is not None and recorded != io.profiles:
                log.warning("the manifest lists profiles %s, the engine has %s; using the engine's",
                            [str(p) for p in recorded], [str(p) for p in io.profiles])
            self._io = io
            self.output_row_shape = io.out_row_shape
            self.profiles = io.profiles
            self.max_chunk = io.max_rows
            self.concurrency = self.options.streams
            self.default_max_batch = min(max(p.opt for p in io.profiles), io.max_rows)
            graphs = self.options.graph_cache if self.options.cuda_graphs else 0
            for i in range(self.options.streams):  # appended one by one: a failure frees those made
                self._lanes.append(Lane(i, self._engine, io, graphs))
        except BaseException:
            self._close_impl()
            raise
        self._free = list(self._lanes)
        self._lanes_cond = threading.Condition(threading.Lock())
        self.cuda_graphs = self.options.cuda_graphs

    # -- lanes ---------------------------------------------------------------------------------
    def _use_device(self) -> None:
        local = self._thread_device
        if getattr(local, "device", None) != self._device:
            devices.set_device(self._device)
            local.device = self._device

    def _acquire(self, chunks: int) -> list[Lane]:
        """One lane, blocking; then up to ``chunks - 1`` more that are free right now (never more,
        so concurrent callers cannot deadlock holding some lanes each)."""
        with self._lanes_cond:
            while not self._free:
                self._lanes_cond.wait()
            want = lanes_for_call(chunks, len(self._free))
            taken, self._free = self._free[:want], self._free[want:]
        return taken

    def _release(self, lanes: list[Lane]) -> None:
        with self._lanes_cond:
            self._free.extend(lanes)
            self._lanes_cond.notify(len(lanes))

    # -- inference -------------------------------------------------------------------------------
    def _infer_impl(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        if out is None:
            out = np.empty((x.shape[0], *self._io.out_row_shape), dtype=self.output_dtype)
        self._use_device()
        self._run(x, None, out, None, None)
        return out

    def _infer_device(self, x: Any, out: Any, stream: Any) -> tuple[Any, int]:
        io = self._io
        self._use_device()
        x_dev = cuda.device_array(x) if hasattr(x, "__cuda_array_interface__") else None
        x_host = None
        if x_dev is None:  # host input, device output
            x_host, _ = self._check_host(x)
            shape = x_host.shape
        else:
            shape = x_dev.shape
            if x_dev.dtype != io.in_dtype or shape[1:] != io.row_shape:
                raise DataError(f"device input {shape} {x_dev.dtype} does not fit the engine's "
                                f"{('N', *io.row_shape)} {io.in_dtype}",
                                hint="pass a C-contiguous NCHW device array of the engine's dtype")
        rows = int(shape[0])
        out_shape = (rows, *io.out_row_shape)
        out_dev = cuda.device_array(out) if hasattr(out, "__cuda_array_interface__") else None
        if out_dev is not None:
            if out_dev.shape != out_shape or out_dev.dtype != io.out_dtype or out_dev.readonly:
                raise DataError(f"device out {out_dev.shape} {out_dev.dtype} must be a writable {out_shape} "
                                f"{io.out_dtype} array")
            result: Any = out
        elif out is not None:
            result = self._check_out(out, rows)
        else:
            result = np.empty(out_shape, dtype=self.output_dtype)
        if rows == 0:
            return result, 0
        # Work queued by the arrays' producers comes first; the caller's stream (``stream=``, else
        # the input's producer stream) is the one that later work is ordered after.
        producers = [cuda.stream_handle(stream)] if stream is not None else []
        producers += [a.stream for a in (x_dev, out_dev) if a is not None and a.stream is not None]
        producers = list(dict.fromkeys(producers))
        caller = producers[0] if producers and (stream is not None or x_dev is not None and x_dev.stream is not None) \
            else None
        self._run(x_host, x_dev, result if out_dev is None else None, out_dev, caller, producers)
        return result, rows

    def _run(self, x_host: np.ndarray | None, x_dev: cuda.DeviceArray | None, out_host: np.ndarray | None,
             out_dev: cuda.DeviceArray | None, caller: int | None, producers: Sequence[int] = ()) -> None:
        """One call: chunks over the lanes held, then one wait (or none, see below)."""
        io = self._io
        source = x_host if x_host is not None else x_dev
        if source is None:
            raise InternalError("a call needs host or device input")
        rows = int(source.shape[0])
        chunks = io.plan(rows, self.cuda_graphs)
        lanes = self._acquire(len(chunks))
        try:
            for producer in producers:  # the producers' queued writes come first
                fence = lanes[0].done
                fence.record(producer)
                for lane in lanes:
                    lane.stream.wait(fence)
            in_flight: dict[int, Chunk] = {}
            for step in lane_schedule(len(chunks), len(lanes)):
                lane, chunk = lanes[step.lane], chunks[step.chunk]
                if step.reuse_of is not None and out_host is not None:  # the lane's output buffer is needed
                    lane.wait_done()
                    self._collect(lane, chunks[step.reuse_of], out_host)
                in_ptr = self._input(lane, chunk, x_host, x_dev)
                out_ptr = self._output_address(lane, chunk, out_dev)
                lane.bind(chunk.profile, chunk.run_rows, in_ptr, out_ptr)
                lane.launch(self.cuda_graphs)
                nbytes = chunk.rows * io.out_row_bytes
                if out_dev is None:
                    cuda.dtoh_async(lane.out_host.ptr, lane.out_dev.ptr, nbytes, lane.stream)
                elif out_ptr == lane.out_dev.ptr:
                    cuda.dtod_async(out_dev.ptr + chunk.start * io.out_row_bytes, lane.out_dev.ptr, nbytes, lane.stream)
                lane.done.record(lane.stream)
                in_flight[step.lane] = chunk
            if out_dev is not None and x_dev is not None and caller is not None:
                # Fully asynchronous (no pinned staging in use): the caller's stream waits for
                # every lane, the host does not wait at all.
                for index in in_flight:
                    cuda.stream_wait(caller, lanes[index].done)
                return
            self._wait_all(lanes, in_flight)
            if out_host is not None:
                for index, chunk in in_flight.items():
                    self._collect(lanes[index], chunk, out_host)
        finally:
            self._release(lanes)

    def _input(self, lane: Lane, chunk: Chunk, x_host: np.ndarray | None, x_dev: cuda.DeviceArray | None) -> int:
        """The device address the chunk's input is read from: the caller's array in place where it may
        be (no padding, aligned, no graph), else the lane's buffer, filled."""
        if x_dev is None:
            if x_host is None:
                raise InternalError("a call needs host or device input")
            return lane.stage_host(x_host, chunk)
        src = x_dev.ptr + chunk.start * self._io.in_row_bytes
        if not chunk.padding and not self.cuda_graphs and aligned(src):
            return src  # zero-copy: the engine reads the caller's memory
        return lane.stage_device(src, chunk)

    def _output_address(self, lane: Lane, chunk: Chunk, out_dev: cuda.DeviceArray | None) -> int:
        """Where the engine writes: the caller's device array in place where it may be, else the
        lane's buffer (copied out after the run)."""
        if out_dev is not None and not chunk.padding and not self.cuda_graphs:
            dst = out_dev.ptr + chunk.start * self._io.out_row_bytes
            if aligned(dst):
                return dst
        return lane.out_dev.ptr

    def _collect(self, lane: Lane, chunk: Chunk, out: np.ndarray) -> None:
        io = self._io
        out[chunk.start:chunk.stop] = lane.out_host.view(io.out_dtype, (chunk.rows, *io.out_row_shape))

    @staticmethod
    def _wait_all(lanes: list[Lane], in_flight: dict[int, Chunk]) -> None:
        """One host synchronisation: the first busy lane's stream waits on the others' events."""
        busy = [lanes[i] for i in in_flight]
        if not busy:
            return
        first = busy[0]
        for lane in busy[1:]:
            first.stream.wait(lane.done)
        first.stream.synchronize()
        for lane in busy:
            lane.finished()

    @contextlib.contextmanager
    def bound_lane(self, rows: int) -> Iterator[Lane]:
        """One lane, held and bound to a chunk of ``rows`` in its own buffers, for launching it alone
        (the benchmark's engine-time probe, ``benchmarks/trt_probes.py``)."""
        chunks = self._io.plan(rows, self.cuda_graphs)
        if len(chunks) != 1:
            raise DataError(f"{rows} rows do not fit one profile; pick at most {self.max_chunk}")
        self._enter()
        lanes: list[Lane] = []
        try:
            self._use_device()
            lanes = self._acquire(1)
            lane, chunk = lanes[0], chunks[0]
            lane.bind(chunk.profile, chunk.run_rows, lane.in_dev.ptr, lane.out_dev.ptr)
            yield lane
        finally:
            self._release(lanes)
            self._leave()

    # -- closing -------------------------------------------------------------------------------
    def _close_impl(self) -> None:
        lanes, self._lanes = getattr(self, "_lanes", []), []
        self._free = []
        errors = []
        for lane in lanes:
            try:
                lane.stream.synchronize()  # nothing may still use the buffers being freed
            except cuda.CudaError as exc:
                errors.append(exc)
            lane.close()
        # Contexts first (lane.close), then the engine, then the runtime: TensorRT's ownership order.
        self._engine = None
        self._runtime = None
        if errors:
            raise errors[0]

