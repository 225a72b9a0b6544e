"""ONNX Runtime on the CPU: the embedded default backend.

Sessions come from :mod:`.loader` with intra-op threads = the cores available and busy-waiting
between runs on or off as measured on this machine unless ``spin`` is given. One session is
shared by all threads: ``InferenceSession.run`` is safe to call concurrently. The hot path is
one ``run`` call on the caller's array, with no copy on either side.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np

from ....errors import ArtifactError
from ...model import Model
from ...options import DEFAULT_CPU_CHUNK, DEFAULT_CPU_MAX_BATCH
from ...planning import uniform_chunks
from ..graph_check import check_graph_shapes, ort_dims
from . import loader

log = logging.getLogger(__name__)

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OnnxRuntimeModel(Model):
    backend = "onnxruntime"

    def _open(self, model_bytes: bytes) -> None:
        ort = loader.import_onnxruntime()
        threads = self.options.cpu_threads
        self.threads = threads
        self.spin_reason = "given"
        if self.options.spin is None:
            self._session, self.spin, self.spin_reason = self._measured_session(ort, model_bytes, threads)
        else:
            self.spin = bool(self.options.spin)
            self._session = self._new_session(model_bytes, threads, self.spin)
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
        self.max_chunk = self.options.chunk_size or DEFAULT_CPU_CHUNK
        self.concurrency = 1  # intra-op threads already use every core
        self.default_max_batch = DEFAULT_CPU_MAX_BATCH
        self._run = self._session.run

    def _new_session(self, model_bytes: bytes, threads: int, spin: bool) -> Any:
        try:
            session = loader.session(model_bytes, threads=threads, spin=spin)
        except Exception as exc:
            raise ArtifactError(f"ONNX Runtime cannot load {self.artifact_dir / 'model.onnx'}: {exc}",
                                hint="re-export the model (trtinfer build)") from exc
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) == 1 and outputs:
            output = next((o for o in outputs if o.name == self.manifest.output.name), outputs[0])
            check_graph_shapes(self.manifest, ort_dims(inputs[0].shape), ort_dims(output.shape),
                               str(self.artifact_dir / "model.onnx"))
        return session

    def _measured_session(self, ort: Any, model_bytes: bytes, threads: int) -> tuple[Any, bool, str]:
        """Spinning on or off, by one rule for every use (below): measured once per model, CPU, ONNX Runtime
        version and thread count, then cached."""
        from ....manifest import ONNX_NAME
        from ... import tuning

        entry = self.manifest.files.get(ONNX_NAME)
        sha = entry.sha256 if entry is not None else ""
        key = tuning.tuning_key("onnxruntime-spin", sha, f"onnxruntime {ort.__version__}", threads)
        cached = tuning.lookup(key) if sha else None
        if cached is not None and isinstance(cached.get("spin"), bool):
            spin = cached["spin"]
            return self._new_session(model_bytes, threads, spin), spin, f"cached measurement: {cached['why']}"
        sessions = {spin: self._new_session(model_bytes, threads, spin) for spin in (True, False)}
        name = sessions[True].get_inputs()[0].name
        rows = (1, DEFAULT_CPU_MAX_BATCH)
        inputs = {r: np.zeros((r, *self.row_shape), np.float32) for r in rows}
        times = tuning.race({spin: {f"b{r}": functools.partial(s.run, None, {name: inputs[r]}) for r in rows}
                             for spin, s in sessions.items()}, calls={"b1": 10, f"b{rows[1]}": 2})
        on, off = times[True], times[False]
        # whatever the use: spinning when it wins at batch 1 and costs full batches at most 3 %. A throughput
        # caller used to take it only when it won on full batches, a coin toss where the two are within noise,
        # and lost batch 1 by 1.16x when it fell the other way (0.86 of the bare spinning session, CIFAR-stem
        # ResNet-18): load()'s defaults must serve a caller sending one request at a time too.
        full = f"b{rows[1]}"
        spin = on["b1"] < off["b1"] and on[full] <= 1.03 * off[full]
        why = (f"spinning {'on' if spin else 'off'}: batch 1 {on['b1'] * 1e6:.0f} vs {off['b1'] * 1e6:.0f} us, "
               f"batch {rows[1]} {on[f'b{rows[1]}'] * 1e3:.1f} vs {off[f'b{rows[1]}'] * 1e3:.1f} ms (on vs off)")
        if sha:
            tuning.remember(key, {"spin": spin, "why": why})
        log.info("onnxruntime %s", why)
        chosen = sessions.pop(spin)
        sessions.clear()
        return chosen, spin, f"measured: {why}"

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
