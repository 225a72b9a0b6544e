"""The CUDA layer, through cuda-python (``cuda.bindings.runtime``), apart from TensorRT.

* :func:`cuda_call` is the one checked call: cuda-python returns ``(err, *results)``; a failure
  raises :class:`CudaError` carrying the CUDA error's name (``cudaErrorMemoryAllocation``...).
* :class:`PinnedBuffer`, :class:`DeviceBuffer`, :class:`Stream`, :class:`Event` (and
  :class:`~.cuda_graphs.CudaGraph`) own one resource each, as :class:`OwnedResource`: ``close()``
  frees it once (idempotent; it clears the handle it checks), ``with`` closes it, and ``__del__``
  only warns about a leak: freeing from a finaliser can run at interpreter shutdown, after the
  CUDA library is gone.
* :func:`stream_handle` and :func:`device_array` accept other libraries' objects: a stream as an
  int, a torch ``cuda_stream``, a CuPy ``ptr``, a pycuda ``handle`` or ``__cuda_stream__``; device
  arrays through ``__cuda_array_interface__`` (torch, CuPy, pycuda, Numba).

Which GPUs there are is :mod:`.devices`; graph capture and replay is :mod:`.cuda_graphs`.
Importing this module needs nothing but numpy; cuda-python is imported on first use.
"""

from __future__ import annotations

import ctypes
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ....errors import BackendUnavailable, DataError, TrtInferError

_CUDART: Any = None
INSTALL_HINT = ("on a Linux host with an NVIDIA GPU and driver: pip install 'trtinfer[tensorrt]' "
                "(TensorRT 10 or 11 and cuda-python); `trtinfer doctor` shows what is missing")
_IMPORT_LOCK = threading.Lock()

#: CUDA's special stream handles (valid wherever a cudaStream_t is).
LEGACY_DEFAULT_STREAM = 1
PER_THREAD_DEFAULT_STREAM = 2

_HINTS = {
    "cudaErrorMemoryAllocation": "free GPU memory, or load with fewer streams or smaller batch profiles",
    "cudaErrorInsufficientDriver": ("update the NVIDIA driver (CUDA 13 needs R580 or newer), or install the CUDA 12 "
                                    "build: pip install 'trtinfer[tensorrt-cu12]'"),
    "cudaErrorNoDevice": "run on a host with an NVIDIA GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES)",
    "cudaErrorInvalidDevice": "pass a device index that exists (check nvidia-smi)",
    "cudaErrorStreamCaptureUnsupported": "load with cuda_graphs=False",
    "cudaErrorStreamCaptureInvalidated": ("a call CUDA forbids during stream capture invalidated the capture; "
                                          "load with cuda_graphs=False"),
}


class CudaError(TrtInferError):
    """A CUDA call failed; ``name`` is CUDA's error name and ``code`` its number."""

    def __init__(self, what: str, name: str, code: int, detail: str = "") -> None:
        text = f"{what} failed: {name}" + (f" ({detail})" if detail else "")
        super().__init__(text, hint=_HINTS.get(name))
        self.name = name
        self.code = code


def cudart() -> Any:
    """The ``cuda.bindings.runtime`` module (or cuda-python 11/12's ``cuda.cudart``)."""
    global _CUDART
    if _CUDART is None:
        with _IMPORT_LOCK:
            if _CUDART is None:
                try:
                    from cuda.bindings import runtime as module
                except ImportError:
                    try:
                        from cuda import cudart as module  # older cuda-python layout
                    except ImportError as exc:
                        raise BackendUnavailable("cuda-python is not installed", hint=INSTALL_HINT) from exc
                _CUDART = module
    return _CUDART


def error_name(err: Any) -> str:
    name = getattr(err, "name", None)
    return str(name) if name else f"CUDA error {int(err)}"


def cuda_call(result: Any, what: str = "CUDA call") -> Any:
    """Check a cuda-python result ``(err, *values)``; return None, the value, or the values."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    code = int(err)
    if code != 0:
        detail = ""
        try:
            status, text = cudart().cudaGetErrorString(err)
            if int(status) == 0 and text:
                detail = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:  # noqa: BLE001 -- the message is a courtesy; the name is what counts
            pass
        raise CudaError(what, error_name(err), code, detail)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# -- owning objects --------------------------------------------------------------------------
class OwnedResource:
    """Base of the owning objects: ``close`` frees once, ``__del__`` warns if it never ran."""

    _handle: int = 0

    def _free(self, handle: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        handle, self._handle = self._handle, 0
        if handle:
            self._free(handle)

    @property
    def closed(self) -> bool:
        return not self._handle

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_handle", 0):
            warnings.warn(f"{self!r} was never closed (leaked); call close() or use it in a `with` block",
                          ResourceWarning, stacklevel=2)


class PinnedBuffer(OwnedResource):
    """Page-locked host memory (``cudaMallocHost``): the source and target of asynchronous copies."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        if self.nbytes <= 0:
            raise ValueError("a pinned buffer needs at least one byte")
        self._handle = int(cuda_call(cudart().cudaMallocHost(self.nbytes), f"cudaMallocHost({self.nbytes} bytes)"))
        self._bytes: np.ndarray | None = np.ctypeslib.as_array((ctypes.c_ubyte * self.nbytes).from_address(self._handle))

    @property
    def ptr(self) -> int:
        return self._handle

    def view(self, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        """A numpy view of the first ``prod(shape)`` elements; valid only until ``close()``."""
        if not self._handle or self._bytes is None:
            raise TrtInferError("the pinned buffer is closed")
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.itemsize > self.nbytes:
            raise ValueError(f"view of {count * dtype.itemsize} bytes exceeds the buffer's {self.nbytes}")
        return self._bytes[: count * dtype.itemsize].view(dtype).reshape(shape)

    def _free(self, handle: int) -> None:
        self._bytes = None
        cuda_call(cudart().cudaFreeHost(handle), "cudaFreeHost")

    def __repr__(self) -> str:
        return f"<PinnedBuffer {self.nbytes} bytes at {self._handle:#x}>"


class DeviceBuffer(OwnedResource):
    """Device memory (``cudaMalloc``)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        if self.nbytes <= 0:
            raise ValueError("a device buffer needs at least one byte")
        self._handle = int(cuda_call(cudart().cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes} bytes)"))

    @property
    def ptr(self) -> int:
        return self._handle

    def _free(self, handle: int) -> None:
        cuda_call(cudart().cudaFree(handle), "cudaFree")

    def __repr__(self) -> str:
        return f"<DeviceBuffer {self.nbytes} bytes at {self._handle:#x}>"


class Stream(OwnedResource):
    """A non-blocking CUDA stream (never synchronises with the legacy default stream)."""

    def __init__(self, non_blocking: bool = True) -> None:
        rt = cudart()
        flags = rt.cudaStreamNonBlocking if non_blocking else rt.cudaStreamDefault
        self._handle = int(cuda_call(rt.cudaStreamCreateWithFlags(flags), "cudaStreamCreateWithFlags"))

    @property
    def handle(self) -> int:
        return self._handle

    def synchronize(self) -> None:
        cuda_call(cudart().cudaStreamSynchronize(self._handle), "cudaStreamSynchronize")

    def wait(self, event: Event | int) -> None:
        """Later work on this stream waits for ``event`` (no host blocking)."""
        stream_wait(self._handle, event)

    def _free(self, handle: int) -> None:
        cuda_call(cudart().cudaStreamDestroy(handle), "cudaStreamDestroy")

    def __repr__(self) -> str:
        return f"<Stream {self._handle:#x}>"


class Event(OwnedResource):
    """A CUDA event; ``timing=True`` for :meth:`elapsed_ms`, else the cheaper synchronisation-only kind."""

    def __init__(self, timing: bool = False) -> None:
        rt = cudart()
        flags = rt.cudaEventDefault if timing else rt.cudaEventDisableTiming
        self._handle = int(cuda_call(rt.cudaEventCreateWithFlags(flags), "cudaEventCreateWithFlags"))

    @property
    def handle(self) -> int:
        return self._handle

    def record(self, stream: Any) -> None:
        cuda_call(cudart().cudaEventRecord(self._handle, stream_handle(stream)), "cudaEventRecord")

    def synchronize(self) -> None:
        cuda_call(cudart().cudaEventSynchronize(self._handle), "cudaEventSynchronize")

    def query(self) -> bool:
        """True when the work before the last ``record`` has finished."""
        rt = cudart()
        result = rt.cudaEventQuery(self._handle)
        err = result[0] if isinstance(result, tuple) else result
        if err == rt.cudaError_t.cudaErrorNotReady:
            return False
        cuda_call(result, "cudaEventQuery")
        return True

    @staticmethod
    def elapsed_ms(start: Event, end: Event) -> float:
        return float(cuda_call(cudart().cudaEventElapsedTime(start.handle, end.handle), "cudaEventElapsedTime"))

    def _free(self, handle: int) -> None:
        cuda_call(cudart().cudaEventDestroy(handle), "cudaEventDestroy")

    def __repr__(self) -> str:
        return f"<Event {self._handle:#x}>"


# -- copies -----------------------------------------------------------------------------------
def _memcpy_async(dst: int, src: int, nbytes: int, kind_name: str, stream: Any) -> None:
    if nbytes <= 0:
        return
    rt = cudart()
    kind = getattr(rt.cudaMemcpyKind, kind_name)
    cuda_call(rt.cudaMemcpyAsync(int(dst), int(src), int(nbytes), kind, stream_handle(stream)), kind_name)


def htod_async(dst: int, src: int, nbytes: int, stream: Any) -> None:
    _memcpy_async(dst, src, nbytes, "cudaMemcpyHostToDevice", stream)


def dtoh_async(dst: int, src: int, nbytes: int, stream: Any) -> None:
    _memcpy_async(dst, src, nbytes, "cudaMemcpyDeviceToHost", stream)


def dtod_async(dst: int, src: int, nbytes: int, stream: Any) -> None:
    _memcpy_async(dst, src, nbytes, "cudaMemcpyDeviceToDevice", stream)


def stream_wait(stream: Any, event: Event | int) -> None:
    """Work queued later on ``stream`` (any handle :func:`stream_handle` takes) waits for ``event``."""
    cuda_call(cudart().cudaStreamWaitEvent(stream_handle(stream), _event_handle(event), 0), "cudaStreamWaitEvent")


def memset_async(dst: int, value: int, nbytes: int, stream: Any) -> None:
    if nbytes > 0:
        cuda_call(cudart().cudaMemsetAsync(int(dst), int(value), int(nbytes), stream_handle(stream)),
                  "cudaMemsetAsync")


# -- other libraries' objects ------------------------------------------------------------------
def _event_handle(event: Event | int) -> int:
    return event.handle if isinstance(event, Event) else int(event)


def stream_handle(stream: Any) -> int:
    """A CUDA stream handle as an int from an int, :class:`Stream`, torch / CuPy / pycuda streams,
    cuda-python's ``cudaStream_t``, or any object with ``__cuda_stream__``."""
    if isinstance(stream, int):
        return stream
    if isinstance(stream, Stream):
        return stream.handle
    protocol = getattr(stream, "__cuda_stream__", None)
    if protocol is not None:
        value = protocol() if callable(protocol) else protocol
        return int(value[1])
    for attr in ("cuda_stream", "ptr", "handle"):  # torch, CuPy, pycuda
        value = getattr(stream, attr, None)
        if value is not None and not callable(value):
            return int(value)
    try:
        return int(stream)  # cuda-python's cudaStream_t / CUstream
    except (TypeError, ValueError):
        raise DataError(f"cannot take a CUDA stream from {type(stream).__name__}",
                        hint="pass the stream's handle as an int (torch: s.cuda_stream, CuPy: s.ptr, "
                             "pycuda: s.handle)") from None


@dataclass(frozen=True)
class DeviceArray:
    """What ``__cuda_array_interface__`` says about a C-contiguous device array."""

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    readonly: bool
    stream: int | None  # the stream the producer's work is ordered on (None: already complete; see producer_stream)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def device_array(obj: Any) -> DeviceArray:
    """Describe a device array (torch, CuPy, pycuda, Numba) without copying it."""
    try:
        cai = obj.__cuda_array_interface__
    except AttributeError:
        raise DataError(f"{type(obj).__name__} has no __cuda_array_interface__") from None
    shape = tuple(int(d) for d in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    ptr, readonly = cai["data"]
    if cai.get("mask") is not None:
        raise DataError("masked device arrays are not supported")
    strides = cai.get("strides")
    if strides is not None:
        expected, step = [], dtype.itemsize
        for d in reversed(shape):
            expected.append(step)
            step *= d
        if tuple(int(s) for s in strides) != tuple(reversed(expected)) and int(np.prod(shape)) > 1:
            raise DataError(f"device array with strides {tuple(strides)} is not C-contiguous",
                            hint="make it contiguous first (torch: .contiguous(), CuPy: cupy.ascontiguousarray)")
    return DeviceArray(int(ptr or 0), shape, dtype, bool(readonly), producer_stream(obj, cai))


def producer_stream(obj: Any, interface: dict[str, Any]) -> int | None:
    """The stream a device array's producer ordered its writes on; None: nothing to wait for.

    The rule, per producer:

    * ``__cuda_array_interface__`` version 3 with a ``stream`` key (CuPy, Numba): that stream;
      ``None`` there is the producer's promise that the data is ready (the protocol's words).
    * torch tensors: torch exports version 2 with no ``stream`` key, and its kernels run on
      ``torch.cuda.current_stream()``, often a non-default stream, without any promise that they
      finished: fence against torch's current stream of the tensor's device.
    * anything else without a ``stream`` key: the legacy default stream (CUDA's implicit
      ordering before the key existed); pass ``stream=`` to name another.
    """
    if "stream" in interface:
        stream = interface["stream"]
        return None if stream is None else int(stream)
    if _is_torch_tensor(obj):
        return _torch_current_stream(obj)
    return LEGACY_DEFAULT_STREAM


def _is_torch_tensor(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "torch"


def _torch_current_stream(tensor: Any) -> int:
    import torch  # only reached for torch tensors, so torch is importable

    return int(torch.cuda.current_stream(tensor.device).cuda_stream)

