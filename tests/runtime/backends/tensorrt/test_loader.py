"""trtinfer/runtime/backends/tensorrt/loader.py: lazy TensorRT/CUDA access, the logger bridge, plan compatibility."""

from __future__ import annotations

import logging
import sys
import types

import pytest

from trtinfer.runtime.backends.tensorrt import loader
from trtinfer.errors import ArtifactError, BackendUnavailable
from gpu_env import gpu_skip_reason, tensorrt_skip_reason
from trtinfer.manifest import BatchProfile, EngineRecord, Manifest, PreprocessSpec, TensorSpec






def _manifest(**engine) -> Manifest:
    record = EngineRecord(**engine, profiles=[BatchProfile(1, 32, 256)]) if engine else None
    return Manifest(name="m", arch="resnet18", num_classes=10, labels=[str(i) for i in range(10)], precision="fp16",
                    input=TensorSpec("input", [-1, 3, 32, 32]), output=TensorSpec("logits", [-1, 10]),
                    preprocess=PreprocessSpec(input_size=32, resize=32, mean=[0.5] * 3, std=[0.5] * 3),
                    engine=record)


BUILT = {"tensorrt_version": "10.16.1.11", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}


# -- check_plan_compatible ------------------------------------------------------------------------
def test_same_host_is_compatible():
    loader.check_plan_compatible(_manifest(**BUILT), "10.16.1.11", "NVIDIA L4", "8.9")


def test_other_tensorrt_version_is_one_clear_line():
    with pytest.raises(ArtifactError) as info:
        loader.check_plan_compatible(_manifest(**BUILT), "11.4.0.106", "NVIDIA L4", "8.9", artifact_dir="art/m")
    line = info.value.one_line()
    assert "\n" not in line
    assert "TensorRT 10.16.1.11" in line and "11.4.0.106" in line
    assert "rebuild with `trtinfer build --from-onnx art/m`" in line
    assert "compute capability" not in line  # only what differs


def test_other_gpu_architecture_is_one_clear_line():
    with pytest.raises(ArtifactError) as info:
        loader.check_plan_compatible(_manifest(**BUILT), "10.16.1.11", "NVIDIA H100 80GB HBM3", "9.0")
    line = info.value.one_line()
    assert "compute capability 8.9, NVIDIA L4" in line and "compute capability 9.0, NVIDIA H100" in line
    assert "`trtinfer build --from-onnx DIR`" in line


def test_both_mismatches_are_named():
    with pytest.raises(ArtifactError) as info:
        loader.check_plan_compatible(_manifest(**BUILT), "11.4.0.106", "NVIDIA H100", "9.0")
    assert "TensorRT 10.16.1.11" in str(info.value) and "compute capability 8.9" in str(info.value)


def test_missing_engine_record():
    with pytest.raises(ArtifactError, match="no engine record"):
        loader.check_plan_compatible(_manifest(), "10.16.1.11", "NVIDIA L4", "8.9")


def test_same_architecture_other_model_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="trtinfer.runtime.backends.tensorrt.loader"):
        loader.check_plan_compatible(_manifest(**BUILT), "10.16.1.11", "NVIDIA L40S", "8.9")
    assert "NVIDIA L4" in caplog.text and "NVIDIA L40S" in caplog.text


# -- import_tensorrt --------------------------------------------------------------------------------
@pytest.mark.skipif(tensorrt_skip_reason() is None, reason="TensorRT is importable on this host")
def test_tensorrt_unavailable_here_is_one_line():
    if "tensorrt" in sys.modules:
        pytest.skip("a tensorrt module is already loaded")
    with pytest.raises(BackendUnavailable) as info:
        loader.import_tensorrt()
    assert "TensorRT" in info.value.message
    assert "pip install" in info.value.hint


def test_import_tensorrt_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ImportError
    with pytest.raises(BackendUnavailable, match="TensorRT"):
        loader.import_tensorrt()


def test_import_tensorrt_broken_libraries(monkeypatch, tmp_path):
    package = tmp_path / "tensorrt"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise OSError('libnvinfer.so.10: cannot open shared object file: No such file or directory')\n")
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BackendUnavailable) as info:
        loader.import_tensorrt()
    assert "libraries cannot be loaded" in info.value.message and "libnvinfer" in info.value.message
    assert "\n" not in info.value.one_line()


def test_import_tensorrt_too_old(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    with pytest.raises(BackendUnavailable, match="8.6.1 is too old"):
        loader.import_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="11.4.0.106"))
    assert loader.trt_version() == "11.4.0.106"


@pytest.mark.skipif(gpu_skip_reason() is None, reason="this host has a GPU")
def test_no_gpu_here():
    ok, reason = loader.tensorrt_available()
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
    bridge = loader._make_logger(trt)
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
    monkeypatch.setattr(loader, "_LOGGER", None)
    monkeypatch.setattr(loader, "import_tensorrt", _fake_trt_for_logger)
    first = loader.trt_logger()
    assert loader.trt_logger() is first
