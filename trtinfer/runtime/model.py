"""The :class:`Model` every backend shares: public methods hold the guards, backends do the work.

A backend subclass implements ``_open`` (load the verified model bytes), ``_infer_impl`` (run a
checked, C-contiguous float32 batch of any size >= 1) and ``_close_impl`` (free everything);
``infer``, ``predict``, ``submit``, ``infer_async``, ``close`` and the statistics live here once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import warnings
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, InternalError, TrtInferError
from ..manifest import Manifest
from .batcher import DynamicBatcher, ModelClosedError
from .handoff import LoopFuture
from .options import (DEFAULT_CPU_CHUNK, DEFAULT_CPU_MAX_BATCH, MAX_TIMEOUT_MS, RuntimeOptions, check_number,
                      check_timeout_s, is_integer)
from .stats import Stats, StatsSnapshot

log = logging.getLogger(__name__)

_minimum, _maximum = np.minimum.reduce, np.maximum.reduce  # reduce(x, None): over every axis
# np.vdot, not np.dot: dot (and matmul) check the floating-point flags afterwards, so an inf (0 * inf) warned
# "invalid value", or raised under np.errstate(all="raise"), before our DataError; vdot does neither (tested).
_vdot = np.vdot
# The finite check's dot product covers inputs up to this many values (two rows of 3x32x32): BLAS may
# split longer ones over its own threads, which would wake beside the backend's. Larger inputs take min and max.
DOT_CHECK_MAX = 8192


class Model:
    """One loaded artifact on one backend. Thread-safe; use it as a context manager or ``close()`` it.

    Attributes: ``backend`` (the backend's name), ``backend_reason`` (why ``load`` picked it),
    ``manifest``, ``labels``, ``input_shape`` (``(-1, C, H, W)``), ``num_classes``,
    ``max_chunk`` (most rows one backend run takes; larger inputs are split and reassembled),
    ``max_batch`` (the batcher's batch size), ``concurrency`` (runs the backend overlaps).
    """

    backend = "abstract"
    #: Whether ``infer`` takes device arrays (``__cuda_array_interface__``) without a host copy.
    accepts_device_arrays = False

    def __init__(self, artifact_dir: str | Path, manifest: Manifest, options: RuntimeOptions,
                 model_bytes: bytes, backend_reason: str = "") -> None:
        self.artifact_dir = Path(artifact_dir)
        self.manifest = manifest
        self.options = options
        self.backend_reason = backend_reason
        self.execution = self.backend  # load(backend="auto") names the CPU execution, e.g. "openvino-bf16"
        self.row_shape: tuple[int, ...] = tuple(int(d) for d in manifest.input.shape[1:])
        self.input_shape = (-1, *self.row_shape)
        self.output_row_shape: tuple[int, ...] = tuple(int(d) for d in manifest.output.shape[1:])
        self.dtype = np.dtype(np.float32)
        self.output_dtype = np.dtype(np.float32)
        self.max_chunk = options.chunk_size or DEFAULT_CPU_CHUNK
        self.concurrency = 1
        self.default_max_batch = DEFAULT_CPU_MAX_BATCH
        self._stats = Stats()
        # The calls in flight, one entry each: a deque's append and pop are atomic, so a direct call takes no lock
        # (the locked counter cost 8 us right after a backend's run, 4 us this way); close() waits on _state.
        self._calls: deque[None] = deque()
        self._state = threading.Condition(threading.Lock())
        # The finite check's other operand, by input size: views of one 32 KB array of zeros, for 1 to 4 rows
        # within DOT_CHECK_MAX (a dict lookup: slicing one per call cost 3 us more, cold).
        row = math.prod(self.row_shape)
        zeros = np.zeros(DOT_CHECK_MAX, self.dtype)
        self._zeros = {k * row: zeros[:k * row] for k in range(1, min(4, DOT_CHECK_MAX // max(row, 1)) + 1)}
        self._closed = False
        self._batcher: DynamicBatcher | None = None
        self._batcher_lock = threading.Lock()
        # load(backend="auto") may route single rows to another execution measured faster at batch 1
        self._single: Model | None = None
        self.single_execution: str | None = None
        # NaN/inf input gets a different answer from each backend (NaN from one, a confident class
        # from another), so host input is refused unless the caller vouches for it.
        self._check_finite = bool(getattr(options, "check_finite", True))
        # Freed is tracked apart from closed: a close() whose timeout ran out with work still running
        # leaves the backend open, and a later close() must still free it.
        self._free_lock = threading.Lock()
        self._freed = False
        self._opened = False
        self._open(model_bytes)
        self._opened = True
        self._empty = np.empty((0, *self.output_row_shape), dtype=self.output_dtype)
        self.max_batch = options.max_batch or self.default_max_batch

    # -- what backends implement -------------------------------------------------------------
    def _open(self, model_bytes: bytes) -> None:
        raise NotImplementedError

    def _infer_impl(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """Run ``x`` (C-contiguous ``self.dtype``, ``len(x) >= 1``, any size); return ``(len(x), *output_row_shape)``,
        written into ``out`` when given. Must be safe to call from ``concurrency`` threads at once."""
        raise NotImplementedError

    def _infer_device(self, x: Any, out: Any, stream: Any) -> tuple[Any, int]:
        """Device-array inference (backends with ``accepts_device_arrays``): (result, rows)."""
        raise NotImplementedError

    def _close_impl(self) -> None:
        raise NotImplementedError

    def route_single_rows(self, model: Model) -> None:
        """Run one-row calls (direct, and the batcher's one-row batches) on ``model``: another execution of the
        same artifact, which ``auto`` measured faster at batch 1. It is closed with this model."""
        self._single = model
        self.single_execution = model.execution

    def _execution_for(self, rows: int) -> Model:
        """The model whose backend runs ``rows`` rows: the single-row execution for one row, when routed."""
        single = self._single
        return single if rows == 1 and single is not None else self

    # -- facts ------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def num_classes(self) -> int:
        return int(self.manifest.num_classes)

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<trtinfer.Model {self.manifest.name!r} {self.manifest.precision} backend={self.backend} "
                f"input={list(self.input_shape)} max_batch={self.max_batch} {state}>")

    # -- guards ------------------------------------------------------------------------------
    def _enter(self) -> None:
        """Count a call in, unless close() has begun. The call is counted before ``_closed`` is read and close()
        sets ``_closed`` before it reads the count, so either the call sees it and leaves, or close() waits for it."""
        self._calls.append(None)
        if self._closed:
            self._leave()
            raise ModelClosedError(f"{self.manifest.name!r} is closed",
                                   hint="load the artifact again (trtinfer.load) to run it")

    def _leave(self) -> None:
        calls = self._calls
        calls.pop()
        if not calls and self._closed:  # close() may be waiting: it reads the count under _state's lock
            with self._state:
                self._state.notify_all()

    def _check_host(self, x: Any, finite: bool = True) -> tuple[np.ndarray, bool]:
        """A float32 NCHW batch (or one CHW sample) -> (C-contiguous batch, was a single sample); with
        ``finite`` (and ``check_finite``), NaN/inf is refused here (the batcher screens whole batches instead)."""
        if type(x) is not np.ndarray:
            if hasattr(x, "__cuda_array_interface__"):
                raise DataError(f"the {self.backend} backend takes host (numpy) arrays, got a device array",
                                hint="copy it to the host first (e.g. tensor.cpu().numpy()), or load with "
                                     "backend='tensorrt' on a GPU host for zero-copy device input")
            x = np.asarray(x)
        if x.dtype is not self.dtype and x.dtype != self.dtype:  # numpy's float32 dtype is one object
            raise DataError(f"input dtype is {x.dtype}; the model takes {self.dtype} (NCHW, preprocessed)",
                            hint="convert with x.astype(np.float32), or pass images to predict()")
        shape = x.shape
        if shape[1:] == self.row_shape:
            single = False
        elif shape == self.row_shape:
            x = x[None]
            single = True
        else:
            raise DataError(f"input shape {tuple(shape)} does not fit the model's {('N', *self.row_shape)} "
                            f"(or one sample {self.row_shape})",
                            hint="resize and lay images out as NCHW, or pass images to predict()")
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        if finite and self._check_finite:
            error = self._non_finite_error(x, single)
            if error is not None:
                raise error
        return x, single

    def _non_finite_error(self, x: np.ndarray, single: bool) -> DataError | None:
        """None when ``x`` is all finite, else the DataError naming its rows that hold NaN or inf.

        The dot product with zeros is exactly 0 when every value is finite and NaN otherwise (0 * inf is NaN),
        however large the finite values (a sum would overflow to inf). Right after the backend's run has filled
        the core's caches it took 10-12 us on a 1x3x32x32 sample, min and max as ufunc reductions 14-17 us
        (they propagate NaN, show inf and allocate nothing: the check for inputs of over 4 rows or
        ``DOT_CHECK_MAX`` values) and ``ndarray.min``'s Python wrapper 19-23 us (AMX Xeon, ResNet-18 at
        32x32); the whole check 14-16 us against 21-23 before. The batcher screens each batch
        once rather than each request. The rows are located only when the check fails."""
        zeros = self._zeros.get(x.size)
        if zeros is not None:
            if _vdot(x, zeros) == 0.0:  # vdot reads a C-contiguous x flat, without a copy
                return None
        elif not x.size or (math.isfinite(_minimum(x, None)) and math.isfinite(_maximum(x, None))):
            return None
        finite_rows = np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
        bad = np.flatnonzero(~finite_rows)
        hint = ("fix or drop them (backends answer NaN/inf differently: NaN on one, a confident class on another); "
                "load with check_finite=False only if your data is guaranteed finite")
        if single:
            count = int(np.count_nonzero(~np.isfinite(x)))
            return DataError(f"the input sample holds NaN or inf in {count} of its {x[0].size} values", hint=hint)
        shown = ", ".join(str(int(i)) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
        return DataError(f"input rows hold NaN or inf: {len(bad)} of {x.shape[0]} row(s) (row {shown})", hint=hint)

    def _check_out(self, out: Any, rows: int) -> np.ndarray:
        expected = (rows, *self.output_row_shape)
        if not isinstance(out, np.ndarray) or out.shape != expected or out.dtype != self.output_dtype \
                or not out.flags.c_contiguous or not out.flags.writeable:
            got = f"{type(out).__name__} {getattr(out, 'shape', '')} {getattr(out, 'dtype', '')}"
            raise DataError(f"out must be a writable C-contiguous {self.output_dtype} array of shape {expected}, "
                            f"got {got}")
        return out

    # -- inference ---------------------------------------------------------------------------
    def infer(self, x: Any, *, out: Any = None, stream: Any = None) -> Any:
        """Logits for a float32 NCHW batch of any size (0 included; beyond ``max_chunk`` it is split
        and reassembled in order), or for one CHW sample (then a 1-D result).

        ``out`` receives the result when given. On the TensorRT backend ``x`` and ``out`` may be
        device arrays (``__cuda_array_interface__``) and ``stream`` the caller's CUDA stream.
        """
        self._enter()
        try:
            start = time.perf_counter()
            if self.accepts_device_arrays and (hasattr(x, "__cuda_array_interface__")
                                               or hasattr(out, "__cuda_array_interface__")):
                result, rows = self._infer_device(x, out, stream)
            else:
                batch, single = self._check_host(x)
                rows = batch.shape[0]
                target = None
                if out is not None:
                    target = self._check_out(out[None] if single and isinstance(out, np.ndarray) else out, rows)
                if rows == 0:
                    result = self._empty.copy() if target is None else target
                else:
                    result = self._execution_for(rows)._infer_impl(batch, target)
                if out is not None:
                    result = out
                elif single:
                    result = result[0]
            self._stats.record_infer(rows, time.perf_counter() - start)
            return result
        finally:
            self._leave()

    def __call__(self, x: Any, **kwargs: Any) -> Any:
        return self.infer(x, **kwargs)

    def predict(self, images: Any, top_k: int = 3) -> list[list[tuple[str, float]]]:
        """PIL images, uint8 HWC arrays or a uint8 NHWC batch -> ``[(label, probability), ...]`` per
        image, best first, preprocessed exactly as the manifest says (the calibration's code)."""
        from ..preprocess import preprocess

        if not is_integer(top_k) or top_k < 1:  # True is an int to Python, never a count here
            raise DataError(f"predict() top_k={top_k!r} must be an integer >= 1",
                            hint="the number of best labels to return per image, e.g. top_k=3")
        top_k = int(top_k)
        batch = preprocess(images, self.manifest.preprocess)
        logits = self.infer(batch)
        return top_k_labels(logits, self.labels, top_k)

    # -- batching ----------------------------------------------------------------------------
    def _ensure_batcher(self) -> DynamicBatcher:
        batcher = self._batcher
        if batcher is not None:
            return batcher
        with self._batcher_lock:
            if self._batcher is None:
                if self._closed:
                    raise ModelClosedError(f"{self.manifest.name!r} is closed",
                                           hint="load the artifact again (trtinfer.load) to run it")
                opts = self.options
                self._batcher = DynamicBatcher(
                    self._run_batch, row_shape=self.row_shape, dtype=self.dtype, max_batch=self.max_batch,
                    max_delay_s=opts.max_delay_ms / 1e3, max_queue=opts.max_queue,
                    timeout_s=None if opts.timeout_ms is None else opts.timeout_ms / 1e3,
                    concurrency=opts.workers or self.concurrency, stats=self._stats,
                    refuse=self._non_finite_error if self._check_finite else None,
                    name=f"trtinfer-{self.backend}")
            return self._batcher

    def _run_batch(self, batch: np.ndarray) -> np.ndarray:
        return self._execution_for(len(batch))._infer_impl(batch, None)

    def submit(self, x: Any, timeout: float | None = None) -> Future:
        """Queue a batch (or one sample) for the dynamic batcher; the future's result holds exactly
        this request's rows. ``timeout`` (seconds) bounds the time spent queued.

        Raises at once, without queueing: DataError for a wrong shape or dtype, OverloadedError when
        the queue is full, ModelClosedError after ``close()``. Input holding NaN or inf fails its future
        with DataError before its batch runs (the batcher checks each batch once, not each request); the
        rest of that batch runs. Do not modify ``x`` until the future is done.
        """
        future: Future = Future()
        self._enqueue(x, timeout, future)
        return future

    async def infer_async(self, x: Any, timeout: float | None = None) -> Any:
        """``await model.infer_async(x)``: :meth:`submit` for coroutines; cancelling the await
        cancels the request if it has not started. A batch's results reach the event loop in one
        wake-up (:mod:`.handoff`), not one per request."""
        future = LoopFuture(asyncio.get_running_loop())
        self._enqueue(x, timeout, future)
        return await future.waiter

    def _enqueue(self, x: Any, timeout: float | None, future: Future | LoopFuture) -> None:
        if self._closed:
            raise ModelClosedError(f"{self.manifest.name!r} is closed",
                                   hint="load the artifact again (trtinfer.load) to run it")
        if timeout is not None:
            timeout = check_timeout_s("submit()", timeout)
        batch, single = self._check_host(x, finite=False)
        rows = batch.shape[0]
        if rows == 0:
            future.set_running_or_notify_cancel()
            future.set_result(self._empty.copy())
            return
        (self._batcher or self._ensure_batcher()).enqueue(batch, rows, single, timeout, future)

    # -- statistics --------------------------------------------------------------------------
    def stats(self) -> StatsSnapshot:
        """Requests, batches, the batch-size histogram, queue depth and latency percentiles."""
        return self._stats.snapshot()

    def add_batch_observer(self, observer: Any) -> None:
        """``observer(rows, ok, queued_seconds, compute_seconds)`` after each batch the dynamic batcher
        runs (``queued_seconds``: one per request); for metrics exporters. It must be quick and not raise."""
        self._stats.add_observer(observer)

    def reset_stats(self) -> None:
        self._stats.reset()

    # -- lifetime ----------------------------------------------------------------------------
    def close(self, timeout: float | None = None) -> None:
        """Finish accepted requests and in-flight calls, then free every backend resource.

        New calls and submissions fail with ModelClosedError from the moment it starts. With
        ``timeout`` (seconds): once it passes, queued requests that have not started fail with
        ModelClosedError ("closed before this request ran"); if a batch or a direct call is still
        running then, the backend is left open under it (freeing it would crash that run) and
        TrtInferError says so; a later ``close()`` waits for it and frees the backend.
        Idempotent once the backend is freed.
        """
        if timeout is not None:
            timeout = check_number("close()", "timeout", timeout, 0.0, MAX_TIMEOUT_MS / 1e3, unit=" seconds",
                                   hint="seconds to wait for running work, or None to wait until it ends")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._state:
            if self._freed:
                return
            self._closed = True
        with self._batcher_lock:
            batcher = self._batcher
        if batcher is not None:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not batcher.close(wait=True, timeout=remaining):
                raise TrtInferError(f"close(timeout={timeout:g}) ran out while a batch was still running; "
                                    "the backend stays open until it ends",
                                    hint="call close() again (without a timeout) to wait for it and free the backend")
        with self._state:
            while self._calls:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TrtInferError(f"close(timeout={timeout:g}) ran out with {len(self._calls)} infer call(s) "
                                        "still running; the backend stays open until they end",
                                        hint="call close() again (without a timeout) to wait for them and free it")
                self._state.wait(remaining)
        with self._free_lock:  # concurrent close() calls free once, and each returns after it is done
            if self._opened:
                self._opened = False
                try:
                    self._close_impl()
                finally:
                    self._freed = True
                    if self._single is not None:  # no call can be running on it: they all passed _enter
                        self._single.close()
        log.debug("closed %r", self)

    def __enter__(self) -> Model:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # Only a warning: freeing from a finaliser can run at interpreter shutdown, when the
        # backend's libraries may already be gone.
        if getattr(self, "_opened", False) and not getattr(self, "_closed", True):
            warnings.warn(f"{self!r} was never closed; call close() or use `with trtinfer.load(...)`",
                          ResourceWarning, stacklevel=2)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64, copy=True)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def top_k_labels(logits: np.ndarray, labels: Sequence[str], top_k: int) -> list[list[tuple[str, float]]]:
    """Logits ``(N, K)`` -> per row, the ``top_k`` best ``(label, probability)``."""
    if logits.ndim != 2:
        raise InternalError(f"expected (N, K) logits, got shape {logits.shape}")
    if len(labels) != logits.shape[1]:
        raise DataError(f"the manifest lists {len(labels)} labels but the model outputs {logits.shape[1]} classes",
                        hint="rebuild the artifact with matching --labels")
    k = min(top_k, logits.shape[1])
    probs = softmax(logits)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(labels[j], float(row[j])) for j in idx] for row, idx in zip(probs, order)]
