"""OpenVINO compiled models, made here and nowhere else: the import guard and the one configuration.

Every model trtinfer runs on OpenVINO (the CPU backend, the build's accuracy check, the
benchmark's NNCF peer) is compiled for the CPU with :func:`compile_config`: ``threads``
inference threads (0: OpenVINO's choice), the latency hint with one stream (or the throughput hint with
``streams`` streams), and float layers at
``precision`` (``f32`` unless a caller asks for ``bf16``: on CPUs with AVX512-BF16 OpenVINO would
otherwise pick bf16 by itself and change the artifact's numbers). A model OpenVINO cannot read
or compile raises OpenVINO's own exception: each caller turns it into its error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ....errors import BackendUnavailable


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailable("OpenVINO is not installed", hint="pip install 'trtinfer[openvino]'") from exc
    return openvino


def compile_config(threads: int, precision: str, streams: int = 1) -> dict[str, Any]:
    """One stream on every thread (the latency hint), or ``streams`` streams sharing them (the throughput
    hint: runs overlap, each on ``threads / streams`` cores)."""
    return {
        "INFERENCE_NUM_THREADS": int(threads),
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
        "NUM_STREAMS": int(streams),
        "INFERENCE_PRECISION_HINT": precision,
    }


def users_default_precision() -> dict[str, str]:
    """The inference precision OpenVINO's users get by default, as properties to compile with: none (OpenVINO
    decides: bf16 on CPUs with native BF16, f32 elsewhere), except where the kernels are held below BF16 by
    ``ONEDNN_MAX_CPU_ISA`` (how the test variants stand in for an AVX2 CPU). OpenVINO 2026.4 still reads bf16
    from the CPU's ID there and compiling fails ("object is not initialized", or no MaxPool kernel for an
    INT8 graph), where a CPU that really lacks BF16 gets f32: so f32 is said explicitly."""
    from ....cpu_info import cpu_info

    return {} if cpu_info().has_bf16 else {"INFERENCE_PRECISION_HINT": "f32"}


def read_model(model: bytes | str | Path, core: Any) -> Any:
    """ONNX bytes or a path as an ``openvino.Model`` (not compiled)."""
    return core.read_model(model if isinstance(model, bytes) else str(model))


def compiled_model(model: bytes | str | Path | Any, *, threads: int, precision: str = "f32", core: Any = None,
                   batch: int | None = None, streams: int = 1) -> Any:
    """``model`` (ONNX bytes, a path, or an ``openvino.Model`` already in memory) compiled for the CPU
    by ``core`` (an ``openvino.Core``; default a new one). The CPU backend passes its own and keeps it
    for the compiled model's lifetime, released after the model, as it always has. ``batch``: compile a
    copy whose batch dimension is fixed at that size (a static shape), the model itself untouched."""
    if core is None:
        core = import_openvino().Core()
    if isinstance(model, (bytes, str, Path)):
        model = read_model(model, core)
    if batch is not None:
        model = model.clone()
        shape = model.inputs[0].get_partial_shape()
        shape[0] = batch
        model.reshape({model.inputs[0]: shape})
    return core.compile_model(model, "CPU", compile_config(threads, precision, streams))
