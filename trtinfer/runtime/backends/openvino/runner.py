"""OpenVINO on the CPU (optional extra ``[openvino]``): runs INT8 Q/DQ models in INT8 on x86 CPUs
with VNNI, where ONNX Runtime runs them slower than FP32.

Float layers run at ``openvino_precision`` (``f32`` by default; see :mod:`.loader`). The compiled
model is shared; each concurrent call takes an infer request from a pool (a request is not
thread-safe).
"""

from __future__ import annotations

import logging
import queue
from typing import Any

import numpy as np

from ....errors import ArtifactError
from ...model import Model
from ...options import DEFAULT_CPU_CHUNK, DEFAULT_CPU_MAX_BATCH
from ...planning import uniform_chunks
from ..graph_check import check_graph_shapes, openvino_dims
from . import loader

log = logging.getLogger(__name__)


class OpenVINOModel(Model):
    backend = "openvino"

    def _open(self, model_bytes: bytes) -> None:
        ov = loader.import_openvino()
        self.threads = self.options.cpu_threads
        try:
            self._core = ov.Core()
            self._compiled = loader.compiled_model(model_bytes, threads=self.threads,
                                                   precision=self.options.openvino_precision or "f32", core=self._core)
        except Exception as exc:
            raise ArtifactError(f"OpenVINO cannot load {self.artifact_dir / 'model.onnx'}: {exc}",
                                hint="re-export the model (trtinfer build), or use backend='onnxruntime'") from exc
        if len(self._compiled.inputs) != 1:
            raise ArtifactError(f"the ONNX model has {len(self._compiled.inputs)} inputs; "
                                "trtinfer runs single-input classifiers")
        self._output = self._compiled.outputs[0]
        for port in self._compiled.outputs:
            if self.manifest.output.name in port.get_names():
                self._output = port
        check_graph_shapes(self.manifest, openvino_dims(self._compiled.inputs[0].get_partial_shape()),
                           openvino_dims(self._output.get_partial_shape()), str(self.artifact_dir / "model.onnx"))
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._all_requests: list[Any] = []
        self.max_chunk = self.options.chunk_size or DEFAULT_CPU_CHUNK
        self.concurrency = 1
        self.default_max_batch = DEFAULT_CPU_MAX_BATCH

    def _request(self) -> Any:
        try:
            return self._requests.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
            self._all_requests.append(request)
            return request

    def _infer_impl(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        request = self._request()
        try:
            rows = x.shape[0]
            if rows <= self.max_chunk:
                y = request.infer({0: x}, share_inputs=True)[self._output]
                if out is None:
                    return np.array(y, dtype=self.output_dtype, copy=True)
                out[...] = y
                return out
            if out is None:
                out = np.empty((rows, *self.output_row_shape), dtype=self.output_dtype)
            for start, stop in uniform_chunks(rows, self.max_chunk):
                out[start:stop] = request.infer({0: x[start:stop]}, share_inputs=True)[self._output]
            return out
        finally:
            self._requests.put(request)

    def _close_impl(self) -> None:
        self._requests = queue.SimpleQueue()
        self._all_requests.clear()
        self._output = None
        self._compiled = None
        self._core = None
