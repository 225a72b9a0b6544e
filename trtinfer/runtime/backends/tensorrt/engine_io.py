"""What a TensorRT engine takes and gives, read once at load: its one input and one output (names,
dtypes, row shapes), its optimization profiles, and the staging sizes and chunk plan they imply.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ....errors import ArtifactError
from ....manifest import BatchProfile
from ...planning import Chunk, buffer_bytes, graph_chunks, plan_chunks, row_bytes, zero_copy_granule


def _numpy_dtype(trt: Any, engine: Any, name: str) -> np.dtype:
    """numpy's dtype for an I/O tensor (trtinfer engines take and give float32 or float16)."""
    known = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT8: np.int8,
             trt.DataType.INT32: np.int32, trt.DataType.UINT8: np.uint8, trt.DataType.BOOL: np.bool_}
    found = known.get(engine.get_tensor_dtype(name))
    if found is None:
        raise ArtifactError(f"engine tensor {name!r} has type {engine.get_tensor_dtype(name)}, which has no numpy "
                            "equivalent", hint="rebuild the engine with float32 or float16 inputs and outputs")
    return np.dtype(found)


class EngineIO:
    """Names, dtypes, shapes, profiles and staging sizes read from the engine."""

    def __init__(self, trt: Any, engine: Any, manifest: Any, limit: int | None) -> None:
        count = engine.num_io_tensors
        inputs = [engine.get_tensor_name(i) for i in range(count)
                  if engine.get_tensor_mode(engine.get_tensor_name(i)) == trt.TensorIOMode.INPUT]
        outputs = [engine.get_tensor_name(i) for i in range(count)
                   if engine.get_tensor_mode(engine.get_tensor_name(i)) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            # TensorRT needs an address for every output before execute_async_v3; an engine with
            # outputs nobody reads is not one trtinfer built, so it is refused rather than half-bound.
            raise ArtifactError(f"the engine has inputs {inputs} and outputs {outputs}; trtinfer runs classifiers "
                                "with one input and one output (the logits)",
                                hint="rebuild the artifact with `trtinfer build`, or export the model with only "
                                     "its logits as output")
        self.input_name = str(inputs[0])
        self.output_name = str(outputs[0])
        if self.output_name != manifest.output.name:
            raise ArtifactError(f"the engine's output is {self.output_name!r}, the manifest says "
                                f"{manifest.output.name!r}", hint="rebuild the artifact with `trtinfer build`")
        for name in (self.input_name, self.output_name):
            if engine.get_tensor_location(name) != trt.TensorLocation.DEVICE:
                raise ArtifactError(f"engine tensor {name!r} does not live on the GPU", hint="rebuild the engine")
            if engine.get_tensor_format(name) != trt.TensorFormat.LINEAR:
                raise ArtifactError(f"engine tensor {name!r} is not in linear layout", hint="rebuild the engine")
        self.in_dtype = _numpy_dtype(trt, engine, self.input_name)
        self.out_dtype = _numpy_dtype(trt, engine, self.output_name)
        in_shape = tuple(engine.get_tensor_shape(self.input_name))
        out_shape = tuple(engine.get_tensor_shape(self.output_name))
        self.row_shape = tuple(int(d) for d in in_shape[1:])
        self.out_row_shape = tuple(int(d) for d in out_shape[1:])
        ranges = []
        for p in range(engine.num_optimization_profiles):
            low, opt, high = (tuple(s) for s in engine.get_tensor_profile_shape(self.input_name, p))
            if low[1:] != self.row_shape or high[1:] != self.row_shape:
                raise ArtifactError(f"profile {p} varies more than the batch dimension ({low} .. {high})",
                                    hint="rebuild the engine with only the batch dimension dynamic")
            ranges.append((int(low[0]), int(opt[0]), int(high[0])))
        if not ranges:  # a static engine: its one shape is its only profile
            ranges = [(int(in_shape[0]),) * 3]
        try:
            self.profiles = [BatchProfile(*r) for r in ranges]
        except ValueError as exc:
            raise ArtifactError(f"the engine's optimization profiles are invalid: {exc}",
                                hint="rebuild the engine with `trtinfer build --from-onnx DIR`") from None
        self.max_rows = max(p.max for p in self.profiles)
        if limit is not None:
            self.max_rows = min(self.max_rows, max(limit, min(p.min for p in self.profiles)))
        self.in_row_bytes = row_bytes(self.row_shape, self.in_dtype.itemsize)
        self.out_row_bytes = row_bytes(self.out_row_shape, self.out_dtype.itemsize)
        self.in_bytes = buffer_bytes(self.max_rows, self.row_shape, self.in_dtype.itemsize)
        self.out_bytes = buffer_bytes(self.max_rows, self.out_row_shape, self.out_dtype.itemsize)
        # Chunks cut at multiples of this many rows start 256-byte aligned in both tensors.
        self.granule = zero_copy_granule(self.in_row_bytes, self.out_row_bytes)

    def plan(self, rows: int, graphs: bool) -> list[Chunk]:
        chunks = plan_chunks(rows, self.profiles, limit=self.max_rows, granule=self.granule)
        return graph_chunks(chunks, self.profiles, self.max_rows) if graphs else chunks
