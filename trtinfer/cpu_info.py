"""What this CPU can do: model, the ISA flags that decide which inference path is fastest, cores,
frequency governor and load. Read from ``/proc`` and ``/sys`` (Linux); nothing is imported.

The benchmark's environment block and ``trtinfer doctor`` both report these, because a figure
measured on a CPU with AVX-512 VNNI or AMX says little about one without.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: /proc/cpuinfo flag -> what it means for inference (in the order they matter).
ISA_FLAGS: dict[str, str] = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI (INT8 dot products)",
    "avx_vnni": "AVX-VNNI (INT8 dot products, 256-bit)",
    "avx512_bf16": "AVX-512 BF16",
    "avx512_fp16": "AVX-512 FP16",
    "amx_tile": "AMX tiles",
    "amx_int8": "AMX INT8",
    "amx_bf16": "AMX BF16",
}


#: oneDNN's ISA ceilings (``ONEDNN_MAX_CPU_ISA``, as PyTorch's and OpenVINO's CPU kernels read it) -> the
#: ISA_FLAGS whose instructions the kernels may still use under it (oneDNN's "CPU dispatcher control" docs).
_BELOW_AVX2: frozenset[str] = frozenset()
_AVX2 = frozenset({"avx2", "fma"})
_AVX2_VNNI = _AVX2 | {"avx_vnni"}
_AVX512 = _AVX2_VNNI | {"avx512f"}
_AVX512_VNNI = _AVX512 | {"avx512_vnni"}
_AVX512_BF16 = _AVX512_VNNI | {"avx512_bf16"}
_AVX512_FP16 = _AVX512_BF16 | {"avx512_fp16"}
_AMX = _AVX512_FP16 | {"amx_tile", "amx_int8", "amx_bf16"}
ISA_CEILINGS: dict[str, frozenset[str]] = {
    "SSE41": _BELOW_AVX2, "AVX": _BELOW_AVX2, "AVX2": _AVX2, "AVX2_VNNI": _AVX2_VNNI, "AVX2_VNNI_2": _AVX2_VNNI,
    "AVX512_CORE": _AVX512, "AVX512_CORE_VNNI": _AVX512_VNNI, "AVX512_CORE_BF16": _AVX512_BF16,
    "AVX512_CORE_FP16": _AVX512_FP16, "AVX10_1_512": _AVX512_FP16, "AVX512_CORE_AMX": _AMX,
    "AVX10_1_512_AMX": _AMX, "AVX512_CORE_AMX_FP16": _AMX, "AVX10_1_512_AMX_FP16": _AMX,
}


def isa_ceiling(environ: dict[str, str] | None = None) -> str | None:
    """The ISA ceiling set for oneDNN in the environment (``ONEDNN_MAX_CPU_ISA``, or its older name
    ``DNNL_MAX_CPU_ISA``), upper-cased; None when unset, ``ALL``/``DEFAULT`` or unknown."""
    env = os.environ if environ is None else environ
    value = (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return value if value in ISA_CEILINGS else None


@dataclass
class CpuInfo:
    model: str
    machine: str
    logical_cores: int
    usable_cores: int  # affinity / cgroup-limited set this process may run on
    # the ISA_FLAGS the kernels may use, in ISA_FLAGS order: present on the CPU and under the ISA ceiling
    flags: list[str] = field(default_factory=list)
    governor: str | None = None  # cpufreq scaling governor of cpu0 (None: not readable, e.g. a VM)
    load_average: float | None = None  # 1-minute load average
    isa_ceiling: str | None = None  # ONEDNN_MAX_CPU_ISA when it holds the kernels below what the CPU has
    capped_flags: list[str] = field(default_factory=list)  # on the CPU, but above the ceiling

    @property
    def has_int8_dot(self) -> bool:
        """VNNI or AMX: INT8 runs several times faster than FP32 on this CPU."""
        return any(f in self.flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))

    @property
    def has_bf16(self) -> bool:
        """AVX512-BF16 or AMX-BF16: OpenVINO's bf16 inference precision runs natively."""
        return any(f in self.flags for f in ("avx512_bf16", "amx_bf16"))

    def flag_names(self) -> list[str]:
        return [ISA_FLAGS[f] for f in self.flags]

    def busy_warning(self) -> str | None:
        """A sentence when other work (load average) would skew timings measured now."""
        if self.load_average is None:
            return None
        if self.load_average > 0.5 * self.usable_cores:
            return (f"the machine is busy: load average {self.load_average:.2f} on {self.usable_cores} usable "
                    "core(s); other work skews timings (ratios within one run still hold better than absolutes)")
        return None

    def governor_warning(self) -> str | None:
        if self.governor and self.governor != "performance":
            return (f"CPU frequency scaling governor is {self.governor!r}, not 'performance': clocks vary "
                    "between runs (sudo cpupower frequency-set -g performance)")
        return None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["flag_names"] = self.flag_names()
        data["int8_dot_product"] = self.has_int8_dot
        data["bf16"] = self.has_bf16
        return data


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """(model name, set of flags) from the text of /proc/cpuinfo (the first processor's)."""
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:  # "Features" on aarch64
            flags = set(value.split())
    return model, flags


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cpu_info() -> CpuInfo:
    """Probe this CPU; never raises (unknown facts stay empty). An ISA ceiling in the environment
    (``ONEDNN_MAX_CPU_ISA=AVX2``) removes the flags above it: the kernels cannot use them."""
    model, flags = parse_cpuinfo(_read("/proc/cpuinfo") or "")
    ceiling = isa_ceiling()
    present = [f for f in ISA_FLAGS if f in flags]
    allowed = ISA_CEILINGS[ceiling] if ceiling else frozenset(ISA_FLAGS)
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    try:
        load: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    return CpuInfo(model=model or platform.processor() or platform.machine(), machine=platform.machine(),
                   logical_cores=os.cpu_count() or 1, usable_cores=usable_cores(),
                   flags=[f for f in present if f in allowed], governor=governor.strip() if governor else None,
                   load_average=load, isa_ceiling=ceiling, capped_flags=[f for f in present if f not in allowed])
