"""The CUDA layer: the checked call, owning objects, other libraries' streams and device arrays.

Everything but the ``gpu`` tests runs here: cuda-python imports without a GPU and returns error
codes, so even the failure path of a real allocation is exercised. The ``gpu`` tests run the layer
for real without TensorRT: round trips, event timing, stream ordering, copy overlap, graphs, leaks.
"""

from __future__ import annotations

from pathlib import Path
import time
import types
import warnings

import numpy as np
import pytest

from trtinfer.errors import BackendUnavailable, DataError, TrtInferError
from trtinfer.runtime import cuda


def rt():
    return cuda.cudart()


REAL = cuda.cudart()  # the real cuda-python module (imports without a GPU), kept for the stand-in below


# -- the checked call ----------------------------------------------------------------------------------
def test_cuda_call_unpacks_results():
    ok = rt().cudaError_t.cudaSuccess
    assert cuda.cuda_call((ok,)) is None
    assert cuda.cuda_call((ok, 5)) == 5
    assert cuda.cuda_call((ok, 1, 2)) == (1, 2)


def test_cuda_call_raises_with_the_error_name():
    err = rt().cudaError_t.cudaErrorMemoryAllocation
    with pytest.raises(cuda.CudaError) as info:
        cuda.cuda_call((err, None), "cudaMalloc(1 GiB)")
    exc = info.value
    assert exc.name == "cudaErrorMemoryAllocation" and exc.code == int(err)
    assert "cudaMalloc(1 GiB) failed: cudaErrorMemoryAllocation" in str(exc)
    assert exc.hint and "GPU memory" in exc.hint
    assert isinstance(exc, TrtInferError)  # one line in the CLI


# -- devices (a stand-in for cuda-python's runtime module: checks our reading of its answers) -------------
class FakeCudart:
    """``cuda.bindings.runtime``'s shape: every call returns (err, *values); errors are the real enum."""

    def __init__(self, count=1, driver=12040, err="cudaSuccess"):
        self.count, self.driver = count, driver
        self.err = getattr(REAL.cudaError_t, err)
        self.current = None

    def cudaDriverGetVersion(self):
        return (REAL.cudaError_t.cudaSuccess, self.driver)

    def cudaRuntimeGetVersion(self):
        return (REAL.cudaError_t.cudaSuccess, 12060)

    def cudaGetDeviceCount(self):
        return (self.err, self.count)

    def cudaGetDeviceProperties(self, device):
        prop = types.SimpleNamespace(name=b"NVIDIA H100 80GB HBM3\x00\x00", major=9, minor=0,
                                     totalGlobalMem=80 * 2**30)
        return (REAL.cudaError_t.cudaSuccess, prop)

    def cudaSetDevice(self, device):
        self.current = device
        return (REAL.cudaError_t.cudaSuccess,)

    def cudaGetErrorString(self, err):
        return REAL.cudaGetErrorString(err)


def test_gpu_info_reads_properties(monkeypatch):
    fake = FakeCudart()
    monkeypatch.setattr(cuda, "_CUDART", fake)
    info = cuda.gpu_info(0)
    assert info["name"] == "NVIDIA H100 80GB HBM3"
    assert info["compute_capability"] == "9.0"
    assert info["driver"] == "12.4"
    assert info["memory_mib"] == 80 * 1024
    assert cuda.cuda_versions() == {"driver": "12.4", "runtime": "12.6"}
    cuda.set_device(0)
    assert fake.current == 0
    assert cuda.device_count() == 1
    with pytest.raises(BackendUnavailable, match="GPU 3 does not exist; this host has 1"):
        cuda.gpu_info(3)


def test_no_driver_or_no_device_is_unavailable(monkeypatch):
    monkeypatch.setattr(cuda, "_CUDART", FakeCudart(driver=0))
    with pytest.raises(BackendUnavailable, match="driver is not loaded"):
        cuda.gpu_info()
    monkeypatch.setattr(cuda, "_CUDART", FakeCudart(err="cudaErrorNoDevice", count=0))
    with pytest.raises(BackendUnavailable, match="cudaErrorNoDevice"):
        cuda.gpu_info()
    assert cuda.device_count() == 0


def test_a_driver_older_than_cuda_is_a_cuda_error_not_no_gpu(monkeypatch):
    """One CUDA module: BackendUnavailable means "not installed / no device"; a present driver
    that cannot run these CUDA libraries is a CudaError naming the error and the fix."""
    monkeypatch.setattr(cuda, "_CUDART", FakeCudart(err="cudaErrorInsufficientDriver", count=0))
    with pytest.raises(cuda.CudaError) as info:
        cuda.gpu_count()
    assert not isinstance(info.value, BackendUnavailable)
    assert info.value.name == "cudaErrorInsufficientDriver" and "driver" in info.value.hint
    assert cuda.device_count() == 0


@pytest.mark.skipif(cuda.device_count() > 0, reason="this host has a GPU: allocations succeed")
def test_without_a_gpu_allocations_fail_cleanly():
    for make in (lambda: cuda.PinnedBuffer(16), lambda: cuda.DeviceBuffer(16), cuda.Stream, cuda.Event):
        with pytest.raises(cuda.CudaError) as info:
            make()
        assert info.value.name.startswith("cudaError")
    assert cuda.device_count() == 0


# -- owning objects ----------------------------------------------------------------------------------
class Fake(cuda._Owner):
    def __init__(self, freed: list) -> None:
        self._handle = 42
        self.freed = freed

    def _free(self, handle: int) -> None:
        self.freed.append(handle)


def test_close_frees_exactly_once():
    freed: list = []
    owner = Fake(freed)
    owner.close()
    owner.close()
    assert freed == [42] and owner.closed


def test_with_block_closes():
    freed: list = []
    with Fake(freed) as owner:
        assert not owner.closed
    assert freed == [42]


def test_del_only_warns_about_a_leak():
    freed: list = []
    owner = Fake(freed)
    with pytest.warns(ResourceWarning, match="never closed"):
        owner.__del__()
    assert freed == []  # never freed from a finaliser
    owner.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        owner.__del__()


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
        cuda.CudaGraph(0x5001, lambda: record(rt))
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
    with cuda.CudaGraph(0x5001, lambda: None) as graph:
        assert not graph.closed and rt.execs == {0xE0}
    assert "cudaGetLastError" not in rt.calls and not rt.graphs and not rt.execs


# -- other libraries' objects -----------------------------------------------------------------------
class TorchLikeStream:
    cuda_stream = 0x1234


class CupyLikeStream:
    ptr = 0x2345


class PycudaLikeStream:
    handle = 0x3456


class ProtocolStream:
    def __cuda_stream__(self):
        return (0, 0x4567)


def test_stream_handles_from_other_libraries():
    assert cuda.stream_handle(7) == 7
    assert cuda.stream_handle(TorchLikeStream()) == 0x1234
    assert cuda.stream_handle(CupyLikeStream()) == 0x2345
    assert cuda.stream_handle(PycudaLikeStream()) == 0x3456
    assert cuda.stream_handle(ProtocolStream()) == 0x4567
    assert cuda.stream_handle(rt().cudaStream_t(0x5678)) == 0x5678
    with pytest.raises(DataError, match="stream"):
        cuda.stream_handle("default")


class DeviceArrayLike:
    def __init__(self, shape, typestr="<f4", strides=None, stream=None, ptr=0xABC000):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr, False), "version": 3,
                                         "strides": strides, "stream": stream}


def test_device_array_interface():
    arr = cuda.device_array(DeviceArrayLike((4, 3, 2, 2), stream=2))
    assert arr.ptr == 0xABC000 and arr.shape == (4, 3, 2, 2) and arr.dtype == np.float32
    assert arr.stream == 2 and arr.nbytes == 4 * 12 * 4 and not arr.readonly
    contiguous = cuda.device_array(DeviceArrayLike((2, 3), strides=(12, 4)))
    assert contiguous.stream is None
    with pytest.raises(DataError, match="C-contiguous"):
        cuda.device_array(DeviceArrayLike((2, 3), strides=(4, 8)))
    with pytest.raises(DataError, match="__cuda_array_interface__"):
        cuda.device_array(np.zeros(3))


def test_producer_stream_rule(monkeypatch):
    """v3 with a stream key: that stream (None: ready); torch (v2, no key): torch's current stream;
    other producers without a key: the legacy default stream."""
    v2 = DeviceArrayLike((2, 3))
    del v2.__cuda_array_interface__["stream"]
    v2.__cuda_array_interface__["version"] = 2
    assert cuda.device_array(v2).stream == cuda.LEGACY_DEFAULT_STREAM
    assert cuda.device_array(DeviceArrayLike((2, 3), stream=None)).stream is None
    assert cuda.device_array(DeviceArrayLike((2, 3), stream=0x77)).stream == 0x77

    class Tensor:  # looks like torch.Tensor to the rule (its type lives in the torch package)
        __module__ = "torch"
        device = "cuda:0"

        def __init__(self):
            self.__cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (0xABC000, False),
                                             "version": 2, "strides": None}

    asked = []
    monkeypatch.setattr(cuda, "_torch_current_stream", lambda t: asked.append(t.device) or 0x5151)
    assert cuda.device_array(Tensor()).stream == 0x5151 and asked == ["cuda:0"]


# -- on a GPU, for real (no TensorRT needed) ------------------------------------------------------------
@pytest.mark.gpu
def test_gpu_pinned_device_round_trip():
    x = np.arange(1 << 20, dtype=np.float32)
    with cuda.PinnedBuffer(x.nbytes) as host, cuda.PinnedBuffer(x.nbytes) as back, \
            cuda.DeviceBuffer(x.nbytes) as dev, cuda.DeviceBuffer(x.nbytes) as dev2, cuda.Stream() as stream:
        host.view(np.float32, x.shape)[:] = x
        cuda.htod_async(dev.ptr, host.ptr, x.nbytes, stream)
        cuda.dtod_async(dev2.ptr, dev.ptr, x.nbytes, stream)
        cuda.memset_async(dev.ptr, 0, x.nbytes, stream)
        cuda.dtoh_async(back.ptr, dev2.ptr, x.nbytes, stream)
        stream.synchronize()
        np.testing.assert_array_equal(back.view(np.float32, x.shape), x)
        cuda.dtoh_async(back.ptr, dev.ptr, x.nbytes, stream)
        stream.synchronize()
        assert not back.view(np.float32, x.shape).any()


@pytest.mark.gpu
def test_gpu_events_time_and_order_streams():
    n = 64 << 20
    with cuda.PinnedBuffer(n) as host, cuda.DeviceBuffer(n) as dev, cuda.Stream() as a, cuda.Stream() as b, \
            cuda.Event(timing=True) as start, cuda.Event(timing=True) as end, cuda.Event() as ready:
        host.view(np.uint8, (n,))[:] = 7
        start.record(a)
        cuda.htod_async(dev.ptr, host.ptr, n, a)
        end.record(a)
        ready.record(a)
        b.wait(ready)  # b's copy back must see a's upload
        cuda.memset_async(dev.ptr, 1, 1, b)
        cuda.dtoh_async(host.ptr, dev.ptr, n, b)
        b.synchronize()
        assert end.query()
        assert cuda.Event.elapsed_ms(start, end) > 0
        view = host.view(np.uint8, (n,))
        assert view[0] == 1 and view[1] == 7 and view[-1] == 7


@pytest.mark.gpu
def test_gpu_copies_in_both_directions_overlap():
    """128 MiB each way on two streams: with two copy engines (``asyncEngineCount`` >= 2) the upload and the
    download run at once, a property of the hardware that large pinned copies show beyond any host jitter;
    a GPU with one copy engine cannot overlap them, so there only the copies' completion is checked."""
    engines = int(cuda.cuda_call(cuda.cudart().cudaGetDeviceProperties(0), "cudaGetDeviceProperties").asyncEngineCount)
    n = 128 << 20
    with cuda.PinnedBuffer(n) as h1, cuda.PinnedBuffer(n) as h2, cuda.DeviceBuffer(n) as d1, \
            cuda.DeviceBuffer(n) as d2, cuda.Stream() as up, cuda.Stream() as down:
        def timed(fn):
            fn()
            up.synchronize()
            down.synchronize()
            start = time.perf_counter()
            fn()
            up.synchronize()
            down.synchronize()
            return time.perf_counter() - start

        upload = timed(lambda: cuda.htod_async(d1.ptr, h1.ptr, n, up))
        download = timed(lambda: cuda.dtoh_async(h2.ptr, d2.ptr, n, down))
        both = timed(lambda: (cuda.htod_async(d1.ptr, h1.ptr, n, up), cuda.dtoh_async(h2.ptr, d2.ptr, n, down)))
    print(f"copy engines {engines}: upload {upload:.4f} s, download {download:.4f} s, both at once {both:.4f} s")
    if engines >= 2:
        assert both < 0.8 * (upload + download)


@pytest.mark.gpu
def test_gpu_graph_capture_and_replay():
    n = 1 << 20
    with cuda.PinnedBuffer(n) as host, cuda.DeviceBuffer(n) as dev, cuda.Stream() as stream:
        host.view(np.uint8, (n,))[:] = 3
        graph = cuda.CudaGraph(stream, lambda: (cuda.memset_async(dev.ptr, 9, n, stream),
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
            cuda.CudaGraph(stream, lambda: (cuda.memset_async(dev.ptr, 9, n, stream),
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


@pytest.mark.gpu
def test_gpu_no_leak_over_many_cycles():
    cuda.device_synchronize()
    free_before, _ = cuda.mem_get_info()
    for _ in range(2000):
        with cuda.PinnedBuffer(1 << 20), cuda.DeviceBuffer(4 << 20), cuda.Stream(), cuda.Event():
            pass
    cuda.device_synchronize()
    free_after, _ = cuda.mem_get_info()
    assert free_before - free_after < 16 << 20


@pytest.mark.gpu
def test_gpu_torch_tensor_fences_on_torchs_current_stream():
    torch = pytest.importorskip("torch")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        t = torch.ones(4, 3, device="cuda")
        assert "stream" not in t.__cuda_array_interface__  # what the rule is for (torch exports v2)
        assert cuda.device_array(t).stream == side.cuda_stream
    assert cuda.device_array(t).stream == torch.cuda.current_stream().cuda_stream


def test_every_cudart_name_we_call_exists_in_the_installed_cuda_bindings():
    """The names trtinfer/runtime/cuda.py reads off ``cudart()`` (``rt.X``, ``cudart().X``, ``rt.X.Y``) exist
    in the real ``cuda.bindings.runtime`` (importable without a GPU), so no CUDA call is checked only against
    our stand-ins."""
    import ast

    runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
    source = Path(__file__).resolve().parents[2] / "trtinfer" / "runtime" / "cuda.py"
    used: set[tuple[str, ...]] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        chain: list[str] = []
        while isinstance(node, ast.Attribute):
            chain.insert(0, node.attr)
            node = node.value
        if chain and ((isinstance(node, ast.Name) and node.id == "rt")
                      or (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "cudart")):
            used.add(tuple(chain))
    assert len(used) > 30  # the walk found our calls
    for chain in sorted(used):
        obj = runtime
        for part in chain:
            assert hasattr(obj, part), f"cuda.bindings.runtime has no {'.'.join(chain)}"
            obj = getattr(obj, part)
