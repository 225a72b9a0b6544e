"""tests/gpu_env.py: "no GPU here" (skip) is told from "a GPU these CUDA libraries cannot use" (a
``-m gpu`` run fails). The cudart stand-ins below feed our classification the answers cuda-python
gives; they check that classification, not CUDA."""

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


@pytest.mark.parametrize("status, markexpr, outcome", [
    (GpuStatus(False, True, "CUDA cannot use it"), "gpu", "fails"),
    (GpuStatus(False, True, "CUDA cannot use it"), "not slow", "skips"),
    (GpuStatus(False, False, "no NVIDIA GPU"), "gpu", "skips"),
    (GpuStatus(True, True), "gpu", "runs"),
])
def test_the_collection_policy_in_a_real_pytest_run(pytester, status, markexpr, outcome):
    """The hook tests/conftest.py installs, run by pytest itself with the GPU status given."""
    pytester.makeconftest(f"""
from gpu_env import GpuStatus, apply_gpu_policy

def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: a GPU test")

def pytest_collection_modifyitems(config, items):
    apply_gpu_policy(config, items, {status!r})
""")
    pytester.syspathinsert(str(Path(gpu_env.__file__).parent))
    pytester.makepyfile(GPU_TEST)
    result = pytester.runpytest("-m", markexpr, "-p", "no:cacheprovider")
    if outcome == "fails":
        assert result.ret == 1
        result.stdout.fnmatch_lines(["*GPU suite was asked for*CUDA cannot use it*"])
    elif outcome == "skips":
        assert result.ret == 0
        result.assert_outcomes(**({"skipped": 1} if markexpr == "gpu" else {"skipped": 1, "passed": 1}))
    else:
        result.assert_outcomes(passed=1, deselected=1)
