"""Whether GPU tests can run on this host, and why not; shared by conftest and the GPU test modules.

Several answers hide behind "no GPU test ran": there is no GPU here (skip, and say so); there is one
that these CUDA libraries cannot use, typically a driver older than the CUDA runtime of the
installed cuda-python (``cudaErrorInsufficientDriver``: CUDA 13 needs driver R580 or newer); there
is one but cuda-python or TensorRT is not installed (a test environment built without the TensorRT
extra); or the run selected no GPU test at all. Only the first may pass a run that asked for the
GPU suite (``-m gpu``); the others fail it with one line, never green with everything skipped.

"A GPU is here" is read without cuda-python, from ``nvidia-smi -L`` (or the driver's device nodes),
so a missing cuda-python cannot pass for a missing GPU.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

#: CUDA errors that mean "there is no device", as opposed to "there is one we cannot use".
NO_DEVICE_ERRORS = ("cudaErrorNoDevice",)
#: Device nodes the NVIDIA kernel driver creates when a GPU is present.
DEVICE_NODES = ("/dev/nvidia0", "/dev/nvidiactl")
DRIVER_HINT = ("update the NVIDIA driver (CUDA 13 needs R580 or newer), or install the CUDA 12 build: "
               "pip install 'trtinfer[tensorrt-cu12]'")


@dataclass(frozen=True)
class GpuStatus:
    """``usable``: GPU tests can run. ``present``: a GPU is there (usable or not). ``reason``: why not."""

    usable: bool
    present: bool
    reason: str = ""


def _error_name(err: Any) -> str:
    return str(getattr(err, "name", None) or f"CUDA error {int(err)}")


def _version(cudart: Any, call: str) -> str:
    try:
        err, value = getattr(cudart, call)()
    except Exception:  # noqa: BLE001 -- a version we cannot read is shown as unknown
        return "unknown"
    if int(err) != 0 or not value:
        return "unknown"
    return f"{int(value) // 1000}.{(int(value) % 1000) // 10}"


def _driver_sees_gpu() -> bool:
    """An NVIDIA GPU is on this host, asked of the driver, not of cuda-python: ``nvidia-smi -L`` lists
    one (``GPU 0: ...``), or, where nvidia-smi is absent, the driver created its device nodes."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        if any(line.startswith("GPU ") for line in listing.splitlines()):
            return True
    return any(os.path.exists(node) for node in DEVICE_NODES)


NO_CUDA_PYTHON = "cuda-python is not installed"
INSTALL_HINT = ("install the TensorRT extra that fits the driver: pip install 'trtinfer[tensorrt]' (driver R580 or "
                "newer) or 'trtinfer[tensorrt-cu12]' (R535 to R575); scripts/test.sh does this on a GPU host")


def gpu_status(cudart: Any = None, driver_sees_gpu: Callable[[], bool] = _driver_sees_gpu) -> GpuStatus:
    """Probe CUDA through cuda-python (``cudart`` and ``driver_sees_gpu`` may be stand-ins: that
    checks this classification, not CUDA). ``cudart=False`` stands for "cuda-python is not installed"."""
    if cudart is None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart  # cuda-python 12.x layout
            except ImportError:
                cudart = False
    if cudart is False:
        if driver_sees_gpu():
            return GpuStatus(False, True, f"an NVIDIA GPU is present but {NO_CUDA_PYTHON}; {INSTALL_HINT}")
        return GpuStatus(False, False, f"no NVIDIA GPU on this machine ({NO_CUDA_PYTHON} either)")
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # the driver library itself is missing
        return GpuStatus(False, driver_sees_gpu(), f"no CUDA driver: {exc}")
    if int(err) == 0 and count:
        return GpuStatus(True, True)
    name = _error_name(err) if int(err) != 0 else "no device"
    # cudaDriverGetVersion gives 0 where no driver is installed (then CUDA also answers
    # cudaErrorInsufficientDriver, which alone does not mean an old driver).
    driver = _version(cudart, "cudaDriverGetVersion")
    if driver == "unknown" and not driver_sees_gpu():
        return GpuStatus(False, False, "no NVIDIA GPU on this machine (no NVIDIA driver is loaded)")
    if name in NO_DEVICE_ERRORS or int(err) == 0:
        return GpuStatus(False, False, f"no NVIDIA GPU visible to CUDA on this machine ({name})")
    return GpuStatus(False, True, f"an NVIDIA GPU is present but CUDA cannot use it: {name} (driver supports CUDA "
                                  f"{driver}, these libraries need CUDA "
                                  f"{_version(cudart, 'cudaRuntimeGetVersion')}); {DRIVER_HINT}")


def gpu_requested(markexpr: str) -> bool:
    """Whether a ``-m`` expression asks for the GPU tests (``gpu``, ``gpu and not slow``; not ``not gpu``)."""
    return re.search(r"(?<!not )\bgpu\b", markexpr or "") is not None


def tensorrt_import_problem() -> str | None:
    """Why ``import tensorrt`` fails here, or None."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 -- any failure (missing, wrong CUDA libraries) is the answer
        return f"TensorRT cannot be imported ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
    return None


def apply_gpu_policy(config: Any, items: list[Any], status: GpuStatus | None = None,
                     tensorrt_problem: Callable[[], str | None] = tensorrt_import_problem) -> None:
    """conftest's collection hook: GPU tests run where CUDA is usable; elsewhere they skip with the
    reason. A run asking for them (``-m gpu``) fails instead when it selected none, or when a GPU is
    here that cannot run them: CUDA cannot use it, or cuda-python or TensorRT is missing.
    ``status`` and ``tensorrt_problem`` may be stand-ins (that checks this policy, not the host)."""
    markexpr = config.getoption("markexpr")
    requested = gpu_requested(markexpr)
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        if requested:
            pytest.exit(f"the GPU suite was asked for (-m {markexpr}) but it selected no GPU test; check -k and "
                        "the paths given", returncode=1)
        return
    status = status or gpu_status()
    if requested and status.present:
        problem = status.reason if not status.usable else tensorrt_problem()
        if problem:
            pytest.exit(f"the GPU suite was asked for (-m {markexpr}) but {problem}", returncode=1)
    if status.usable:
        return
    for item in gpu_items:
        item.add_marker(pytest.mark.skip(reason=f"GPU test: {status.reason}"))


def gpu_skip_reason() -> str | None:
    """Why GPU tests cannot run here, or None when a CUDA device is usable."""
    status = gpu_status()
    return None if status.usable else status.reason


def tensorrt_skip_reason() -> str | None:
    return gpu_skip_reason() or tensorrt_import_problem()
