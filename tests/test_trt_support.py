"""trtinfer/trt_support.py: lazy TensorRT/CUDA access, the logger bridge, plan compatibility."""

from __future__ import annotations

import logging
import sys
import types

import pytest

from trtinfer import trt_support
from trtinfer.errors import ArtifactError, BackendUnavailable
from gpu_env import gpu_skip_reason, tensorrt_skip_reason
from trtinfer.manifest import Manifest, PreprocessSpec, TensorSpec






def _manifest(**engine) -> Manifest:
    return Manifest(name="m", arch="resnet18", num_classes=10, labels=[str(i) for i in range(10)], precision="fp16",
                    input=TensorSpec("input", [-1, 3, 32, 32]), output=TensorSpec("logits", [-1, 10]),
                    preprocess=PreprocessSpec(input_size=32, resize=32, mean=[0.5] * 3, std=[0.5] * 3),
                    engine=dict(engine))


BUILT = {"tensorrt_version": "10.16.1.11", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}


# -- check_plan_compatible ------------------------------------------------------------------------
def test_same_host_is_compatible():
    trt_support.check_plan_compatible(_manifest(**BUILT), "10.16.1.11", "NVIDIA L4", "8.9")


def test_other_tensorrt_version_is_one_clear_line():
    with pytest.raises(ArtifactError) as info:
        trt_support.check_plan_compatible(_manifest(**BUILT), "11.4.0.106", "NVIDIA L4", "8.9", artifact_dir="art/m")
    line = info.value.one_line()
    assert "\n" not in line
    assert "TensorRT 10.16.1.11" in line and "11.4.0.106" in line
    assert "rebuild with `trtinfer build --from-onnx art/m`" in line
    assert "compute capability" not in line  # only what differs


def test_other_gpu_architecture_is_one_clear_line():
    with pytest.raises(ArtifactError) as info:
        trt_support.check_plan_compatible(_manifest(**BUILT), "10.16.1.11", "NVIDIA H100 80GB HBM3", "9.0")
    line = info.value.one_line()
    assert "compute capability 8.9, NVIDIA L4" in line and "compute capability 9.0, NVIDIA H100" in line
    assert "`trtinfer build --from-onnx DIR`" in line


def test_both_mismatches_are_named():
    with pytest.raises(ArtifactError) as info:
        trt_support.check_plan_compatible(_manifest(**BUILT), "11.4.0.106", "NVIDIA H100", "9.0")
    assert "TensorRT 10.16.1.11" in str(info.value) and "compute capability 8.9" in str(info.value)


def test_missing_engine_record():
    with pytest.raises(ArtifactError, match="no engine record"):
        trt_support.check_plan_compatible(_manifest(), "10.16.1.11", "NVIDIA L4", "8.9")


def test_same_architecture_other_model_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="trtinfer.trt_support"):
        trt_support.check_plan_compatible(_manifest(**BUILT), "10.16.1.11", "NVIDIA L40S", "8.9")
    assert "NVIDIA L4" in caplog.text and "NVIDIA L40S" in caplog.text


# -- import_tensorrt --------------------------------------------------------------------------------
@pytest.mark.skipif(tensorrt_skip_reason() is None, reason="TensorRT is importable on this host")
def test_tensorrt_unavailable_here_is_one_line():
    if "tensorrt" in sys.modules:
        pytest.skip("a tensorrt module is already loaded")
    with pytest.raises(BackendUnavailable) as info:
        trt_support.import_tensorrt()
    assert "TensorRT" in info.value.message
    assert "pip install" in info.value.hint


def test_import_tensorrt_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ImportError
    with pytest.raises(BackendUnavailable, match="TensorRT"):
        trt_support.import_tensorrt()


def test_import_tensorrt_broken_libraries(monkeypatch, tmp_path):
    package = tmp_path / "tensorrt"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise OSError('libnvinfer.so.10: cannot open shared object file: No such file or directory')\n")
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BackendUnavailable) as info:
        trt_support.import_tensorrt()
    assert "libraries cannot be loaded" in info.value.message and "libnvinfer" in info.value.message
    assert "\n" not in info.value.one_line()


def test_import_tensorrt_too_old(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    with pytest.raises(BackendUnavailable, match="8.6.1 is too old"):
        trt_support.import_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="11.4.0.106"))
    assert trt_support.trt_version() == "11.4.0.106"


# -- CUDA -----------------------------------------------------------------------------------------------
class FakeCudart:
    """cuda.bindings.runtime's shape: every call returns (err, *values)."""

    def __init__(self, count=1, driver=12040, err=0):
        self.count, self.driver, self.err = count, driver, err
        self.current = None

    def cudaDriverGetVersion(self):
        return (0, self.driver)

    def cudaRuntimeGetVersion(self):
        return (0, 12060)

    def cudaGetDeviceCount(self):
        return (self.err, self.count if not self.err else None)

    def cudaGetDeviceProperties(self, device):
        prop = types.SimpleNamespace(name=b"NVIDIA H100 80GB HBM3\x00\x00", major=9, minor=0,
                                     totalGlobalMem=80 * 2**30)
        return (0, prop)

    def cudaSetDevice(self, device):
        self.current = device
        return (0,)

    def cudaGetErrorName(self, err):
        return (0, {35: b"cudaErrorInsufficientDriver", 100: b"cudaErrorNoDevice"}.get(int(err), b"cudaErrorUnknown"))


def test_gpu_info_reads_properties(monkeypatch):
    fake = FakeCudart()
    monkeypatch.setattr(trt_support, "_import_cudart", lambda: fake)
    info = trt_support.gpu_info(0)
    assert info["name"] == "NVIDIA H100 80GB HBM3"
    assert info["compute_capability"] == "9.0"
    assert info["driver"] == "12.4"
    assert info["memory_mib"] == 80 * 1024
    assert trt_support.cuda_versions() == {"driver": "12.4", "runtime": "12.6"}
    trt_support.set_device(0)
    assert fake.current == 0
    with pytest.raises(BackendUnavailable, match="GPU 3 does not exist; this host has 1"):
        trt_support.gpu_info(3)


def test_gpu_info_without_driver_or_device(monkeypatch):
    monkeypatch.setattr(trt_support, "_import_cudart", lambda: FakeCudart(driver=0))
    with pytest.raises(BackendUnavailable, match="driver is not loaded"):
        trt_support.gpu_info()
    monkeypatch.setattr(trt_support, "_import_cudart", lambda: FakeCudart(err=100))
    with pytest.raises(BackendUnavailable, match="cudaErrorNoDevice"):
        trt_support.gpu_info()


def test_cuda_call_names_the_error():
    fake = FakeCudart()
    assert trt_support.cuda_call(fake, (0, 7), "x") == 7
    assert trt_support.cuda_call(fake, (0,), "x") is None
    with pytest.raises(BackendUnavailable, match="cudaMalloc failed: cudaErrorInsufficientDriver"):
        trt_support.cuda_call(fake, (35, None), "cudaMalloc")


@pytest.mark.skipif(gpu_skip_reason() is None, reason="this host has a GPU")
def test_no_gpu_here():
    with pytest.raises(BackendUnavailable):
        trt_support.gpu_info()
    ok, reason = trt_support.tensorrt_available()
    assert not ok
    assert "GPU" in reason


# -- the logger bridge --------------------------------------------------------------------------------------
def _fake_trt_for_logger():
    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self):
            self.initialised = True

    return types.SimpleNamespace(__version__="11.4.0.106", ILogger=ILogger)


def test_logger_bridge_warns_once_remembers_errors_and_never_raises(monkeypatch, caplog):
    trt = _fake_trt_for_logger()
    bridge = trt_support._make_logger(trt)
    assert bridge.initialised  # the base class was initialised, as TensorRT requires
    sev = trt.ILogger.Severity
    with caplog.at_level(logging.DEBUG, logger="trtinfer.tensorrt"):
        bridge.log(sev.WARNING, "Weights are affected by this conversion")
        bridge.log(sev.WARNING, "Weights are affected by this conversion")
        bridge.log(sev.ERROR, "IBuilder::buildSerializedNetwork: out of memory")
        bridge.log(sev.INFO, "chatter")

        class Evil:
            def __str__(self):
                raise RuntimeError("boom")

        bridge.log(sev.ERROR, Evil())  # must not raise into TensorRT
        bridge.log("not a severity", "odd")
    assert caplog.text.count("Weights are affected") == 1
    assert "out of memory" in caplog.text
    assert bridge.drain_errors() == ["IBuilder::buildSerializedNetwork: out of memory"]
    assert bridge.drain_errors() == []


def test_trt_logger_is_a_singleton(monkeypatch):
    monkeypatch.setattr(trt_support, "_LOGGER", None)
    monkeypatch.setattr(trt_support, "import_tensorrt", _fake_trt_for_logger)
    first = trt_support.trt_logger()
    assert trt_support.trt_logger() is first
