"""ONNX Runtime on the CPU: the embedded default backend.

Session options are set deliberately (intra-op threads = the cores available, one inter-op
thread, sequential execution, every graph optimisation, no busy-waiting between runs unless
``spin=True``) and one session is shared by all threads:
``InferenceSession.run`` is safe to call concurrently. The hot path is one ``run`` call on the
caller's array, with no copy on either side.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import ArtifactError, BackendUnavailable
from .model import Model
from .options import DEFAULT_CPU_CHUNK, DEFAULT_CPU_MAX_BATCH
from .planning import uniform_chunks

log = logging.getLogger(__name__)

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable("ONNX Runtime is not installed",
                                 hint="pip install 'trtinfer[onnxruntime]' (or onnxruntime-gpu; never both)") from exc
    return onnxruntime


def make_session_options(threads: int, spin: bool = False) -> Any:
    """The session options the backend uses; the benchmark builds its bare baseline with these too."""
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only; ORT's warnings about unused initializers are noise here
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return so


class OnnxRuntimeModel(Model):
    backend = "onnxruntime"

    def _open(self, model_bytes: bytes) -> None:
        ort = import_onnxruntime()
        threads = self.options.cpu_threads
        try:
            self._session = ort.InferenceSession(model_bytes, sess_options=make_session_options(threads, self.options.spin),
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ArtifactError(f"ONNX Runtime cannot load {self.artifact_dir / 'model.onnx'}: {exc}",
                                hint="re-export the model (trtinfer build)") from exc
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1:
            raise ArtifactError(f"the ONNX model has {len(inputs)} inputs; trtinfer runs single-input classifiers")
        self._input_name = inputs[0].name
        if self._input_name != self.manifest.input.name:
            log.warning("ONNX input is named %r, the manifest says %r; using the model's name",
                        self._input_name, self.manifest.input.name)
        names = [o.name for o in outputs]
        self._output_names = [self.manifest.output.name if self.manifest.output.name in names else names[0]]
        self._model_dtype = np.dtype(_ORT_TYPES.get(inputs[0].type, np.float32))
        self.threads = threads
        self.max_chunk = self.options.chunk_size or DEFAULT_CPU_CHUNK
        self.concurrency = 1  # intra-op threads already use every core
        self.default_max_batch = DEFAULT_CPU_MAX_BATCH
        self._run = self._session.run

    def _infer_impl(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        if self._model_dtype != x.dtype:
            x = x.astype(self._model_dtype)
        rows = x.shape[0]
        if rows <= self.max_chunk:
            y = self._run(self._output_names, {self._input_name: x})[0]
            if y.dtype != self.output_dtype:
                y = y.astype(self.output_dtype)
            if out is None:
                return y
            out[...] = y
            return out
        if out is None:
            out = np.empty((rows, *self.output_row_shape), dtype=self.output_dtype)
        for start, stop in uniform_chunks(rows, self.max_chunk):
            out[start:stop] = self._run(self._output_names, {self._input_name: x[start:stop]})[0]
        return out

    def _close_impl(self) -> None:
        # ONNX Runtime frees a session when its last reference goes; drop ours (and the bound
        # method that holds it) so nothing keeps it alive.
        self._run = None
        self._session = None
