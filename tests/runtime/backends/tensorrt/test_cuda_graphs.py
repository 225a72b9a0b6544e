"""backends/tensorrt/cuda_graphs.py: capture and replay, and a failed capture that leaves nothing behind
(a cudart stand-in checks the order of our calls; the ``gpu`` tests run CUDA for real)."""

from __future__ import annotations

import numpy as np
import pytest

from trtinfer.errors import TrtInferError
from trtinfer.runtime.backends.tensorrt import cuda
from trtinfer.runtime.backends.tensorrt.cuda_graphs import CudaGraph


def rt():
    return cuda.cudart()


REAL = cuda.cudart()  # the real cuda-python module (imports without a GPU), kept for the stand-in below


# -- a failed graph capture leaves nothing behind (a cudart stand-in: checks the order of our calls, not CUDA) --
class CaptureCudart:
    """The capture calls of ``cuda.bindings.runtime`` in its shape (``(err, *values)``, the real error
    enums), recording our calls in order and keeping the thread's last error as the CUDA runtime does:
    every failed call sets it, ``cudaGetLastError`` returns and clears it. A violation invalidates the
    capture and ``cudaStreamEndCapture`` then fails with ``cudaErrorStreamCaptureInvalidated``."""

    cudaError_t = REAL.cudaError_t
    cudaStreamCaptureMode = REAL.cudaStreamCaptureMode
    cudaStreamCaptureStatus = REAL.cudaStreamCaptureStatus

    def __init__(self, instantiate: str = "cudaSuccess") -> None:
        self.instantiate_err = getattr(REAL.cudaError_t, instantiate)
        self.calls: list[str] = []
        self.status = REAL.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone
        self.last_error = REAL.cudaError_t.cudaSuccess
        self.graphs: set[int] = set()
        self.execs: set[int] = set()

    def _answer(self, call: str, err: object, *values: object) -> tuple:
        self.calls.append(call)
        if int(err):
            self.last_error = err
        return (err, *values)

    def forbidden_call(self, call: str) -> tuple:
        """A call CUDA refuses during capture (cudaMalloc, cudaStreamSynchronize of the capturing stream)."""
        self.status = REAL.cudaStreamCaptureStatus.cudaStreamCaptureStatusInvalidated
        return self._answer(call, REAL.cudaError_t.cudaErrorStreamCaptureUnsupported, None)

    def cudaStreamBeginCapture(self, stream, mode):
        assert mode == REAL.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self.status = REAL.cudaStreamCaptureStatus.cudaStreamCaptureStatusActive
        return self._answer("cudaStreamBeginCapture", REAL.cudaError_t.cudaSuccess)

    def cudaStreamIsCapturing(self, stream):
        return self._answer("cudaStreamIsCapturing", REAL.cudaError_t.cudaSuccess, self.status)

    def cudaStreamEndCapture(self, stream):
        status, self.status = self.status, REAL.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone
        if status == REAL.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone:
            return self._answer("cudaStreamEndCapture", REAL.cudaError_t.cudaErrorIllegalState, None)
        if status == REAL.cudaStreamCaptureStatus.cudaStreamCaptureStatusInvalidated:
            return self._answer("cudaStreamEndCapture", REAL.cudaError_t.cudaErrorStreamCaptureInvalidated, None)
        self.graphs.add(0x6A)
        return self._answer("cudaStreamEndCapture", REAL.cudaError_t.cudaSuccess, REAL.cudaGraph_t(0x6A))

    def cudaGraphInstantiate(self, graph, flags):
        if int(self.instantiate_err):
            return self._answer("cudaGraphInstantiate", self.instantiate_err, None)
        self.execs.add(0xE0)
        return self._answer("cudaGraphInstantiate", REAL.cudaError_t.cudaSuccess, 0xE0)

    def cudaGraphDestroy(self, graph):
        self.graphs.remove(int(graph))
        return self._answer("cudaGraphDestroy", REAL.cudaError_t.cudaSuccess)

    def cudaGraphExecDestroy(self, graph_exec):
        self.execs.remove(int(graph_exec))
        return self._answer("cudaGraphExecDestroy", REAL.cudaError_t.cudaSuccess)

    def cudaGetLastError(self):
        err, self.last_error = self.last_error, REAL.cudaError_t.cudaSuccess
        self.calls.append("cudaGetLastError")
        return (err,)

    def cudaGetErrorString(self, err):
        return REAL.cudaGetErrorString(err)


class EnqueueFailed(TrtInferError):
    """What the lane raises when TensorRT's execute_async_v3 returns False inside the capture."""


def _record_raises_cuda(rt):  # cudaMalloc on the capturing thread: refused, capture invalidated
    cuda.cuda_call(rt.forbidden_call("cudaMalloc"), "cudaMalloc(16 bytes)")


def _record_invalidates(rt):  # a stream synchronisation whose error the recorder ignores
    rt.forbidden_call("cudaStreamSynchronize")


def _record_raises_other(rt):  # TensorRT refused the enqueue; the capture itself is still valid
    raise EnqueueFailed("execute_async_v3 failed")


_FAILED_CAPTURES = {
    # scenario: (record, cudaGraphInstantiate's error, error raised, our calls after the recorded work)
    "record-raises-cuda": (_record_raises_cuda, "cudaSuccess", "cudaErrorStreamCaptureUnsupported",
                           ["cudaStreamIsCapturing", "cudaStreamEndCapture", "cudaGetLastError"]),
    "end-capture-fails": (_record_invalidates, "cudaSuccess", "cudaErrorStreamCaptureInvalidated",
                          ["cudaStreamEndCapture", "cudaStreamIsCapturing", "cudaGetLastError"]),
    "record-raises-other": (_record_raises_other, "cudaSuccess", EnqueueFailed,
                            ["cudaStreamIsCapturing", "cudaStreamEndCapture", "cudaGraphDestroy", "cudaGetLastError"]),
    "instantiate-fails": (lambda rt: None, "cudaErrorInvalidValue", "cudaErrorInvalidValue",
                          ["cudaStreamEndCapture", "cudaGraphInstantiate", "cudaStreamIsCapturing", "cudaGraphDestroy",
                           "cudaGetLastError"]),
}


@pytest.mark.parametrize("scenario", sorted(_FAILED_CAPTURES))
def test_a_failed_capture_ends_it_frees_it_and_clears_the_last_error(monkeypatch, scenario):
    """trtexec's endCaptureOnError: end the capture, destroy any graph, cudaGetLastError. Against
    a cudart stand-in: this checks the order of our calls, not CUDA's behaviour (the gpu test below does)."""
    record, instantiate, raised, after = _FAILED_CAPTURES[scenario]
    rt = CaptureCudart(instantiate=instantiate)
    monkeypatch.setattr(cuda, "_CUDART", rt)
    with pytest.raises(TrtInferError) as info:
        CudaGraph(0x5001, lambda: record(rt))
    if isinstance(raised, str):
        assert isinstance(info.value, cuda.CudaError) and info.value.name == raised
    else:
        assert isinstance(info.value, raised)
    recorded = {"cudaMalloc", "cudaStreamSynchronize"}
    assert [c for c in rt.calls if c not in recorded][1:] == after
    assert rt.calls[-1] == "cudaGetLastError"
    assert rt.last_error == REAL.cudaError_t.cudaSuccess  # the next library call on this thread is not failed by it
    assert rt.status == REAL.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone  # the stream is usable again
    assert not rt.graphs and not rt.execs


def test_a_capture_that_succeeds_leaves_the_last_error_alone(monkeypatch):
    rt = CaptureCudart()
    monkeypatch.setattr(cuda, "_CUDART", rt)
    with CudaGraph(0x5001, lambda: None) as graph:
        assert not graph.closed and rt.execs == {0xE0}
    assert "cudaGetLastError" not in rt.calls and not rt.graphs and not rt.execs


@pytest.mark.gpu
def test_gpu_graph_capture_and_replay():
    n = 1 << 20
    with cuda.PinnedBuffer(n) as host, cuda.DeviceBuffer(n) as dev, cuda.Stream() as stream:
        host.view(np.uint8, (n,))[:] = 3
        graph = CudaGraph(stream, lambda: (cuda.memset_async(dev.ptr, 9, n, stream),
                                                cuda.dtoh_async(host.ptr, dev.ptr, n, stream)))
        with graph:
            stream.synchronize()
            assert host.view(np.uint8, (n,))[0] == 3  # capturing does not run anything
            graph.launch(stream)
            stream.synchronize()
            assert np.all(host.view(np.uint8, (n,)) == 9)
        assert graph.closed


def _forbidden_in_capture(kind, stream):
    if kind == "malloc":  # cudaMalloc on the capturing thread (thread-local mode): refused, raises
        cuda.DeviceBuffer(16).close()
    else:  # a synchronisation of the capturing stream, its error ignored: the capture is invalidated
        rt().cudaStreamSynchronize(stream.handle)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["malloc", "sync"])
def test_gpu_a_failed_capture_clears_the_last_error(kind):
    """A capture spoiled by a call CUDA forbids while capturing fails, and leaves the stream out of
    capture and the thread's last error clear; the stream then works normally."""
    n = 1 << 16
    ok = rt().cudaError_t.cudaSuccess
    rt().cudaGetLastError()  # whatever earlier tests left
    with cuda.PinnedBuffer(n) as host, cuda.DeviceBuffer(n) as dev, cuda.Stream() as stream:
        with pytest.raises(cuda.CudaError) as info:
            CudaGraph(stream, lambda: (cuda.memset_async(dev.ptr, 9, n, stream),
                                            _forbidden_in_capture(kind, stream)))
        if kind == "sync":
            assert info.value.name == "cudaErrorStreamCaptureInvalidated"  # from cudaStreamEndCapture
        assert rt().cudaGetLastError() == (ok,)
        err, status = rt().cudaStreamIsCapturing(stream.handle)
        assert err == ok and status == rt().cudaStreamCaptureStatus.cudaStreamCaptureStatusNone
        host.view(np.uint8, (n,))[:] = 5
        cuda.htod_async(dev.ptr, host.ptr, n, stream)
        cuda.memset_async(dev.ptr, 3, 1, stream)
        cuda.dtoh_async(host.ptr, dev.ptr, n, stream)
        stream.synchronize()
        view = host.view(np.uint8, (n,))
        assert view[0] == 3 and np.all(view[1:] == 5)  # nothing of the failed capture ran
        assert rt().cudaGetLastError() == (ok,)
