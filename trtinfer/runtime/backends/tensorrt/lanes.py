"""One lane of the TensorRT backend: an execution context with its own stream, buffers, events and
CUDA graphs, which only one call uses at a time (the rules it keeps are in :mod:`.runner`'s docstring).

Per chunk: ``set_optimization_profile_async`` (only when the profile changes), ``set_input_shape``
and ``set_tensor_address`` (only when they change), then ``execute_async_v3`` or a graph replay.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import numpy as np

from ....errors import BackendUnavailable, DataError, InternalError, TrtInferError
from ...planning import Chunk, GraphCache, aligned
from . import cuda, loader
from .cuda_graphs import CudaGraph
from .engine_io import EngineIO

log = logging.getLogger(__name__)
_R = TypeVar("_R")


class Lane:
    """One execution context and everything only it uses."""

    def __init__(self, index: int, engine: Any, io: EngineIO, graph_capacity: int) -> None:
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
                                f"({io.profiles[profile]}){loader.logged_error()}")
            self.rows = rows
            self.update_pending = True
        if self.addresses != (in_ptr, out_ptr):
            if not (aligned(in_ptr) and aligned(out_ptr)):
                raise InternalError(f"tensor addresses {in_ptr:#x}, {out_ptr:#x} are not 256-byte aligned")
            if not (self.context.set_tensor_address(io.input_name, in_ptr)
                    and self.context.set_tensor_address(io.output_name, out_ptr)):
                self.addresses = None  # the input may be set and the output not: set both next time
                raise InternalError(f"TensorRT refused tensor addresses {in_ptr:#x}, {out_ptr:#x}"
                                    f"{loader.logged_error()}")
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
            self.graphs.put(key, CudaGraph(stream, lambda: self._execute(stream)))
        except (cuda.CudaError, TrtInferError) as exc:
            self.graphs_ok = False
            log.warning("CUDA graph capture failed on lane %d (%s); running without graphs", self.index,
                        exc.one_line())

    def _execute(self, stream: int) -> None:
        if not self.context.execute_async_v3(stream):
            raise TrtInferError(f"TensorRT execute_async_v3 failed on lane {self.index}{loader.logged_error()}",
                                hint="run with -vv (TensorRT log) for details")
        self.update_pending = False

    def close(self) -> None:
        self.graphs.clear()
        owned, self._owned = self._owned, []
        for resource in reversed(owned):
            resource.close()
        self.context = None  # TensorRT frees a context when its last reference goes
