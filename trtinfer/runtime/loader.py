"""``trtinfer.load``: read the manifest, pick a backend (and say why), verify the bytes, open it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, BackendUnavailable, TrtInferError
from ..hashing import sha256_bytes
from ..manifest import ONNX_NAME, PLAN_NAME, Manifest
from ..versions import module_available
from .model import Model
from .options import BACKENDS, RuntimeOptions

log = logging.getLogger(__name__)

def cpu_backend_available(name: str) -> bool:
    return module_available({"onnxruntime": "onnxruntime", "openvino": "openvino"}[name])


def read_verified(manifest: Manifest, directory: Path, name: str) -> bytes:
    """The bytes of ``name``, read once and checked against the manifest's size and sha256, so the
    bytes a backend parses are exactly the bytes that were verified. The size is compared before
    reading: a replaced multi-GB file is refused without being read."""
    entry = manifest.files.get(name)
    path = Manifest.file_path(directory, name)
    if entry is None or not path.is_file() or path.stat().st_size != entry.bytes:
        manifest.verify_files(directory, [name])  # raises the precise "not listed" / "missing" / "truncated" error
        raise ArtifactError(f"{path} cannot be verified", hint="rebuild the artifact")
    data = path.read_bytes()
    if len(data) != entry.bytes or sha256_bytes(data) != entry.sha256:
        manifest.verify_files(directory, [name])  # raises "truncated" / "modified" with the hint
        raise ArtifactError(f"{path} changed while it was being read", hint="copy the artifact again")
    return data


def _model_class(backend: str) -> type[Model]:
    if backend == "onnxruntime":
        from .backends.onnxruntime.runner import OnnxRuntimeModel
        return OnnxRuntimeModel
    if backend == "openvino":
        from .backends.openvino.runner import OpenVINOModel
        return OpenVINOModel
    if backend == "tensorrt":
        from .backends.tensorrt.runner import TensorRTModel
        return TensorRTModel
    raise TrtInferError(f"unknown backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")


def _tensorrt_usable(manifest: Manifest, directory: Path, options: RuntimeOptions) -> tuple[bool, str]:
    if PLAN_NAME not in manifest.files:
        return False, f"the artifact has no {PLAN_NAME}"
    if not module_available("tensorrt"):
        return False, "TensorRT is not installed"
    if not module_available("cuda"):
        return False, "cuda-python is not installed"
    from .backends.tensorrt import loader

    return loader.tensorrt_available(options.device)


def choose_backend(manifest: Manifest, directory: Path, requested: str, options: RuntimeOptions) -> tuple[str, str]:
    """(backend, reason) for ``requested`` in :data:`BACKENDS`."""
    if requested not in BACKENDS:
        raise TrtInferError(f"unknown backend {requested!r}", hint=f"use one of {', '.join(BACKENDS)}")
    if requested == "tensorrt":
        if PLAN_NAME not in manifest.files:
            raise ArtifactError(f"{directory} has no TensorRT engine ({PLAN_NAME})",
                                hint=f"build one on a GPU host with `trtinfer build --from-onnx {directory}`")
        return "tensorrt", "requested"
    if requested in ("onnxruntime", "openvino"):
        if not cpu_backend_available(requested):
            raise BackendUnavailable(f"{requested} is not installed",
                                     hint="pip install 'trtinfer[openvino]'" if requested == "openvino"
                                     else "pip install 'trtinfer[onnxruntime]'")
        return requested, "requested"
    ok, why = _tensorrt_usable(manifest, directory, options)
    if ok:
        return "tensorrt", f"{PLAN_NAME} present and {why}"
    return "cpu", why


def _open(cls: type[Model], directory: Path, manifest: Manifest, options: RuntimeOptions, reason: str) -> Model:
    name = PLAN_NAME if cls.backend == "tensorrt" else ONNX_NAME
    data = read_verified(manifest, directory, name)
    return cls(directory, manifest, options, data, backend_reason=reason)


def _open_cpu(directory: Path, manifest: Manifest, options: RuntimeOptions, why_not_gpu: str) -> Model:
    """The fastest CPU execution the manifest allows, measured here (runtime.autoselect)."""
    import dataclasses

    from .autoselect import choose_and_open

    def open_execution(execution, reason: str) -> Model:
        opts = dataclasses.replace(options, **execution.runtime_options())
        model = _open(_model_class(execution.backend), directory, manifest, opts, reason)
        model.execution = execution.name
        return model

    return choose_and_open(manifest, directory, options, open_execution, why_not_gpu)


def open_tensorrt(directory: str | Path, manifest: Manifest, **options: Any) -> Model:
    """The TensorRT model of an artifact whose manifest is in hand rather than on disk: the engine
    stage runs a staged engine before the one write of its manifest."""
    opts = RuntimeOptions.from_kwargs(options)
    return _open(_model_class("tensorrt"), Path(directory), manifest, opts, "the engine stage's evaluation")


def load(artifact_dir: str | Path, backend: str = "auto", **options: Any) -> Model:
    """Open an artifact for inference.

    ``backend="auto"`` picks TensorRT when the artifact has a plan and TensorRT and a GPU are
    present, else the CPU execution (ONNX Runtime, OpenVINO f32 or OpenVINO bf16) that ran this
    artifact fastest here, measured at first load for ``prefer="throughput"`` (batch 32) or
    ``"latency"`` (batch 1) and cached (:mod:`trtinfer.runtime.autoselect`); ``model.backend``,
    ``model.execution`` and ``model.backend_reason`` say which and why. Model files are checked against the manifest's
    sha256 before any backend parses them. ``options`` are :class:`RuntimeOptions` fields
    (``max_batch``, ``max_delay_ms``, ``max_queue``, ``timeout_ms``, ``threads``, ``streams``,
    ``cuda_graphs``, ...).
    """
    if not isinstance(artifact_dir, (str, Path)) or not str(artifact_dir):
        raise TrtInferError(f"load() takes an artifact directory (a path), not {type(artifact_dir).__name__} "
                            f"{artifact_dir!r}", hint="trtinfer.load('artifacts/resnet18-fp32')")
    if not isinstance(backend, str):
        raise TrtInferError(f"backend={backend!r} must be a string", hint=f"use one of {', '.join(BACKENDS)}")
    opts = RuntimeOptions.from_kwargs(options)
    directory = Path(artifact_dir)
    manifest = Manifest.read(directory)
    chosen, reason = choose_backend(manifest, directory, backend, opts)
    if chosen == "cpu":
        model = _open_cpu(directory, manifest, opts, reason)
    elif chosen == "tensorrt" and backend == "auto":
        try:
            model = _open(_model_class("tensorrt"), directory, manifest, opts, reason)
        except (BackendUnavailable, ArtifactError) as exc:
            from .backends.tensorrt.loader import PlanIncompatibleError

            if isinstance(exc, ArtifactError) and not isinstance(exc, PlanIncompatibleError):
                raise  # tampering and broken files are never papered over by a fallback
            model = _open_cpu(directory, manifest, opts, f"TensorRT cannot run the plan ({exc.one_line()})")
            log.warning("falling back to %s: %s", model.backend, model.backend_reason)
    else:
        model = _open(_model_class(chosen), directory, manifest, opts, reason)
    log.info("loaded %s on %s (%s)", directory, model.backend, reason)
    return model

