"""Shared fixtures: the real CIFAR rows beside the checkout, and GPU detection for `-m gpu`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CIFAR_ROOT = Path(os.environ.get("TRTINFER_CIFAR_ROOT", REPO.parent / "shared" / "data"))


def _has_cifar() -> bool:
    return (CIFAR_ROOT / "cifar-10-batches-py" / "test_batch").is_file()


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """Parent of cifar-10-batches-py (the shared, read-only rows); never copied into the repo."""
    if not _has_cifar():
        pytest.skip(f"CIFAR-10 rows not found under {CIFAR_ROOT} (set TRTINFER_CIFAR_ROOT to a folder "
                    "holding cifar-10-batches-py)")
    return CIFAR_ROOT


@pytest.fixture(scope="session")
def cifar_dir(cifar_root: Path) -> Path:
    return cifar_root / "cifar-10-batches-py"


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


def pytest_collection_modifyitems(config, items):
    gpu_reason = None
    for item in items:
        if "gpu" in item.keywords:
            if gpu_reason is None:
                gpu_reason = gpu_skip_reason() or ""
            if gpu_reason:
                item.add_marker(pytest.mark.skip(reason=f"GPU test: {gpu_reason}"))
