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

#: On a CPU, the backends to try for each artifact precision, fastest first. Measured on this
#: project's 2-core AVX512-VNNI host (ResNet-18 at 32x32, batch 1 and 32, interleaved runs):
#: INT8 Q/DQ: OpenVINO runs it in INT8, 6-14x ONNX Runtime (which runs Q/DQ slower than FP32);
#: FP16: OpenVINO 1.05-1.5x ONNX Runtime; FP32: neither wins consistently (0.65-1.2x), so the
#: embedded default, ONNX Runtime, stays first.
CPU_PREFERENCE: dict[str, tuple[str, ...]] = {
    "int8": ("openvino", "onnxruntime"),
    "fp16": ("openvino", "onnxruntime"),
    "fp32": ("onnxruntime", "openvino"),
}


def cpu_backend_available(name: str) -> bool:
    return module_available({"onnxruntime": "onnxruntime", "openvino": "openvino"}[name])


def read_verified(manifest: Manifest, directory: Path, name: str) -> bytes:
    """The bytes of ``name``, read once and checked against the manifest's size and sha256, so the
    bytes a backend parses are exactly the bytes that were verified. The size is compared before
    reading: a replaced multi-GB file is refused without being read."""
    entry = manifest.files.get(name)
    path = Manifest.file_path(directory, name)
    if entry is None or not path.is_file() or path.stat().st_size != entry["bytes"]:
        manifest.verify_files(directory, [name])  # raises the precise "not listed" / "missing" / "truncated" error
        raise ArtifactError(f"{path} cannot be verified", hint="rebuild the artifact")
    data = path.read_bytes()
    if len(data) != entry["bytes"] or sha256_bytes(data) != entry["sha256"]:
        manifest.verify_files(directory, [name])  # raises "truncated" / "modified" with the hint
        raise ArtifactError(f"{path} changed while it was being read", hint="copy the artifact again")
    return data


def _model_class(backend: str) -> type[Model]:
    if backend == "onnxruntime":
        from .onnxrt import OnnxRuntimeModel
        return OnnxRuntimeModel
    if backend == "openvino":
        from .openvino_backend import OpenVINOModel
        return OpenVINOModel
    if backend == "tensorrt":
        from .tensorrt_backend import TensorRTModel
        return TensorRTModel
    raise TrtInferError(f"unknown backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")


def _tensorrt_usable(manifest: Manifest, directory: Path, options: RuntimeOptions) -> tuple[bool, str]:
    if PLAN_NAME not in manifest.files:
        return False, f"the artifact has no {PLAN_NAME}"
    if not module_available("tensorrt"):
        return False, "TensorRT is not installed"
    if not module_available("cuda"):
        return False, "cuda-python is not installed"
    from .. import trt_support

    return trt_support.tensorrt_available(options.device)


def choose_cpu_backend(manifest: Manifest, why_not_gpu: str = "on the CPU") -> tuple[str, str]:
    """The fastest installed CPU backend for the artifact's precision (:data:`CPU_PREFERENCE`), and why."""
    order = CPU_PREFERENCE.get(manifest.precision, ("onnxruntime", "openvino"))
    for name in order:
        if cpu_backend_available(name):
            skipped = [o for o in order[:order.index(name)]]
            extra = f"; {', '.join(skipped)} not installed" if skipped else ""
            if manifest.precision == "int8" and name == "onnxruntime":
                extra += (" (ONNX Runtime runs Q/DQ models slower than FP32 on a CPU; "
                          "pip install 'trtinfer[openvino]' to run them in INT8)")
            return name, f"{why_not_gpu}; on the CPU, {name} is preferred for {manifest.precision} artifacts{extra}"
    raise BackendUnavailable("no CPU backend is installed (neither ONNX Runtime nor OpenVINO)",
                             hint="pip install 'trtinfer[onnxruntime]'")


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
    return choose_cpu_backend(manifest, why)


def _open(cls: type[Model], directory: Path, manifest: Manifest, options: RuntimeOptions, reason: str) -> Model:
    name = PLAN_NAME if cls.backend == "tensorrt" else ONNX_NAME
    data = read_verified(manifest, directory, name)
    return cls(directory, manifest, options, data, backend_reason=reason)


def load(artifact_dir: str | Path, backend: str = "auto", **options: Any) -> Model:
    """Open an artifact for inference.

    ``backend="auto"`` picks TensorRT when the artifact has a plan and TensorRT and a GPU are
    present, else the fastest CPU backend installed for the artifact's precision; ``model.backend``
    and ``model.backend_reason`` say which and why. Model files are checked against the manifest's
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
    if chosen == "tensorrt" and backend == "auto":
        try:
            model = _open(_model_class("tensorrt"), directory, manifest, opts, reason)
        except (BackendUnavailable, ArtifactError) as exc:
            from .tensorrt_backend import PlanIncompatibleError

            if isinstance(exc, ArtifactError) and not isinstance(exc, PlanIncompatibleError):
                raise  # tampering and broken files are never papered over by a fallback
            chosen, reason = choose_cpu_backend(manifest, f"TensorRT cannot run the plan ({exc.one_line()})")
            log.warning("falling back to %s: %s", chosen, reason)
            model = _open(_model_class(chosen), directory, manifest, opts, reason)
    else:
        model = _open(_model_class(chosen), directory, manifest, opts, reason)
    log.info("loaded %s on %s (%s)", directory, model.backend, reason)
    return model

