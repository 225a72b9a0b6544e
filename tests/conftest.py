"""Shared fixtures: the real CIFAR rows beside the checkout, and GPU detection for `-m gpu`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from gpu_env import apply_gpu_policy

REPO = Path(__file__).resolve().parents[1]
# Keep the suite's caches (tuning measurements, bench artifacts, timing caches) out of the user's
# ~/.cache: one fresh folder per test session; a test that needs its own sets XDG_CACHE_HOME itself.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="trtinfer-test-cache-")
# torch.compile's kernels (the bench's torch-compile peer) likewise: inductor's shared /tmp cache outlives runs
# made under other settings (scripts/test_variants.sh holds ATen to AVX2), and a one-thread run that loaded
# kernels compiled in such a run aborted in them; a session compiles its own.
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="trtinfer-test-inductor-")

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


@pytest.hookimpl(trylast=True)  # after -m/-k have deselected: decide on the GPU tests actually selected
def pytest_collection_modifyitems(config, items):
    apply_gpu_policy(config, items)
