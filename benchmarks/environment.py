"""The environment block of a benchmark run: what the figures were measured on, and warnings when the
machine was busy or its clocks were free to vary."""

from __future__ import annotations

import platform
from typing import Any

from trtinfer.cpu_info import cpu_info
from trtinfer.versions import library_versions, package_version

#: Libraries whose version changes a figure, beyond those an artifact records.
BENCH_LIBRARIES = ("torchao", "torch-tensorrt", "nncf", "onnxruntime-openvino")


def collect_environment(threads: int) -> dict[str, Any]:
    """CPU model and ISA flags, cores, governor, load; GPU, driver and CUDA; library versions; warnings."""
    cpu = cpu_info()
    warnings = [w for w in (cpu.busy_warning(), cpu.governor_warning()) if w]
    if threads > cpu.usable_cores:
        warnings.append(f"--threads {threads} is more than the {cpu.usable_cores} usable core(s): threads compete")
    env: dict[str, Any] = {
        "cpu": {**cpu.to_dict(), "threads_used": threads},
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "libraries": {**library_versions(), **{n: v for n in BENCH_LIBRARIES if (v := package_version(n))}},
        "gpu": _gpu(),
        "warnings": warnings,
    }
    return env


def _gpu() -> dict[str, Any]:
    """GPUs, driver and CUDA versions as ``trtinfer doctor`` finds them (never raises)."""
    from trtinfer.doctor import probe_gpu
    from trtinfer.runtime.backends.tensorrt import devices

    gpu = probe_gpu()
    out: dict[str, Any] = {"devices": gpu.devices}
    if not gpu.ok:
        out["none"] = gpu.summary
    try:
        out["cuda"] = devices.cuda_versions()
    except Exception:
        out["cuda"] = {}
    return out


def describe(env: dict[str, Any]) -> list[str]:
    """A few lines for the terminal and the README."""
    cpu = env["cpu"]
    flags = ", ".join(cpu.get("flag_names") or []) or "none of note"
    lines = [f"CPU: {cpu['model']} ({cpu['usable_cores']} usable of {cpu['logical_cores']} logical cores, "
             f"{cpu['threads_used']} threads used); ISA: {flags}",
             f"governor: {cpu.get('governor') or 'not readable'}; load average {cpu.get('load_average')}"]
    gpus = env["gpu"].get("devices") or []
    if gpus:
        lines.append("GPU: " + "; ".join(f"{g['name']} (sm {g['compute_capability']})" for g in gpus)
                     + f", CUDA {env['gpu'].get('cuda')}")
    else:
        lines.append(f"GPU: none ({env['gpu'].get('none', 'not found')})")
    libs = env["libraries"]
    lines.append("libraries: " + ", ".join(f"{k} {libs[k]}" for k in
                                           ("trtinfer", "torch", "onnxruntime", "onnxruntime-gpu", "openvino",
                                            "nvidia-modelopt", "torchao", "tensorrt") if k in libs))
    return lines
