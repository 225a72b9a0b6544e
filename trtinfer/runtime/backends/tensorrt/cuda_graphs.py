"""CUDA graphs: one launch sequence captured on a stream, instantiated once and replayed.

Importing this module needs nothing but numpy; cuda-python is imported on first use.
"""

from __future__ import annotations

from typing import Any

from .cuda import CudaError, OwnedResource, cuda_call, cudart, stream_handle


class CudaGraph(OwnedResource):
    """A captured and instantiated CUDA graph, replayed with :meth:`launch`.

    Capture uses thread-local mode, so other threads' CUDA calls (other contexts, allocations)
    go on undisturbed while one thread captures. A capture that fails (``record`` raises, a call
    CUDA forbids during capture invalidated it so ``cudaStreamEndCapture`` fails, or
    ``cudaGraphInstantiate`` fails) leaves nothing behind before the error is raised: the capture
    is ended if the stream is still capturing, any graph is destroyed, and CUDA's last error is
    cleared with ``cudaGetLastError``, as trtexec's ``endCaptureOnError`` does. Left pending, that
    error would fail the next library call on this thread that checks it (TensorRT's enqueue).
    """

    def __init__(self, stream: Any, record: Any) -> None:
        rt = cudart()
        handle = stream_handle(stream)
        self._graph = 0
        try:
            cuda_call(rt.cudaStreamBeginCapture(handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
                      "cudaStreamBeginCapture")
        except CudaError:
            rt.cudaGetLastError()  # no capture began (it may be someone else's): only the error to clear
            raise
        graph = 0
        try:
            record()
            graph = int(cuda_call(rt.cudaStreamEndCapture(handle), "cudaStreamEndCapture"))
            self._handle = int(cuda_call(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate"))
        except BaseException:
            _abandon_capture(rt, handle, graph)
            raise
        self._graph = graph

    def launch(self, stream: Any) -> None:
        cuda_call(cudart().cudaGraphLaunch(self._handle, stream_handle(stream)), "cudaGraphLaunch")

    def _free(self, handle: int) -> None:
        rt = cudart()
        graph, self._graph = self._graph, 0
        cuda_call(rt.cudaGraphExecDestroy(handle), "cudaGraphExecDestroy")
        if graph:
            cuda_call(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")

    def __repr__(self) -> str:
        return f"<CudaGraph exec {self._handle:#x}>"


def _abandon_capture(rt: Any, stream: int, graph: int) -> None:
    """Undo a failed capture on ``stream``: end it if still capturing, destroy ``graph`` and any graph
    the ending returns, then clear the thread's last CUDA error. Best effort: the error being raised
    is the one to report, so failures here are not raised over it (the last error is cleared last)."""
    try:
        status = rt.cudaStreamIsCapturing(stream)
        if int(status[0]) != 0 or int(status[1]) != int(rt.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone):
            ended = rt.cudaStreamEndCapture(stream)  # an invalidated capture ends with an error and no graph
            if int(ended[0]) == 0 and ended[1] is not None and int(ended[1]):
                rt.cudaGraphDestroy(ended[1])
        if graph:
            rt.cudaGraphDestroy(graph)
    except Exception:  # noqa: BLE001 -- cleanup after a failure; the original error is raised by the caller
        pass
    finally:
        rt.cudaGetLastError()

