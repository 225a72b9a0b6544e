"""TensorRT on the GPU: a thin layer that carries out :mod:`.planning`'s plans with :mod:`.cuda`.

``streams=N`` lanes, each an execution context (not thread-safe: one caller at a time) with its
own non-blocking CUDA stream, pinned host staging and device buffers sized once for the largest
profile MAX, and two events (upload done, chunk done). A call splits its rows into chunks some
profile can run (:func:`~.planning.plan_chunks`), rotates them over the lanes it holds
(:func:`~.planning.lane_schedule`) so one chunk's copies overlap another's compute, and waits
once at the end: the first lane's stream waits on the others' events and is synchronised.

Ordering rules (CUDA runs queued work later; the host must not get ahead of it):

* a lane's pinned input buffer is refilled only after its previous upload ran (the upload event),
  and its pinned output buffer is read only after its chunk finished (the done event);
* a device array's producer may still be writing it: the lanes first wait on the producer's
  stream (``stream=``, else :func:`.cuda.producer_stream`'s rule: torch's current stream for
  torch tensors);
* TensorRT needs 256-byte aligned tensor addresses: chunks are cut at multiples of
  :func:`~.planning.zero_copy_granule` rows so they stay aligned, and a chunk whose address is
  not aligned (a slice of an array) is copied through the lane's buffers instead of bound in place;
* with ``cuda_graphs=True`` a lane keeps one graph per (profile, batch size), batch sizes rounded
  up to :func:`~.planning.graph_batch_sizes`; graphs always read and write the lane's own
  buffers (device arrays are copied in and out: a graph replays the addresses it was captured
  with), and after a profile or shape change the first launch is a regular ``execute_async_v3``,
  which applies TensorRT's pending updates, before any graph is captured or replayed.

Per chunk: ``set_optimization_profile_async`` (only when the profile changes),
``set_input_shape`` and ``set_tensor_address`` (only when they change), ``execute_async_v3``.
Engines with more than one input or output are refused at load: every output would need an address.

TensorRT and cuda-python are imported when a model is loaded, never at import time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from ..errors import ArtifactError, BackendUnavailable, DataError, InternalError, TrtInferError
from . import cuda
from .model import Model
from ..manifest import BatchProfile
from .planning import (Chunk, GraphCache, aligned, buffer_bytes, graph_chunks, lane_schedule, lanes_for_call,
                       plan_chunks, row_bytes, zero_copy_granule)

log = logging.getLogger(__name__)
_R = TypeVar("_R")


class PlanIncompatibleError(ArtifactError):
    """The plan was built for another TensorRT version or GPU, or TensorRT cannot deserialize it."""


def _rebuild_hint(directory: Any) -> str:
    return f"rebuild with `trtinfer build --from-onnx {directory}`"


class _Lane:
    """One execution context and everything only it uses."""

    def __init__(self, index: int, engine: Any, io: _EngineIO, graph_capacity: int) -> None:
        self.index = index
        self.io = io
        self.context: Any = None
        self._owned: list[Any] = []  # CUDA resources, freed in reverse order by close()
        self.upload_pending = False  # in_host may still be read by a queued upload
        self.graphs: GraphCache = GraphCache(graph_capacity, on_evict=lambda g: g.close())
        self.graphs_ok = graph_capacity > 0
        self.profile: int | None = None
        self.rows: int | None = None
        self.addresses: tuple[int, int] | None = None
        self.update_pending = False  # a profile or shape change TensorRT applies on the next execute_async_v3
        try:
            self.context = engine.create_execution_context()
            if self.context is None:
                raise BackendUnavailable("TensorRT could not create an execution context (out of GPU memory?)",
                                         hint="load with fewer streams, or free GPU memory")
            self.stream = self._own(cuda.Stream())
            self.done = self._own(cuda.Event())  # recorded after a chunk's last operation
            self.uploaded = self._own(cuda.Event())  # recorded after the upload from in_host
            self.in_host = self._own(cuda.PinnedBuffer(io.in_bytes))
            self.out_host = self._own(cuda.PinnedBuffer(io.out_bytes))
            self.in_dev = self._own(cuda.DeviceBuffer(io.in_bytes))
            self.out_dev = self._own(cuda.DeviceBuffer(io.out_bytes))
        except BaseException:
            self.close()
            raise

    def _own(self, resource: _R) -> _R:
        self._owned.append(resource)
        return resource

    # -- staging ---------------------------------------------------------------------------------
    def stage_host(self, x: np.ndarray, chunk: Chunk) -> int:
        """Copy a chunk's host rows (zero padding after them) into the pinned buffer and queue the
        upload; returns the device address. Waits first if the buffer's last upload has not run."""
        io = self.io
        if self.upload_pending:
            self.uploaded.synchronize()
        staged = self.in_host.view(io.in_dtype, (chunk.run_rows, *io.row_shape))
        staged[:chunk.rows] = x[chunk.start:chunk.stop]  # casts when the engine takes fp16
        if chunk.padding:
            staged[chunk.rows:] = 0
        cuda.htod_async(self.in_dev.ptr, self.in_host.ptr, chunk.run_rows * io.in_row_bytes, self.stream)
        self.uploaded.record(self.stream)
        self.upload_pending = True
        return self.in_dev.ptr

    def stage_device(self, src: int, chunk: Chunk) -> int:
        """Copy a chunk's device rows (zero padding after them) into the lane's device buffer."""
        io = self.io
        cuda.dtod_async(self.in_dev.ptr, src, chunk.rows * io.in_row_bytes, self.stream)
        if chunk.padding:
            cuda.memset_async(self.in_dev.ptr + chunk.rows * io.in_row_bytes, 0, chunk.padding * io.in_row_bytes,
                              self.stream)
        return self.in_dev.ptr

    def wait_done(self) -> None:
        """Wait for the lane's last chunk (its upload came before it)."""
        self.done.synchronize()
        self.finished()

    def finished(self) -> None:
        """The host has waited for everything queued on this lane."""
        self.upload_pending = False

    # -- binding ---------------------------------------------------------------------------------
    def bind(self, profile: int, rows: int, in_ptr: int, out_ptr: int) -> None:
        """Profile, input shape and tensor addresses, each set only when it changes."""
        io = self.io
        if self.profile != profile:
            try:
                self.context.set_optimization_profile_async(profile, self.stream.handle)
            except RuntimeError as exc:  # the bindings raise when TensorRT refuses
                raise InternalError(f"TensorRT refused optimization profile {profile}: {exc}") from exc
            self.profile, self.rows, self.addresses = profile, None, None
            self.update_pending = True
        if self.rows != rows:
            if not self.context.set_input_shape(io.input_name, (rows, *io.row_shape)):
                raise DataError(f"TensorRT refused input shape {(rows, *io.row_shape)} for profile {profile} "
                                f"({io.profiles[profile]}){_trt_errors()}")
            self.rows = rows
            self.update_pending = True
        if self.addresses != (in_ptr, out_ptr):
            if not (aligned(in_ptr) and aligned(out_ptr)):
                raise InternalError(f"tensor addresses {in_ptr:#x}, {out_ptr:#x} are not 256-byte aligned")
            if not (self.context.set_tensor_address(io.input_name, in_ptr)
                    and self.context.set_tensor_address(io.output_name, out_ptr)):
                self.addresses = None  # the input may be set and the output not: set both next time
                raise InternalError(f"TensorRT refused tensor addresses {in_ptr:#x}, {out_ptr:#x}{_trt_errors()}")
            self.addresses = (in_ptr, out_ptr)

    def launch(self, use_graphs: bool) -> None:
        """Run the bound chunk: a graph replay where one is captured and no update is pending, else
        a regular launch (then a capture of it, for next time)."""
        stream = self.stream.handle
        if not (use_graphs and self.graphs_ok):
            self._execute(stream)
            return
        if self.addresses != (self.in_dev.ptr, self.out_dev.ptr):
            raise InternalError("a CUDA graph must use the lane's own buffers (graphs replay their addresses)")
        key = (self.profile, self.rows)
        graph = self.graphs.get(key)
        if graph is not None and not self.update_pending:
            graph.launch(stream)
            return
        # TensorRT applies profile and shape changes on the first execute_async_v3 after them, which
        # must neither be captured nor skipped by a replay: run it plainly (this call's real work).
        self._execute(stream)
        if graph is not None:
            return
        try:
            self.graphs.put(key, cuda.CudaGraph(stream, lambda: self._execute(stream)))
        except (cuda.CudaError, TrtInferError) as exc:
            self.graphs_ok = False
            log.warning("CUDA graph capture failed on lane %d (%s); running without graphs", self.index,
                        exc.one_line())

    def _execute(self, stream: int) -> None:
        if not self.context.execute_async_v3(stream):
            raise TrtInferError(f"TensorRT execute_async_v3 failed on lane {self.index}{_trt_errors()}",
                                hint="run with -vv (TensorRT log) for details")
        self.update_pending = False

    def close(self) -> None:
        self.graphs.clear()
        owned, self._owned = self._owned, []
        for resource in reversed(owned):
            resource.close()
        self.context = None  # TensorRT frees a context when its last reference goes


def _trt_errors() -> str:
    try:
        from .. import trt_support

        errors = trt_support.trt_logger().drain_errors()
    except Exception:  # noqa: BLE001 -- diagnostics only
        return ""
    return f": {errors[-1]}" if errors else ""


def _numpy_dtype(trt: Any, engine: Any, name: str) -> np.dtype:
    """numpy's dtype for an I/O tensor (trtinfer engines take and give float32 or float16)."""
    known = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT8: np.int8,
             trt.DataType.INT32: np.int32, trt.DataType.UINT8: np.uint8, trt.DataType.BOOL: np.bool_}
    found = known.get(engine.get_tensor_dtype(name))
    if found is None:
        raise ArtifactError(f"engine tensor {name!r} has type {engine.get_tensor_dtype(name)}, which has no numpy "
                            "equivalent", hint="rebuild the engine with float32 or float16 inputs and outputs")
    return np.dtype(found)


class _EngineIO:
    """Names, dtypes, shapes, profiles and staging sizes read from the engine."""

    def __init__(self, trt: Any, engine: Any, manifest: Any, limit: int | None) -> None:
        count = engine.num_io_tensors
        inputs = [engine.get_tensor_name(i) for i in range(count)
                  if engine.get_tensor_mode(engine.get_tensor_name(i)) == trt.TensorIOMode.INPUT]
        outputs = [engine.get_tensor_name(i) for i in range(count)
                   if engine.get_tensor_mode(engine.get_tensor_name(i)) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            # TensorRT needs an address for every output before execute_async_v3; an engine with
            # outputs nobody reads is not one trtinfer built, so it is refused rather than half-bound.
            raise ArtifactError(f"the engine has inputs {inputs} and outputs {outputs}; trtinfer runs classifiers "
                                "with one input and one output (the logits)",
                                hint="rebuild the artifact with `trtinfer build`, or export the model with only "
                                     "its logits as output")
        self.input_name = str(inputs[0])
        self.output_name = str(outputs[0])
        if self.output_name != manifest.output.name:
            raise ArtifactError(f"the engine's output is {self.output_name!r}, the manifest says "
                                f"{manifest.output.name!r}", hint="rebuild the artifact with `trtinfer build`")
        for name in (self.input_name, self.output_name):
            if engine.get_tensor_location(name) != trt.TensorLocation.DEVICE:
                raise ArtifactError(f"engine tensor {name!r} does not live on the GPU", hint="rebuild the engine")
            if engine.get_tensor_format(name) != trt.TensorFormat.LINEAR:
                raise ArtifactError(f"engine tensor {name!r} is not in linear layout", hint="rebuild the engine")
        self.in_dtype = _numpy_dtype(trt, engine, self.input_name)
        self.out_dtype = _numpy_dtype(trt, engine, self.output_name)
        in_shape = tuple(engine.get_tensor_shape(self.input_name))
        out_shape = tuple(engine.get_tensor_shape(self.output_name))
        self.row_shape = tuple(int(d) for d in in_shape[1:])
        self.out_row_shape = tuple(int(d) for d in out_shape[1:])
        ranges = []
        for p in range(engine.num_optimization_profiles):
            low, opt, high = (tuple(s) for s in engine.get_tensor_profile_shape(self.input_name, p))
            if low[1:] != self.row_shape or high[1:] != self.row_shape:
                raise ArtifactError(f"profile {p} varies more than the batch dimension ({low} .. {high})",
                                    hint="rebuild the engine with only the batch dimension dynamic")
            ranges.append((int(low[0]), int(opt[0]), int(high[0])))
        if not ranges:  # a static engine: its one shape is its only profile
            ranges = [(int(in_shape[0]),) * 3]
        try:
            self.profiles = [BatchProfile(*r) for r in ranges]
        except ValueError as exc:
            raise ArtifactError(f"the engine's optimization profiles are invalid: {exc}",
                                hint="rebuild the engine with `trtinfer build --from-onnx DIR`") from None
        self.max_rows = max(p.max for p in self.profiles)
        if limit is not None:
            self.max_rows = min(self.max_rows, max(limit, min(p.min for p in self.profiles)))
        self.in_row_bytes = row_bytes(self.row_shape, self.in_dtype.itemsize)
        self.out_row_bytes = row_bytes(self.out_row_shape, self.out_dtype.itemsize)
        self.in_bytes = buffer_bytes(self.max_rows, self.row_shape, self.in_dtype.itemsize)
        self.out_bytes = buffer_bytes(self.max_rows, self.out_row_shape, self.out_dtype.itemsize)
        # Chunks cut at multiples of this many rows start 256-byte aligned in both tensors.
        self.granule = zero_copy_granule(self.in_row_bytes, self.out_row_bytes)

    def plan(self, rows: int, graphs: bool) -> list[Chunk]:
        chunks = plan_chunks(rows, self.profiles, limit=self.max_rows, granule=self.granule)
        return graph_chunks(chunks, self.profiles, self.max_rows) if graphs else chunks


class TensorRTModel(Model):
    backend = "tensorrt"
    accepts_device_arrays = True

    # -- loading -------------------------------------------------------------------------------
    def _open(self, model_bytes: bytes) -> None:
        from .. import trt_support

        self._lanes: list[_Lane] = []
        self._engine: Any = None
        self._runtime: Any = None
        trt = trt_support.import_tensorrt()
        device = self.options.device
        info = cuda.gpu_info(device)
        try:
            trt_support.check_plan_compatible(self.manifest, str(trt.__version__), info["name"],
                                              info["compute_capability"], self.artifact_dir)
        except ArtifactError as exc:
            raise PlanIncompatibleError(exc.message, hint=exc.hint) from exc
        cuda.set_device(device)
        self._device = device
        self._thread_device = threading.local()
        self._thread_device.device = device
        self.gpu_name = info["name"]
        try:
            self._runtime = trt.Runtime(trt_support.trt_logger())
            self._engine = self._runtime.deserialize_cuda_engine(model_bytes)
            if self._engine is None:
                raise PlanIncompatibleError(f"TensorRT {trt.__version__} could not deserialize "
                                            f"{self.artifact_dir / 'model.plan'}{_trt_errors()}",
                                            hint=_rebuild_hint(self.artifact_dir))
            io = _EngineIO(trt, self._engine, self.manifest, self.options.chunk_size)
            if io.row_shape != self.row_shape:
                raise ArtifactError(f"the engine takes rows of {io.row_shape}, the manifest says {self.row_shape}",
                                    hint=_rebuild_hint(self.artifact_dir))
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
                self._lanes.append(_Lane(i, self._engine, io, graphs))
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
            cuda.set_device(self._device)
            local.device = self._device

    def _acquire(self, chunks: int) -> list[_Lane]:
        """One lane, blocking; then up to ``chunks - 1`` more that are free right now (never more,
        so concurrent callers cannot deadlock holding some lanes each)."""
        with self._lanes_cond:
            while not self._free:
                self._lanes_cond.wait()
            want = lanes_for_call(chunks, len(self._free))
            taken, self._free = self._free[:want], self._free[want:]
        return taken

    def _release(self, lanes: list[_Lane]) -> None:
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

    def _input(self, lane: _Lane, chunk: Chunk, x_host: np.ndarray | None, x_dev: cuda.DeviceArray | None) -> int:
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

    def _output_address(self, lane: _Lane, chunk: Chunk, out_dev: cuda.DeviceArray | None) -> int:
        """Where the engine writes: the caller's device array in place where it may be, else the
        lane's buffer (copied out after the run)."""
        if out_dev is not None and not chunk.padding and not self.cuda_graphs:
            dst = out_dev.ptr + chunk.start * self._io.out_row_bytes
            if aligned(dst):
                return dst
        return lane.out_dev.ptr

    def _collect(self, lane: _Lane, chunk: Chunk, out: np.ndarray) -> None:
        io = self._io
        out[chunk.start:chunk.stop] = lane.out_host.view(io.out_dtype, (chunk.rows, *io.out_row_shape))

    @staticmethod
    def _wait_all(lanes: list[_Lane], in_flight: dict[int, Chunk]) -> None:
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

    # -- measurements for the benchmark ----------------------------------------------------------
    def compute_time_ms(self, rows: int, repeats: int = 50) -> float:
        """The engine's own time per batch of ``rows`` (CUDA events around the launches alone)."""
        chunks = self._io.plan(rows, self.cuda_graphs)
        if len(chunks) != 1:
            raise DataError(f"{rows} rows do not fit one profile; pick at most {self.max_chunk}")
        self._enter()
        lanes: list[_Lane] = []
        try:
            self._use_device()
            lanes = self._acquire(1)
            lane, chunk = lanes[0], chunks[0]
            lane.bind(chunk.profile, chunk.run_rows, lane.in_dev.ptr, lane.out_dev.ptr)
            for _ in range(5):
                lane.launch(self.cuda_graphs)
            with cuda.Event(timing=True) as start, cuda.Event(timing=True) as end:
                start.record(lane.stream)
                for _ in range(repeats):
                    lane.launch(self.cuda_graphs)
                end.record(lane.stream)
                end.synchronize()
                return cuda.Event.elapsed_ms(start, end) / repeats
        finally:
            self._release(lanes)
            self._leave()

    def h2d_bandwidth_gbs(self, nbytes: int = 64 << 20, repeats: int = 10) -> float:
        """Host-to-device bandwidth from a pinned buffer, GB/s."""
        self._use_device()
        with cuda.PinnedBuffer(nbytes) as host, cuda.DeviceBuffer(nbytes) as dev, cuda.Stream() as stream, \
                cuda.Event(timing=True) as start, cuda.Event(timing=True) as end:
            cuda.htod_async(dev.ptr, host.ptr, nbytes, stream)
            start.record(stream)
            for _ in range(repeats):
                cuda.htod_async(dev.ptr, host.ptr, nbytes, stream)
            end.record(stream)
            end.synchronize()
            seconds = cuda.Event.elapsed_ms(start, end) / 1e3
        return nbytes * repeats / seconds / 1e9

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

