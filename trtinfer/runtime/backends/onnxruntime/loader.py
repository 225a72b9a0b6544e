"""ONNX Runtime sessions, made here and nowhere else: the import guard and the one set of options.

Every session trtinfer makes (the CPU backend, the build's accuracy and FP16 checks, calibration
diagnostics, the benchmark's bare and GPU-provider peers) has the same options: errors-only
logging, one inter-op thread, sequential execution and every graph optimisation (the last two
are ONNX Runtime's defaults, said here so that they are said once). What callers differ in is a
named parameter: ``threads`` (intra-op threads; ``None``: ONNX Runtime's choice, every core),
``spin`` (busy-waiting between runs; ``None``: ONNX Runtime's default, on) and ``providers``.
A model ONNX Runtime cannot load raises ONNX Runtime's own exception: each caller turns it into
its error (an artifact that cannot load, a build step that cannot check).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ....errors import BackendUnavailable

CPU_PROVIDERS = ("CPUExecutionProvider",)
NOT_INSTALLED = "ONNX Runtime is not installed"
INSTALL_HINT = "pip install 'trtinfer[onnxruntime]' (or onnxruntime-gpu; never both)"


def import_onnxruntime(missing: str = NOT_INSTALLED, hint: str = INSTALL_HINT) -> Any:
    """The ``onnxruntime`` module, or BackendUnavailable(``missing``, ``hint``): a build step names
    itself and its extra (``"the accuracy check runs ONNX Runtime"``, ``trtinfer[build]``)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(missing, hint=hint) from exc
    return onnxruntime


def session_options(ort: Any, threads: int | None = None, spin: bool | None = None) -> Any:
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only; ORT's warnings (unused initializers, Q/DQ fusion notes) are noise here
    if spin is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return so


def session(model: bytes | str | Path, *, threads: int | None = None, spin: bool | None = None,
            providers: Sequence[str] = CPU_PROVIDERS) -> Any:
    """An ``onnxruntime.InferenceSession`` on ``model`` (serialized bytes or a path) with the options
    above. A caller that says its own error when ONNX Runtime is missing calls
    :func:`import_onnxruntime` first, outside the ``try`` that turns load failures into its error."""
    ort = import_onnxruntime()
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=session_options(ort, threads, spin), providers=list(providers))
