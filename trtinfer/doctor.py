"""What this host has, and which trtinfer stages can run on it and why not.

Every probe is lazy and exception-safe: a broken library shows up as a finding, never as a crash.
Heavy libraries (torch, ModelOpt) are found through package metadata and import specs only, so
``trtinfer doctor`` answers in about a second.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .runtime.backends.tensorrt import devices as gpu_devices
from .runtime.backends.tensorrt import loader as tensorrt_loader
from .versions import module_available, package_version

# Capabilities ``trtinfer doctor --require NAME`` can ask for, and the stages each needs
# (gpu and tensorrt are facts about the host rather than stages).
CAPABILITIES: dict[str, tuple[str, ...]] = {
    "gpu": (),
    "tensorrt": (),
    "build": ("load checkpoint", "export"),
    "fp16": ("FP16",),
    "int8": ("INT8",),
    "engine": ("engine build",),
    "gpu-runtime": ("GPU runtime",),
    "cpu-runtime": ("CPU runtime",),
}


@dataclass
class Finding:
    name: str
    value: str
    ok: bool | None = None  # None: informational
    detail: str = ""


@dataclass
class Stage:
    name: str
    ready: bool
    reason: str


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    capabilities: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"findings": [asdict(f) for f in self.findings], "stages": [asdict(s) for s in self.stages],
                "capabilities": self.capabilities}

    def capability(self, name: str) -> tuple[bool, str]:
        entry = self.capabilities[name]
        return bool(entry["ready"]), str(entry["reason"])


def _safe(probe: Callable[[], Any], default: Any = None) -> Any:
    try:
        return probe()
    except Exception:  # a probe must never take doctor down
        return default


def _short(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "message", None) or exc).split())
    return text if text else type(exc).__name__


def _first_version(*names: str) -> tuple[str, str] | None:
    for name in names:
        version = package_version(name)
        if version:
            return name, version
    return None


# -- host probes ---------------------------------------------------------------------------------------
def os_release() -> str:
    """/etc/os-release's PRETTY_NAME ("Debian GNU/Linux 12 (bookworm)"), or "" where there is none."""
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def _cpu() -> str:
    from .cpu_info import cpu_info

    info = cpu_info()
    return f"{info.model}, {info.usable_cores} usable core(s) of {info.logical_cores}"


def _isa() -> str:
    """The instruction-set extensions that decide the fastest CPU path (trtinfer.cpu_info.ISA_FLAGS)."""
    from .cpu_info import ISA_FLAGS, cpu_info

    info = cpu_info()
    text = ", ".join(info.flag_names()) or "none of AVX2 / AVX-512 / VNNI / BF16 / AMX"
    if info.capped_flags:
        text += (f" (held to ONEDNN_MAX_CPU_ISA={info.isa_ceiling}; the CPU also has "
                 f"{', '.join(ISA_FLAGS[f] for f in info.capped_flags)})")
    return text


def _isa_note() -> str:
    from .cpu_info import cpu_info

    info = cpu_info()
    int8 = ("INT8 runs in hardware dot products (VNNI/AMX): OpenVINO INT8 artifacts pay off" if info.has_int8_dot
            else "no VNNI or AMX: INT8 gains little over FP32 on this CPU")
    bf16 = ("BF16 native (AVX512-BF16/AMX): openvino_precision='bf16' is available" if info.has_bf16
            else "no native BF16: keep openvino_precision='f32'")
    return f"{int8}; {bf16}"


def _cpu_choice() -> tuple[str, str]:
    """What a build and ``load(backend="auto")`` choose on this machine (trtinfer.execution)."""
    from .execution import CPU_EXECUTIONS

    engine_ok, _ = tensorrt_loader.tensorrt_available(0)
    target = "gpu" if engine_ok else "cpu"
    if target == "gpu":
        quantizer = "ModelOpt (TensorRT's Q/DQ)"
    else:
        quantizer = "NNCF" if package_version("nncf") else "ModelOpt (NNCF not installed: pip install 'trtinfer[build]')"
    runnable = [e.name for e in CPU_EXECUTIONS if e.unavailable_reason() is None]
    out = [f"{e.name}: {e.unavailable_reason()}" for e in CPU_EXECUTIONS if e.unavailable_reason() is not None]
    text = f"build --target {target}, INT8 by {quantizer}; load() measures {', '.join(runnable) or 'nothing'}"
    return text, "; ".join(out)


def _nvidia_driver() -> str | None:
    """The kernel driver's release (e.g. 550.54.15), from /proc on Linux; None when not loaded."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for word in text.split():
        if word[:1].isdigit() and word.count(".") >= 1:
            return word
    return "loaded"


@dataclass
class GpuProbe:
    ok: bool
    summary: str
    devices: list[dict[str, Any]] = field(default_factory=list)


def probe_gpu() -> GpuProbe:
    """The GPUs CUDA sees (never raises): ``ok``, a one-line ``summary`` (or why none), ``devices``."""
    try:
        count = gpu_devices.gpu_count()
        devices = [gpu_devices.gpu_info(i) for i in range(count)]
    except Exception as exc:
        return GpuProbe(False, _short(exc))
    names = "; ".join(f"{d['device']}: {d['name']} (sm {d['compute_capability']}, {d['memory_mib']} MiB)"
                      for d in devices)
    return GpuProbe(True, names, devices)


def _probe_tensorrt() -> tuple[bool, str]:
    installed = _first_version("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings",
                               "tensorrt-cu12-bindings", "tensorrt_bindings")
    try:
        version = tensorrt_loader.trt_version()
    except Exception as exc:
        prefix = f"{installed[0]} {installed[1]} installed, but: " if installed else ""
        return False, prefix + _short(exc)
    return True, f"{version} (import ok)"


def _probe_onnxruntime() -> tuple[bool, str, list[str]]:
    installed = _first_version("onnxruntime-gpu", "onnxruntime")
    if not installed and not module_available("onnxruntime"):
        return False, "not installed (pip install 'trtinfer[onnxruntime]')", []
    try:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
        return True, f"{onnxruntime.__version__} ({installed[0] if installed else 'onnxruntime'})", providers
    except Exception as exc:
        return False, f"cannot be imported: {_short(exc)}", []


def collect() -> Report:
    """Probe this host; never raises."""
    report = Report()
    add = report.findings.append

    add(Finding("OS", _safe(lambda: ", ".join(filter(None, [os_release(), f"{platform.system()} {platform.release()}",
                                                            platform.machine()])), "unknown")))
    add(Finding("Python", platform.python_version(), None, sys.executable))
    add(Finding("CPU", _safe(_cpu, "unknown")))
    add(Finding("CPU ISA", _safe(_isa, "unknown"), None, _safe(_isa_note, "")))
    choice, ruled_out = _safe(_cpu_choice, ("unknown", ""))
    add(Finding("CPU choice", choice, None, ruled_out))

    gpu = _safe(probe_gpu, GpuProbe(False, "probe failed"))
    driver = _safe(_nvidia_driver, None)
    versions = _safe(gpu_devices.cuda_versions, {})
    if not isinstance(versions, dict):
        versions = {}
    add(Finding("GPU", gpu.summary if gpu.ok else "none", gpu.ok, "" if gpu.ok else gpu.summary))
    driver_text = driver or "not loaded"
    if versions.get("driver"):
        driver_text += f" (supports CUDA {versions['driver']})"
    add(Finding("NVIDIA driver", driver_text, bool(driver or versions.get("driver"))))
    add(Finding("CUDA runtime", versions.get("runtime") or "not available", bool(versions.get("runtime")),
                "" if versions.get("runtime") else "cuda-python or the CUDA runtime library is missing"))

    trt_ok, trt_text = _safe(_probe_tensorrt, (False, "probe failed"))
    add(Finding("TensorRT", trt_text if trt_ok else "unavailable", trt_ok, "" if trt_ok else trt_text))
    cuda_py = _first_version("cuda-python", "cuda-bindings")
    cudart_ok = module_available("cuda.bindings") or module_available("cuda.cudart")
    add(Finding("cuda-python", f"{cuda_py[0]} {cuda_py[1]}" if cuda_py else "not installed", bool(cuda_py and cudart_ok)))

    ort_ok, ort_text, providers = _safe(_probe_onnxruntime, (False, "probe failed", []))
    add(Finding("ONNX Runtime", ort_text, ort_ok))
    if providers:
        note = ""
        if not gpu.ok and any(p in providers for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")):
            note = "GPU providers are built in but need a GPU, which this host lacks"
        add(Finding("ORT providers", ", ".join(providers), True, note))
    for label, names, module in (("torch", ("torch",), "torch"), ("torchvision", ("torchvision",), "torchvision"),
                                 ("onnx", ("onnx",), "onnx"), ("ModelOpt", ("nvidia-modelopt",), "modelopt")):
        found = _first_version(*names)
        ok = bool(found) and module_available(module)
        add(Finding(label, found[1] if found else "not installed", ok))

    versions = {f.name: f for f in report.findings}
    have = {name: bool(versions[name].ok) for name in ("torch", "torchvision", "onnx", "ModelOpt")}
    have["onnxruntime"] = ort_ok
    cpu_provider = "CPUExecutionProvider" in providers

    def need(*parts: tuple[bool, str]) -> tuple[bool, str]:
        missing = [why for ok, why in parts if not ok]
        return (not missing), ("; ".join(missing) if missing else "ready")

    build_extra = "install the build extra: pip install 'trtinfer[build]'"
    engine_ok, engine_reason = _safe(lambda: tensorrt_loader.tensorrt_available(0), (False, "probe failed"))
    finish_elsewhere = ("; build the ONNX artifact here and finish it on a GPU host with "
                        "`trtinfer build --from-onnx DIR`")
    stages = [
        ("load checkpoint", need((have["torch"] and have["torchvision"], f"torch/torchvision missing ({build_extra})"))),
        ("export", need((have["torch"] and have["torchvision"], f"torch/torchvision missing ({build_extra})"),
                        (have["onnx"], f"onnx missing ({build_extra})"))),
        ("FP16", need((have["onnx"], f"onnx missing ({build_extra})"),
                      (have["ModelOpt"], f"ModelOpt missing ({build_extra})"),
                      (have["onnxruntime"], "ONNX Runtime missing (validation runs on it)"))),
        ("INT8", need((have["ModelOpt"], f"ModelOpt missing ({build_extra})"),
                      (have["onnxruntime"], "ONNX Runtime missing (calibration runs on it)"))),
        ("engine build", (engine_ok, engine_reason if engine_ok else engine_reason + finish_elsewhere)),
        ("GPU runtime", (True, engine_reason) if engine_ok and cuda_py else
         need((engine_ok, engine_reason), (bool(cuda_py), "cuda-python missing (pip install 'trtinfer[tensorrt]')"))),
        ("CPU runtime", need((have["onnxruntime"] and cpu_provider,
                              "ONNX Runtime with its CPU provider missing (pip install 'trtinfer[onnxruntime]')"))),
    ]
    report.stages = [Stage(name, bool(ready), reason) for name, (ready, reason) in stages]
    by_stage = {s.name: s for s in report.stages}
    report.capabilities["gpu"] = {"ready": gpu.ok, "reason": gpu.summary}
    if not trt_ok:
        report.capabilities["tensorrt"] = {"ready": False, "reason": trt_text}
    elif not gpu.ok:
        report.capabilities["tensorrt"] = {"ready": False, "reason": f"TensorRT {trt_text}, but {gpu.summary}"}
    else:
        report.capabilities["tensorrt"] = {"ready": True, "reason": f"TensorRT {trt_text}"}
    for cap, stage_names in CAPABILITIES.items():
        if stage_names:
            needed = [by_stage[n] for n in stage_names]
            missing = [f"{st.name}: {st.reason}" for st in needed if not st.ready]
            report.capabilities[cap] = {"ready": not missing,
                                        "reason": "; ".join(missing) if missing else needed[-1].reason}
    return report


def missing_requirements(report: Report, required: list[str]) -> list[str]:
    """One reason per required capability that this host lacks."""
    out = []
    for name in required:
        ready, reason = report.capability(name)
        if not ready:
            out.append(f"{name}: {reason}")
    return out
