"""Whether GPU tests can run on this host, and why not; shared by conftest and the GPU test modules.

Two different answers hide behind "no GPU test ran": there is no GPU here (skip, and say so), or
there is one that these CUDA libraries cannot use, typically a driver older than the CUDA
runtime of the installed cuda-python (``cudaErrorInsufficientDriver``: CUDA 13 needs driver R580
or newer). The second must fail a run that asked for the GPU suite (``-m gpu``), never pass it
green with everything skipped.
"""

from __future__ import annotations

import os
import re
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


def _device_nodes_present() -> bool:
    return any(os.path.exists(node) for node in DEVICE_NODES)


def gpu_status(cudart: Any = None, device_nodes_present: Any = _device_nodes_present) -> GpuStatus:
    """Probe CUDA through cuda-python (``cudart`` and ``device_nodes_present`` may be stand-ins: that
    checks this classification, not CUDA)."""
    if cudart is None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart  # cuda-python 12.x layout
            except ImportError:
                return GpuStatus(False, False, "cuda-python is not installed (pip install 'trtinfer[tensorrt]', "
                                               "or 'trtinfer[tensorrt-cu12]' on drivers before R580)")
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # the driver library itself is missing
        return GpuStatus(False, device_nodes_present(), f"no CUDA driver: {exc}")
    if int(err) == 0 and count:
        return GpuStatus(True, True)
    name = _error_name(err) if int(err) != 0 else "no device"
    # cudaDriverGetVersion gives 0 where no driver is installed (then CUDA also answers
    # cudaErrorInsufficientDriver, which alone does not mean an old driver).
    driver = _version(cudart, "cudaDriverGetVersion")
    if driver == "unknown" and not device_nodes_present():
        return GpuStatus(False, False, "no NVIDIA GPU on this machine (no NVIDIA driver is loaded)")
    if name in NO_DEVICE_ERRORS or int(err) == 0:
        return GpuStatus(False, False, f"no NVIDIA GPU visible to CUDA on this machine ({name})")
    return GpuStatus(False, True, f"an NVIDIA GPU is present but CUDA cannot use it: {name} (driver supports CUDA "
                                  f"{driver}, these libraries need CUDA "
                                  f"{_version(cudart, 'cudaRuntimeGetVersion')}); {DRIVER_HINT}")


def gpu_requested(markexpr: str) -> bool:
    """Whether a ``-m`` expression asks for the GPU tests (``gpu``, ``gpu and not slow``; not ``not gpu``)."""
    return re.search(r"(?<!not )\bgpu\b", markexpr or "") is not None


def apply_gpu_policy(config: Any, items: list[Any], status: GpuStatus | None = None) -> None:
    """conftest's collection hook: GPU tests run where CUDA is usable; elsewhere they skip with the
    reason, except that a run asking for them (``-m gpu``) on a host whose GPU cannot be used fails."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    status = status or gpu_status()
    if status.usable:
        return
    if status.present and gpu_requested(config.getoption("markexpr")):
        pytest.exit(f"the GPU suite was asked for (-m {config.getoption('markexpr')}) but {status.reason}",
                    returncode=1)
    for item in gpu_items:
        item.add_marker(pytest.mark.skip(reason=f"GPU test: {status.reason}"))


def gpu_skip_reason() -> str | None:
    """Why GPU tests cannot run here, or None when a CUDA device is usable."""
    status = gpu_status()
    return None if status.usable else status.reason


def tensorrt_skip_reason() -> str | None:
    reason = gpu_skip_reason()
    if reason:
        return reason
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:
        return f"TensorRT cannot be imported here ({type(exc).__name__}: {exc})"
    return None
