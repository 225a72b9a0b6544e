"""Compile a model the way OpenVINO's own users do: its default configuration (OpenVINO's tools, OVMS and
Triton's OpenVINO backend pass no properties), both performance hints, and bf16 where the CPU has it."""

from __future__ import annotations

from pathlib import Path

from trtinfer.cpu_info import cpu_info


def openvino_user_configs() -> dict[str, dict[str, str]]:
    """The configurations a user's tool compiles with, by name. OpenVINO's default inference precision is
    bf16 on CPUs with native BF16 (AMX, AVX512-BF16) and f32 elsewhere; the explicit bf16 hint is asked
    only where the CPU has it (elsewhere OpenVINO emulates it and no user would ask)."""
    from trtinfer.runtime.backends.openvino.loader import users_default_precision

    default = users_default_precision()  # f32 said only where the ISA is held below BF16 (the AVX2 variant)
    configs: dict[str, dict[str, str]] = {"defaults": default,
                                          "throughput hint": {"PERFORMANCE_HINT": "THROUGHPUT", **default}}
    if cpu_info().has_bf16:
        configs["bf16 hint"] = {"INFERENCE_PRECISION_HINT": "bf16"}
    return configs


def openvino_compile_failures(model_path: Path) -> dict[str, str]:
    """Each user configuration under which OpenVINO cannot compile ``model_path``, with OpenVINO's message."""
    import openvino as ov

    core = ov.Core()
    failures = {}
    for name, config in openvino_user_configs().items():
        try:
            core.compile_model(str(model_path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError with its own message
            failures[name] = " ".join(str(exc).split())[:300]
    return failures
