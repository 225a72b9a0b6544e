"""The ways this machine can run an artifact on its CPU, named once for the build and the runtime.

An *execution* is a backend plus the precision hint it runs float layers at. The build measures
each available execution's accuracy on the evaluation images and records it in the manifest
(``accuracy.executions``); ``trtinfer.load(backend="auto")`` then times only the executions the
manifest does not rule out. BF16 is such an execution, not an artifact of its own: OpenVINO's
``INFERENCE_PRECISION_HINT=bf16`` on an FP32 or FP16 model, worth it only on a CPU with native
BF16 arithmetic (AVX512-BF16 or AMX); elsewhere OpenVINO would emulate it, slower than f32.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cpu_info import cpu_info
from .versions import module_available


@dataclass(frozen=True)
class Execution:
    name: str  # as recorded in manifests and tuning caches
    backend: str  # a trtinfer.load backend
    openvino_precision: str | None = None  # OpenVINO's INFERENCE_PRECISION_HINT; None for other backends
    lossy: bool = False  # changes the arithmetic of an FP32 model: must pass an accuracy check before use

    def unavailable_reason(self) -> str | None:
        """Why this machine cannot run it, or None when it can."""
        module = "onnxruntime" if self.backend == "onnxruntime" else "openvino"
        if not module_available(module):
            return f"{module} is not installed"
        if self.openvino_precision == "bf16" and not cpu_info().has_bf16:
            return ("this CPU has no native BF16 arithmetic (AVX512-BF16 or AMX); OpenVINO would emulate it, "
                    "slower than f32")
        return None

    def runtime_options(self) -> dict[str, str]:
        return {"openvino_precision": self.openvino_precision} if self.openvino_precision else {}


ONNXRUNTIME = Execution("onnxruntime", "onnxruntime")
OPENVINO = Execution("openvino", "openvino", "f32")
OPENVINO_BF16 = Execution("openvino-bf16", "openvino", "bf16", lossy=True)
CPU_EXECUTIONS: tuple[Execution, ...] = (ONNXRUNTIME, OPENVINO, OPENVINO_BF16)


def available_cpu_executions() -> list[Execution]:
    return [e for e in CPU_EXECUTIONS if e.unavailable_reason() is None]


def executions_checked_at_build(precision: str) -> list[Execution]:
    """Which executions the build's accuracy check measures for an artifact of ``precision``.

    An FP32 artifact runs exactly in ONNX Runtime and OpenVINO f32 (the export check covers it);
    only BF16 changes its arithmetic. Reduced-precision artifacts are checked on every backend,
    because each runs their Q/DQ or FP16 nodes its own way (up to a point of top-1 apart measured
    on one INT8 MobileNetV2), and an INT8 artifact in BF16 too: the float layers left around its Q/DQ
    nodes (the stem's input, the classifier's output, layers the fallback kept in float) then run in
    bf16, OpenVINO's own default on CPUs with native BF16.
    """
    runnable = available_cpu_executions()
    if precision == "fp32":
        return [e for e in runnable if e.lossy]
    return runnable


def judge_execution(target: str) -> Execution:
    """The execution that stands for the artifact's deployment in the build's choices and guard:
    OpenVINO for CPU artifacts (what ``load`` runs reduced precision with when it is installed),
    ONNX Runtime for GPU artifacts (TensorRT itself cannot run in the build's accuracy step)."""
    if target == "cpu" and OPENVINO.unavailable_reason() is None:
        return OPENVINO
    return ONNXRUNTIME


__all__ = ["Execution", "ONNXRUNTIME", "OPENVINO", "OPENVINO_BF16", "CPU_EXECUTIONS",
           "available_cpu_executions", "executions_checked_at_build", "judge_execution"]
