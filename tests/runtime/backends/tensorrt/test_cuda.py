"""The CUDA layer (backends/tensorrt/cuda.py): the checked call, owning objects, copies, other libraries'
streams and device arrays.

Everything but the ``gpu`` tests runs here: cuda-python imports without a GPU and returns error
codes, so even the failure path of a real allocation is exercised. The ``gpu`` tests run the layer
for real without TensorRT: round trips, event timing, stream ordering, copy overlap, graphs, leaks.
"""

from __future__ import annotations

from pathlib import Path
import time
import warnings

import numpy as np
import pytest

from trtinfer.errors import DataError, TrtInferError
from trtinfer.runtime.backends.tensorrt import cuda, devices


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


@pytest.mark.skipif(devices.device_count() > 0, reason="this host has a GPU: allocations succeed")
def test_without_a_gpu_allocations_fail_cleanly():
    for make in (lambda: cuda.PinnedBuffer(16), lambda: cuda.DeviceBuffer(16), cuda.Stream, cuda.Event):
        with pytest.raises(cuda.CudaError) as info:
            make()
        assert info.value.name.startswith("cudaError")
    assert devices.device_count() == 0


# -- owning objects ----------------------------------------------------------------------------------
class Fake(cuda.OwnedResource):
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
def test_gpu_no_leak_over_many_cycles():
    devices.device_synchronize()
    free_before, _ = devices.mem_get_info()
    for _ in range(2000):
        with cuda.PinnedBuffer(1 << 20), cuda.DeviceBuffer(4 << 20), cuda.Stream(), cuda.Event():
            pass
    devices.device_synchronize()
    free_after, _ = devices.mem_get_info()
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
    """The names the CUDA layer (cuda.py, devices.py, cuda_graphs.py) reads off ``cudart()`` (``rt.X``, ``cudart().X``, ``rt.X.Y``) exist
    in the real ``cuda.bindings.runtime`` (importable without a GPU), so no CUDA call is checked only against
    our stand-ins."""
    import ast

    runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
    folder = Path(__file__).resolve().parents[4] / "trtinfer" / "runtime" / "backends" / "tensorrt"
    used: set[tuple[str, ...]] = set()
    nodes = [n for name in ("cuda.py", "devices.py", "cuda_graphs.py")
             for n in ast.walk(ast.parse((folder / name).read_text()))]
    for node in nodes:
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
