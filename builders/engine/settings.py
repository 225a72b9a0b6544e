"""What an engine build is asked for (:class:`EngineBuildSettings`), where its timing cache lives, and
whether an artifact and this host can make an engine: everything the engine stage checks before TensorRT.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtinfer.cache import cache_root
from trtinfer.errors import ArtifactError, TrtInferError
from trtinfer.manifest import ONNX_NAME, BatchProfile, Manifest
from trtinfer.runtime.backends.tensorrt import loader as tensorrt_loader

from .profiles import DEFAULT_PROFILE, validate_profiles

log = logging.getLogger(__name__)

DEFAULT_OPT_LEVEL = 3  # TensorRT's own default
MIN_OPT_LEVEL, MAX_OPT_LEVEL = 0, 5
TIMING_CACHE_DIR = "timing-cache"
Progress = Any  # a callable taking one message, or a Reporter (its ``info`` is used)


class EngineBuildError(TrtInferError):
    """TensorRT refused the model or produced an engine that does not do what was asked."""


@dataclass
class EngineBuildSettings:
    profiles: list[BatchProfile] = field(default_factory=lambda: [DEFAULT_PROFILE])
    opt_level: int = DEFAULT_OPT_LEVEL
    workspace_mib: int | None = None  # None: TensorRT's default (the whole device memory)
    device: int = 0
    timing_cache: Path | None = None  # None: default_timing_cache_path() for this TensorRT and GPU

    def __post_init__(self) -> None:
        self.profiles = validate_profiles(self.profiles)
        if not MIN_OPT_LEVEL <= int(self.opt_level) <= MAX_OPT_LEVEL:
            raise TrtInferError(f"--opt-level {self.opt_level} is outside {MIN_OPT_LEVEL}..{MAX_OPT_LEVEL}",
                                hint=f"{DEFAULT_OPT_LEVEL} is TensorRT's default; 5 searches longest")
        if self.workspace_mib is not None and int(self.workspace_mib) < 1:
            raise TrtInferError(f"--workspace {self.workspace_mib} MiB must be at least 1",
                                hint="leave it out to let TensorRT use the device memory it needs")
        if int(self.device) < 0:
            raise TrtInferError(f"--device {self.device} must be a GPU index (0, 1, ...)")
        if self.timing_cache is not None:
            self.timing_cache = Path(self.timing_cache).expanduser()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "gpu"


def default_timing_cache_path(tensorrt_version: str, gpu_name: str, compute_capability: str) -> Path:
    """One cache per TensorRT version and GPU model: TensorRT rejects a cache from another device."""
    name = f"trt-{_slug(tensorrt_version)}-{_slug(gpu_name)}-sm{compute_capability.replace('.', '')}.cache"
    return cache_root() / TIMING_CACHE_DIR / name


def read_artifact_for_engine(artifact_dir: str | Path) -> Manifest:
    """The manifest of an artifact that can become an engine; everything checkable without a GPU."""
    artifact_dir = Path(artifact_dir)
    manifest = Manifest.read(artifact_dir)
    if ONNX_NAME not in manifest.files:
        raise ArtifactError(f"{artifact_dir} lists no {ONNX_NAME}",
                            hint="pass an artifact directory written by `trtinfer build`")
    manifest.verify_files(artifact_dir, [ONNX_NAME])
    shape = list(manifest.input.shape)
    if len(shape) < 2 or shape[0] != -1 or any(int(d) < 1 for d in shape[1:]):
        raise ArtifactError(f"{artifact_dir}: input {manifest.input.name!r} has shape {shape}; the engine stage "
                            "needs a dynamic batch (-1) and static other dimensions",
                            hint="rebuild the artifact with `trtinfer build`")
    return manifest


def engine_stage_available(device: int = 0) -> tuple[bool, str]:
    """Whether ``build_engine_into_artifact`` can run on this host, and why (not)."""
    return tensorrt_loader.tensorrt_available(device)


def say(progress: Progress | None, message: str) -> None:
    log.info("%s", message)
    if progress is not None:
        emit = getattr(progress, "info", None)
        (emit if callable(emit) else progress)(message)
