"""Why GPU tests cannot run on this host (None when they can); shared by conftest and GPU test modules."""

from __future__ import annotations


def gpu_skip_reason() -> str | None:
    """Why GPU tests cannot run here, or None when a CUDA device is usable."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "cuda-python is not installed (pip install 'trtinfer[tensorrt]')"
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # the driver library itself is missing
        return f"no CUDA driver: {exc}"
    if int(err) != 0 or count == 0:
        return "no NVIDIA GPU visible to CUDA on this machine"
    return None


def tensorrt_skip_reason() -> str | None:
    reason = gpu_skip_reason()
    if reason:
        return reason
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:
        return f"TensorRT cannot be imported here ({type(exc).__name__}: {exc})"
    return None
