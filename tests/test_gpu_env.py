"""tests/gpu_env.py: "no GPU here" (skip) is told from "a GPU these CUDA libraries cannot use", "a GPU
without cuda-python or TensorRT" and "no GPU test selected" (a ``-m gpu`` run fails). The cudart and
nvidia-smi stand-ins below feed our classification the answers cuda-python and the driver give; they
check that classification, not CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest

import gpu_env
from gpu_env import GpuStatus, gpu_requested, gpu_status

pytest_plugins = ["pytester"]


class Err(int):
    """An error code with cuda-python's enum ``name``."""

    def __new__(cls, code: int, name: str):
        obj = super().__new__(cls, code)
        obj.name = name
        return obj


SUCCESS = Err(0, "cudaSuccess")


class Cudart:
    def __init__(self, err: Err = SUCCESS, count: int = 1, driver: int = 12040, runtime: int = 13000):
        self.err, self.count, self.driver, self.runtime = err, count, driver, runtime

    def cudaGetDeviceCount(self):  # noqa: N802 - CUDA's name
        return (self.err, self.count)

    def cudaDriverGetVersion(self):  # noqa: N802
        return (SUCCESS, self.driver)

    def cudaRuntimeGetVersion(self):  # noqa: N802
        return (SUCCESS, self.runtime)


def test_a_usable_gpu():
    assert gpu_status(Cudart(), lambda: True) == GpuStatus(True, True)


def test_no_driver_at_all_is_no_gpu():
    """Without a driver, CUDA answers cudaErrorInsufficientDriver too: the driver version (0) tells them apart."""
    status = gpu_status(Cudart(Err(35, "cudaErrorInsufficientDriver"), 0, driver=0), lambda: False)
    assert not status.usable and not status.present and "no NVIDIA driver" in status.reason


def test_no_device_is_no_gpu():
    status = gpu_status(Cudart(Err(100, "cudaErrorNoDevice"), 0), lambda: False)
    assert not status.present and "cudaErrorNoDevice" in status.reason


def test_a_driver_older_than_the_cuda_libraries_is_an_unusable_gpu():
    status = gpu_status(Cudart(Err(35, "cudaErrorInsufficientDriver"), 0, driver=12040, runtime=13000), lambda: True)
    assert status.present and not status.usable
    assert "cudaErrorInsufficientDriver" in status.reason and "driver supports CUDA 12.4" in status.reason
    assert "need CUDA 13.0" in status.reason and "trtinfer[tensorrt-cu12]" in status.reason


def test_a_gpu_without_cuda_python_is_present_not_absent():
    """The GPU suite must not read "cuda-python is missing" as "no GPU": the driver says a GPU is here."""
    status = gpu_status(False, lambda: True)
    assert status.present and not status.usable
    assert "cuda-python is not installed" in status.reason and "trtinfer[tensorrt-cu12]" in status.reason
    absent = gpu_status(False, lambda: False)
    assert not absent.present and "no NVIDIA GPU" in absent.reason


def test_nvidia_smi_listing_a_gpu_counts_as_present(tmp_path, monkeypatch):
    """A stand-in nvidia-smi on PATH (it prints what the real one prints for ``-L``)."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    assert gpu_env._driver_sees_gpu()
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver'"
                   "\nexit 9\n")
    assert gpu_env._driver_sees_gpu() == any(Path(n).exists() for n in gpu_env.DEVICE_NODES)


def test_gpu_requested():
    assert gpu_requested("gpu") and gpu_requested("gpu and not slow") and gpu_requested("slow or gpu")
    assert not gpu_requested("not gpu") and not gpu_requested("not slow") and not gpu_requested("")


GPU_TEST = """
import pytest

@pytest.mark.gpu
def test_on_the_gpu():
    pass

def test_anywhere():
    pass
"""


NO_TRT = "TensorRT cannot be imported (ModuleNotFoundError: No module named 'tensorrt')"


@pytest.mark.parametrize("status, trt_problem, markexpr, outcome", [
    (GpuStatus(False, True, "CUDA cannot use it"), None, "gpu", "fails: CUDA cannot use it"),
    (GpuStatus(False, True, "CUDA cannot use it"), None, "not slow", "skips"),
    (GpuStatus(False, False, "no NVIDIA GPU"), NO_TRT, "gpu", "skips"),
    (GpuStatus(True, True), None, "gpu", "runs"),
    # a GPU host whose test environment lacks TensorRT (the extras without [tensorrt]) or cuda-python
    (GpuStatus(True, True), NO_TRT, "gpu", "fails: TensorRT cannot be imported"),
    (GpuStatus(True, True), NO_TRT, "not slow", "runs"),
    (gpu_status(False, lambda: True), NO_TRT, "gpu", "fails: cuda-python is not installed"),
    # -m gpu that selected nothing (here: -k matches no GPU test), with or without a GPU
    (GpuStatus(False, False, "no NVIDIA GPU"), None, "gpu -k nothing_matches", "fails: selected no GPU test"),
    (GpuStatus(True, True), None, "gpu -k nothing_matches", "fails: selected no GPU test"),
])
def test_the_collection_policy_in_a_real_pytest_run(pytester, status, trt_problem, markexpr, outcome):
    """The hook tests/conftest.py installs, run by pytest itself with the GPU status given."""
    pytester.makeconftest(f"""
import pytest
from gpu_env import GpuStatus, apply_gpu_policy

def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: a GPU test")

@pytest.hookimpl(trylast=True)  # as tests/conftest.py: after -m/-k deselected
def pytest_collection_modifyitems(config, items):
    apply_gpu_policy(config, items, {status!r}, lambda: {trt_problem!r})
""")
    pytester.syspathinsert(str(Path(gpu_env.__file__).parent))
    pytester.makepyfile(GPU_TEST)
    marks, _, keyword = markexpr.partition(" -k ")
    result = pytester.runpytest("-m", marks, *(["-k", keyword] if keyword else []), "-p", "no:cacheprovider")
    if outcome.startswith("fails"):
        assert result.ret == 1
        result.stdout.fnmatch_lines([f"*GPU suite was asked for*{outcome.split(': ')[1]}*"])
    elif outcome == "skips":
        assert result.ret == 0
        result.assert_outcomes(**({"skipped": 1} if markexpr == "gpu" else {"skipped": 1, "passed": 1}))
    else:
        result.assert_outcomes(**({"passed": 1, "deselected": 1} if markexpr == "gpu" else {"passed": 2}))


# -- the test environment of a GPU host: scripts/tensorrt_extra.sh and scripts/venv.sh ---------------------
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _stand_in_nvidia_smi(folder: Path, driver: str | None) -> None:
    """An nvidia-smi stand-in answering ``--query-gpu=driver_version`` (None: no driver loaded)."""
    body = (f"echo '{driver}'" if driver else
            "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver'; exit 9")
    (folder / "nvidia-smi").write_text(f"#!/bin/sh\n{body}\n")
    (folder / "nvidia-smi").chmod(0o755)


@pytest.mark.parametrize("driver, extra", [("580.65.06", "tensorrt"), ("595.10", "tensorrt"),
                                           ("575.57.08", "tensorrt-cu12"), ("535.247.01", "tensorrt-cu12"),
                                           ("470.256.02", ""), (None, "")])
def test_the_tensorrt_extra_follows_the_driver(tmp_path, driver, extra):
    import os
    import subprocess

    _stand_in_nvidia_smi(tmp_path, driver)
    out = subprocess.run(["bash", str(SCRIPTS / "tensorrt_extra.sh")], capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}, check=True)
    assert out.stdout.strip() == extra
    assert ("older than R535" in out.stderr) == (driver == "470.256.02")


@pytest.mark.parametrize("driver, overridden, installed", [
    ("580.65.06", False, "build,openvino,bench,serve,triton,dev,tensorrt"),
    (None, False, "build,openvino,bench,serve,triton,dev"),
    ("580.65.06", True, "build,dev"),
])
def test_venv_sh_installs_the_tensorrt_extra_on_a_gpu_host(tmp_path, driver, overridden, installed):
    """venv.sh sourced with a stand-in python that records the pip install it is asked for (nothing is
    installed) and a stand-in nvidia-smi: on a GPU host the TensorRT extra joins, TRTINFER_EXTRAS wins."""
    import os
    import subprocess

    _stand_in_nvidia_smi(tmp_path, driver)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/pip.log\n")
    (venv / "bin" / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin", "TRTINFER_VENV": str(venv)}
    env.pop("TRTINFER_EXTRAS", None)
    if overridden:
        env["TRTINFER_EXTRAS"] = "build,dev"
    subprocess.run(["bash", "-c", f"source {SCRIPTS / 'venv.sh'}"], env=env, check=True, capture_output=True)
    assert f"[{installed}]" in (tmp_path / "pip.log").read_text()
    assert (venv / ".trtinfer-stamp").read_text().strip().endswith(installed)
