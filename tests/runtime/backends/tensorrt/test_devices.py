"""backends/tensorrt/devices.py: which GPUs and CUDA versions, read from a stand-in for cuda-python's runtime
module (imports without a GPU), so our reading of its answers is checked."""

from __future__ import annotations

import types

import pytest

from trtinfer.errors import BackendUnavailable
from trtinfer.runtime.backends.tensorrt import cuda, devices

REAL = cuda.cudart()  # the real cuda-python module (imports without a GPU), kept for the stand-in below


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
    info = devices.gpu_info(0)
    assert info["name"] == "NVIDIA H100 80GB HBM3"
    assert info["compute_capability"] == "9.0"
    assert info["driver"] == "12.4"
    assert info["memory_mib"] == 80 * 1024
    assert devices.cuda_versions() == {"driver": "12.4", "runtime": "12.6"}
    devices.set_device(0)
    assert fake.current == 0
    assert devices.device_count() == 1
    with pytest.raises(BackendUnavailable, match="GPU 3 does not exist; this host has 1"):
        devices.gpu_info(3)


def test_no_driver_or_no_device_is_unavailable(monkeypatch):
    monkeypatch.setattr(cuda, "_CUDART", FakeCudart(driver=0))
    with pytest.raises(BackendUnavailable, match="driver is not loaded"):
        devices.gpu_info()
    monkeypatch.setattr(cuda, "_CUDART", FakeCudart(err="cudaErrorNoDevice", count=0))
    with pytest.raises(BackendUnavailable, match="cudaErrorNoDevice"):
        devices.gpu_info()
    assert devices.device_count() == 0


def test_a_driver_older_than_cuda_is_a_cuda_error_not_no_gpu(monkeypatch):
    """One CUDA module: BackendUnavailable means "not installed / no device"; a present driver
    that cannot run these CUDA libraries is a CudaError naming the error and the fix."""
    monkeypatch.setattr(cuda, "_CUDART", FakeCudart(err="cudaErrorInsufficientDriver", count=0))
    with pytest.raises(cuda.CudaError) as info:
        devices.gpu_count()
    assert not isinstance(info.value, BackendUnavailable)
    assert info.value.name == "cudaErrorInsufficientDriver" and "driver" in info.value.hint
    assert devices.device_count() == 0
