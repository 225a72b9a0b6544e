"""OpenVINO on the CPU (optional extra ``[openvino]``): runs INT8 Q/DQ models in INT8 on x86 CPUs
with VNNI, where ONNX Runtime runs them slower than FP32.

Float layers run at ``openvino_precision`` (``f32`` by default; see :mod:`.loader`). One run uses every
core (the latency configuration) unless ``openvino_streams`` asks for several overlapped runs (the
throughput configuration, as ``benchmark_app -hint throughput``); then the batcher runs as many batches
at once. Each compiled
model is shared; each concurrent call takes an infer request from that model's pool (a request is
not thread-safe).

Static shapes: besides the model compiled with a dynamic batch, the backend may hold copies compiled
at fixed batch sizes, one row and the batcher's full batch (``prefer``'s two batches): OpenVINO plans
a static graph once instead of per call, measured 5-14 % faster on an AMX Xeon (ResNet-18 at 32x32,
FP32 in bf16 and INT8). A call of any other size runs the dynamic model. Which sizes pay is measured
per size at first load (``static_shapes=None``) and cached like ONNX Runtime's spinning.
"""

from __future__ import annotations

import functools
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

class _Compiled:
    """One compiled model, the index of the output trtinfer reads, and its pool of infer requests."""

    def __init__(self, compiled: Any, output_name: str) -> None:
        self.compiled = compiled
        self._tensor = loader.import_openvino().Tensor
        self.output = 0
        for i, port in enumerate(compiled.outputs):
            if output_name in port.get_names():
                self.output = i
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._all: list[Any] = []

    def take(self) -> Any:
        try:
            return self._requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
            self._all.append(request)
            return request

    def give(self, request: Any) -> None:
        self._requests.put(request)

    def run(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The output for ``x``, written into ``out`` when given, else a new array; copied out of the
        request's buffer before the request goes back to the pool (another thread may run it next).

        ``x`` is bound as the request's input without a copy, and the request runs with no inputs
        passed (``infer()``): ``infer({0: x})`` goes through OpenVINO's Python input dispatch and
        result dictionary on every call, which cost a batch-1 ResNet-18 about 30 us more per call on
        an AMX Xeon (575 against 602-634 us, interleaved)."""
        request = self.take()
        try:
            try:
                tensor = self._tensor(x, shared_memory=True)
            except ValueError:  # a read-only array (a server's request bytes) is not shared: OpenVINO copies it
                tensor = self._tensor(x, shared_memory=False)
            request.set_input_tensor(tensor)
            request.infer()
            y = request.get_output_tensor(self.output).data  # a view of the request's buffer
            if out is None:
                return y.astype(np.float32)  # a copy (also of a model whose output is not float32)
            out[...] = y
            return out
        finally:
            self.give(request)

    def free(self) -> None:
        self._requests = queue.SimpleQueue()
        self._all.clear()
        self.compiled = None


class OpenVINOModel(Model):
    backend = "openvino"

    def _open(self, model_bytes: bytes) -> None:
        ov = loader.import_openvino()
        self.threads = self.options.cpu_threads
        self.precision_hint = self.options.openvino_precision or "f32"
        self.streams = min(self.options.openvino_streams or 1, self.threads)
        self._static: dict[int, _Compiled] = {}
        self.static_reason = "the model's batch size is fixed"
        try:
            self._core = ov.Core()
            source = loader.read_model(model_bytes, self._core)
            compiled = loader.compiled_model(source, threads=self.threads, precision=self.precision_hint,
                                             core=self._core, streams=self.streams)
        except Exception as exc:
            raise ArtifactError(f"OpenVINO cannot load {self.artifact_dir / 'model.onnx'}: {exc}",
                                hint="re-export the model (trtinfer build), or use backend='onnxruntime'") from exc
        if len(compiled.inputs) != 1:
            raise ArtifactError(f"the ONNX model has {len(compiled.inputs)} inputs; "
                                "trtinfer runs single-input classifiers")
        self._dynamic = _Compiled(compiled, self.manifest.output.name)
        check_graph_shapes(self.manifest, openvino_dims(compiled.inputs[0].get_partial_shape()),
                           openvino_dims(compiled.outputs[self._dynamic.output].get_partial_shape()),
                           str(self.artifact_dir / "model.onnx"))
        self.max_chunk = self.options.chunk_size or DEFAULT_CPU_CHUNK
        self.concurrency = self.streams  # the batcher runs as many batches at once as OpenVINO overlaps
        self.default_max_batch = DEFAULT_CPU_MAX_BATCH
        if compiled.inputs[0].get_partial_shape()[0].is_dynamic:
            self._open_static(source)

    def static_batch_sizes(self) -> tuple[int, ...]:
        """One row and the batcher's full batch (``max_batch``), within a backend run (``max_chunk``)."""
        full = min(self.options.max_batch or DEFAULT_CPU_MAX_BATCH, self.max_chunk)
        return tuple(sorted({1, full}))

    def _open_static(self, source: Any) -> None:
        sizes = self.static_batch_sizes()
        given = self.options.static_shapes
        if given is False:
            self.static_reason = "given"
            return
        try:
            static = {n: _Compiled(loader.compiled_model(source, threads=self.threads, precision=self.precision_hint,
                                                         core=self._core, batch=n, streams=self.streams),
                                   self.manifest.output.name)
                      for n in sizes}
        except Exception as exc:  # a graph OpenVINO cannot fix at a size keeps the dynamic model, which works
            self.static_reason = f"OpenVINO cannot compile it at a fixed batch size: {' '.join(str(exc).split())[:200]}"
            log.info("openvino static shapes: %s", self.static_reason)
            return
        if given is True:
            kept, self.static_reason = tuple(sizes), "given"
        else:
            kept, self.static_reason = self._measured_static(static)
        for n, compiled in static.items():
            if n in kept:
                self._static[n] = compiled
            else:
                compiled.free()

    @property
    def static_shapes(self) -> bool:
        """Whether any fixed-batch copy is in use (``static_batch_sizes`` says which sizes may have one)."""
        return bool(self._static)

    def _measured_static(self, static: dict[int, _Compiled]) -> tuple[tuple[int, ...], str]:
        """The batch sizes whose static-shape copy beats the dynamic model here, each size judged on its own (a
        copy costs memory only where it pays): measured once per model, CPU, OpenVINO version, precision,
        streams, threads and sizes, then cached."""
        from ....manifest import ONNX_NAME
        from ... import tuning

        entry = self.manifest.files.get(ONNX_NAME)
        sha = entry.sha256 if entry is not None else ""
        sizes = sorted(static)
        library = f"openvino {loader.import_openvino().__version__} {self.precision_hint} streams={self.streams}"
        key = tuning.tuning_key(f"openvino-static-{'-'.join(map(str, sizes))}", sha, library, self.threads)
        cached = tuning.lookup(key) if sha else None
        if cached is not None and isinstance(cached.get("static_sizes"), list) \
                and all(n in sizes for n in cached["static_sizes"]):
            return tuple(cached["static_sizes"]), f"cached measurement: {cached['why']}"
        inputs = {n: np.zeros((n, *self.row_shape), np.float32) for n in sizes}
        runs: dict[str, dict[str, Any]] = {
            "static": {f"b{n}": functools.partial(static[n].run, inputs[n]) for n in sizes},
            "dynamic": {f"b{n}": functools.partial(self._dynamic.run, inputs[n]) for n in sizes}}
        # 30 calls of one row and 5 full batches per round (about 0.4 s for a ResNet-18 at 32x32): with 10 and 2 a
        # 4 % difference flipped between loads. Each size is judged alone: an FP32 ResNet-18 in bf16 ran one row 14 %
        # faster static and full batches 4 % slower, and one rule for both threw the batch-1 gain away.
        times = tuning.race(runs, calls={f"b{n}": (30 if n == 1 else 5) for n in sizes}, settle_s=0.02)
        fixed, dynamic = times["static"], times["dynamic"]
        kept = tuple(n for n in sizes if fixed[f"b{n}"] < dynamic[f"b{n}"])
        listing = ", ".join(f"batch {n} {fixed[f'b{n}'] * 1e3:.2f} vs {dynamic[f'b{n}'] * 1e3:.2f} ms" for n in sizes)
        why = (f"static shapes for batch {', '.join(map(str, kept))}" if kept else "no static shapes") + \
              f": {listing} (static vs dynamic)"
        if sha:
            tuning.remember(key, {"static_sizes": list(kept), "why": why})
        log.info("openvino %s", why)
        return kept, f"measured: {why}"

    def _run(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return self._static.get(x.shape[0], self._dynamic).run(x, out)

    def _infer_impl(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        rows = x.shape[0]
        if rows <= self.max_chunk:
            return self._run(x, out)
        if out is None:
            out = np.empty((rows, *self.output_row_shape), dtype=self.output_dtype)
        for start, stop in uniform_chunks(rows, self.max_chunk):
            self._run(x[start:stop], out[start:stop])
        return out

    def _close_impl(self) -> None:
        for compiled in (self._dynamic, *self._static.values()):
            compiled.free()
        self._static = {}
        self._core = None
