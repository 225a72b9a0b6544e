"""The GPUs of this host, through the CUDA layer's checked call: how many, which (name, compute
capability, memory), the CUDA versions the driver and runtime support, and the current device.

What the doctor, the engine build, the plan compatibility check and the runtime ask before any
buffer or stream exists. Importing this module needs nothing but numpy.
"""

from __future__ import annotations

from typing import Any

from ....errors import BackendUnavailable, TrtInferError
from .cuda import CudaError, cuda_call, cudart

_NO_DEVICE_ERRORS = ("cudaErrorNoDevice",)


def format_cuda_version(value: int) -> str:
    """cudaDriverGetVersion's 12040 -> ``"12.4"``."""
    value = int(value)
    return f"{value // 1000}.{(value % 1000) // 10}"


def cuda_versions() -> dict[str, str | None]:
    """CUDA versions the driver supports and the CUDA runtime library provides (None: unknown)."""
    rt = cudart()
    out: dict[str, str | None] = {"driver": None, "runtime": None}
    for key, call in (("driver", rt.cudaDriverGetVersion), ("runtime", rt.cudaRuntimeGetVersion)):
        try:
            value = cuda_call(call(), call.__name__)
        except Exception:  # noqa: BLE001 -- a version we cannot read is reported as unknown
            continue
        out[key] = format_cuda_version(value) if value else None
    return out


def gpu_count() -> int:
    """Number of CUDA devices (at least 1).

    BackendUnavailable when there is no GPU to use (no cuda-python, no driver, no device);
    CudaError when a driver is there but CUDA fails (``cudaErrorInsufficientDriver``: the driver
    is older than the CUDA runtime these libraries were built for).
    """
    rt = cudart()
    try:
        driver = cuda_call(rt.cudaDriverGetVersion(), "cudaDriverGetVersion")
    except Exception:  # noqa: BLE001 -- no driver library at all
        driver = 0
    if not driver:  # CUDA documents 0 when no driver is installed
        raise BackendUnavailable("no NVIDIA GPU: the NVIDIA driver is not loaded on this host",
                                 hint="run on a host with an NVIDIA GPU and driver (nvidia-smi must work)")
    try:
        count = int(cuda_call(rt.cudaGetDeviceCount(), "cudaGetDeviceCount"))
    except CudaError as exc:
        if exc.name in _NO_DEVICE_ERRORS:
            raise BackendUnavailable(f"no NVIDIA GPU visible to CUDA ({exc.name})",
                                     hint="check nvidia-smi and CUDA_VISIBLE_DEVICES") from exc
        raise
    if count < 1:
        raise BackendUnavailable("no NVIDIA GPU visible to CUDA", hint="check nvidia-smi and CUDA_VISIBLE_DEVICES")
    return count


def device_count() -> int:
    """Number of usable CUDA devices; 0 when there is none or CUDA cannot be used."""
    try:
        return gpu_count()
    except TrtInferError:
        return 0
    except Exception:  # noqa: BLE001 -- a broken driver library counts as no device
        return 0


def gpu_info(device: int = 0) -> dict[str, Any]:
    """``{"name", "compute_capability" ("9.0"), "driver" (CUDA version the driver supports), ...}``."""
    count = gpu_count()
    if not 0 <= device < count:
        raise BackendUnavailable(f"GPU {device} does not exist; this host has {count} GPU(s) (0..{count - 1})",
                                 hint="pass --device with one of those indices")
    rt = cudart()
    prop = cuda_call(rt.cudaGetDeviceProperties(device), f"cudaGetDeviceProperties({device})")
    name = prop.name
    name = name.decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)
    driver = cuda_call(rt.cudaDriverGetVersion(), "cudaDriverGetVersion")
    return {
        "name": name.rstrip("\x00").strip(),
        "compute_capability": f"{prop.major}.{prop.minor}",
        "driver": format_cuda_version(driver),
        "memory_mib": int(prop.totalGlobalMem) // (1 << 20),
        "device": device,
    }


def set_device(device: int) -> None:
    """Make ``device`` current for this thread (the builder and the runtime use the current device)."""
    cuda_call(cudart().cudaSetDevice(int(device)), f"cudaSetDevice({device})")


def current_device() -> int:
    return int(cuda_call(cudart().cudaGetDevice(), "cudaGetDevice"))


def mem_get_info() -> tuple[int, int]:
    """(free, total) bytes of the current device."""
    free, total = cuda_call(cudart().cudaMemGetInfo(), "cudaMemGetInfo")
    return int(free), int(total)


def device_synchronize() -> None:
    cuda_call(cudart().cudaDeviceSynchronize(), "cudaDeviceSynchronize")
