"""FP16 overflow check: an FP16 build whose logits go non-finite or drift far from FP32 fails, naming the nodes.

The accuracy guard compares top-1 only; an FP16 model can keep its top-1 on easy images while some
activation overflows FP16 (65504) on others, or lose it with no clue where. This check looks at
the logits themselves and, when they are wrong, runs the FP32 and the FP16 models side by side
with every intermediate tensor exposed, so the error names the first node whose FP16 output
departs from FP32: the node to keep in FP32 (ModelOpt AutoCast ``nodes_to_exclude``).

AutoCast keeps the FP32 model's node and tensor names, so tensors are matched by name; ONNX Runtime
runs both on the CPU, as the accuracy guard does. No torch here.

What ONNX Runtime's CPU provider can show: it has no FP16 kernels for most ops on x86, so it runs each
FP16 region in float32 and drops the Cast pairs between its nodes (even AutoCast's explicit Casts).
An *activation* above 65504 therefore does not overflow in its logits, although TensorRT, which stores
it in FP16, gets Inf; the logits do show FP16 weights and constants (a Constant AutoCast turned into
Inf gives NaN logits) and rounding. A tensor exposed as a graph output *is* stored in FP16, so the
offender scan below sees activation overflows too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer.errors import AccuracyError, DataError, ValidationError

log = logging.getLogger(__name__)

FP16_MAX_RELATIVE_LOGIT_ERROR = 0.05
"""Largest allowed max |FP16 - FP32 logit| over the eval images, as a fraction of the FP32 logits' range
(max - min over all images and classes): "large" means 5% of that range. The range, not each logit,
because logits near zero have no meaningful relative error, and a fraction of the range is what it
takes to reorder classes. Measured on the tests' briefly trained ResNet-18 (tests/trained.py; 846
CIFAR-10 eval images, AutoCast given the 512-image calibration set): max |logit diff| 0.045 on a
logit range of 366, i.e. 0.012% - the limit is ~400 times that; a constant or weight lost to FP16
lands far above it."""

FP16_NODE_MAX_RELATIVE_ERROR = 0.1
"""A node output counts as offending when max |FP16 - FP32| exceeds this fraction of its FP32 max |value|.
Measured on the same ResNet-18 (64 eval images, every tensor stored in FP16): at most 0.07% on any of
its 49 node outputs, so 10% is ~140 times a healthy error, and an error that changes what the next
layer computes."""

FP16_HINT = ("keep those nodes in FP32: rebuild with --fp16-exclude NODE[,NODE] (ModelOpt AutoCast "
             "nodes_to_exclude), or build int8/fp32")

OFFENDER_BATCH = 8
"""Images per ONNX Runtime run while comparing intermediates: every tensor of the graph comes back at
once (ResNet-18 at 224x224 is ~30 MB of activations per image), so the batch stays small."""


# -- logits -----------------------------------------------------------------------------------

def fp16_output_problem(result: dict[str, Any], reference_logits: np.ndarray) -> str | None:
    """A short reason why the FP16 logits are wrong, or None when they are healthy.

    ``result`` is :func:`trtinfer.builders.logits.compare`'s dict (``finite``, ``max_abs_diff``);
    ``reference_logits`` are the FP32 logits it compared against (their range scales the error).
    """
    if not result["finite"] or not math.isfinite(float(result["max_abs_diff"])):
        return "NaN or Inf logits"
    ref = np.asarray(reference_logits, np.float32)
    spread = float(ref.max() - ref.min()) if ref.size else 0.0
    diff = float(result["max_abs_diff"])
    relative = diff / max(spread, 1e-6)
    if relative <= FP16_MAX_RELATIVE_LOGIT_ERROR:
        return None
    return (f"max |logit diff| {diff:.3g} is {100 * relative:.3g}% of the FP32 logit range "
            f"(limit {100 * FP16_MAX_RELATIVE_LOGIT_ERROR:g}%)")


# -- intermediate tensors ---------------------------------------------------------------------

def find_fp16_offenders(fp32_onnx: str | Path, fp16_onnx: str | Path, x: np.ndarray, limit: int = 5,
                        rows: int = 64) -> list[dict[str, Any]]:
    """The first ``limit`` nodes, in graph order, whose FP16 output departs from FP32 on ``x[:rows]``.

    Offending: the FP16 tensor has NaN/Inf where the FP32 one is finite, or its max abs error exceeds
    ``FP16_NODE_MAX_RELATIVE_ERROR`` of the FP32 tensor's max abs value. Errors propagate, so the
    first offender in graph (topological) order is the root cause and the later ones mostly inherit
    its error; they are listed to show how far it reaches. Each entry: ``node``, ``op_type`` (of the
    FP32 node producing the tensor), ``output`` (tensor name), ``non_finite`` (count),
    ``relative_error`` (over the elements finite in both) and ``fp32_absmax`` - all JSON-safe.

    Both models are loaded into memory and get their extra outputs there; the files are only read.
    """
    import onnx

    x = np.asarray(x)
    if x.ndim < 1 or len(x) == 0 or rows < 1:
        raise DataError("the FP16 check needs at least one image", hint="pass labeled test images with --eval-data")
    x = np.ascontiguousarray(x[:rows], np.float32)
    fp32 = onnx.load(str(fp32_onnx))
    fp16 = onnx.load(str(fp16_onnx))
    fp32_types, fp16_types = _elem_types(fp32), _elem_types(fp16)
    produced_fp16 = {out for node in fp16.graph.node for out in node.output if out}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
    producers: dict[str, Any] = {}  # tensor -> FP32 node, in graph order
    for node in fp32.graph.node:
        for out in node.output:
            if out and out in produced_fp16 and fp32_types.get(out, onnx.TensorProto.FLOAT) in floats:
                producers[out] = node
    tensors = list(producers)
    _expose(fp32, tensors, fp32_types)
    _expose(fp16, tensors, fp16_types)
    stats = {name: _Stats(constant=not any(producers[name].input)) for name in tensors}
    for a, b in zip(_run(fp32, tensors, x, "FP32"), _run(fp16, tensors, x, "FP16")):
        for name in tensors:
            stats[name].add(a[name], b[name])
    offenders = []
    for name in tensors:
        entry = stats[name].offence()
        if entry is not None:
            node = producers[name]
            offenders.append({"node": node.name, "op_type": node.op_type, "output": name, **entry})
            if len(offenders) >= limit:
                break
    return offenders[:max(limit, 0)]


class _Stats:
    """Running comparison of one tensor over the batches: non-finite count, max abs error, FP32 max abs."""

    def __init__(self, constant: bool = False) -> None:
        self.constant = constant  # a Constant's value is the same in every batch: count it once
        self.batches = 0
        self.non_finite = 0
        self.max_diff = 0.0
        self.absmax = 0.0
        self.mismatched = False

    def add(self, fp32: np.ndarray, fp16: np.ndarray) -> None:
        self.batches += 1
        if self.constant and self.batches > 1:
            return
        a, b = np.asarray(fp32, np.float32), np.asarray(fp16, np.float32)
        if a.shape != b.shape:  # not the same quantity after all; nothing to say about it
            self.mismatched = True
            return
        a_ok, b_ok = np.isfinite(a), np.isfinite(b)
        self.non_finite += int(np.count_nonzero(a_ok & ~b_ok))
        both = a_ok & b_ok
        if both.any():
            self.max_diff = max(self.max_diff, float(np.abs(a[both] - b[both]).max()))
        if a_ok.any():
            self.absmax = max(self.absmax, float(np.abs(a[a_ok]).max()))

    def offence(self) -> dict[str, Any] | None:
        if self.mismatched:
            return None
        relative = self.max_diff / max(self.absmax, 1e-6)
        if self.non_finite == 0 and relative <= FP16_NODE_MAX_RELATIVE_ERROR:
            return None
        return {"non_finite": self.non_finite, "relative_error": round(relative, 4),
                "fp32_absmax": float(f"{self.absmax:.6g}")}


def _elem_types(model) -> dict[str, int]:
    """Tensor name -> ONNX element type, from shape inference (FP16 intermediates are float16)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # inference fails on some custom ops; the types then come from ORT
        log.debug("shape inference failed: %s", exc)
        inferred = model
    graph = inferred.graph
    return {vi.name: vi.type.tensor_type.elem_type for vi in [*graph.input, *graph.output, *graph.value_info]
            if vi.type.tensor_type.elem_type}


def _expose(model, tensors: list[str], types: dict[str, int]) -> None:
    """Make ``tensors`` graph outputs of the in-memory ``model``, typed as inferred.

    A tensor whose type inference did not find gets an untyped output; ONNX Runtime types it from its
    producer.
    """
    import onnx
    from onnx import helper

    present = {out.name for out in model.graph.output}
    for name in tensors:
        if name in present:
            continue
        if name in types:
            model.graph.output.append(helper.make_tensor_value_info(name, types[name], None))
        else:
            model.graph.output.append(onnx.ValueInfoProto(name=name))


def _run(model, tensors: list[str], x: np.ndarray, what: str) -> Iterator[dict[str, np.ndarray]]:
    """Yield {tensor: array} per batch of ``x`` (a static batch is filled up with repeated rows)."""
    from trtinfer.runtime.backends.onnxruntime import loader

    loader.import_onnxruntime("the FP16 check runs ONNX Runtime", hint="pip install 'trtinfer[build]'")
    try:
        session = loader.session(model.SerializeToString())
    except Exception as exc:  # ORT raises its own exception types
        raise ValidationError(f"ONNX Runtime cannot load the {what} model with its intermediate tensors exposed: "
                              f"{exc}", hint="build fp32 or int8 meanwhile, and report this with both models") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValidationError(f"the {what} model has {len(inputs)} inputs; "
                              "the FP16 check runs single-input classifiers")
    dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
    static = inputs[0].shape[0] if isinstance(inputs[0].shape[0], int) and inputs[0].shape[0] > 0 else None
    batch = static or OFFENDER_BATCH
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        if static and len(chunk) < static:  # repeated rows change no maximum and no "any non-finite"
            chunk = np.resize(chunk, (static, *chunk.shape[1:]))
        outputs = session.run(tensors, {inputs[0].name: chunk.astype(dtype)})
        yield dict(zip(tensors, outputs))


# -- the check --------------------------------------------------------------------------------

def check_fp16(fp32_onnx: str | Path, fp16_onnx: str | Path, x: np.ndarray, result: dict[str, Any],
               reference_logits: np.ndarray) -> None:
    """Raise AccuracyError naming the first offending nodes when FP16 overflows or the logits are far off.

    ``result`` and ``reference_logits`` are the accuracy guard's comparison on the eval images ``x``.
    The node scan runs on every FP16 build (0.2 s for 64 images of a ResNet-18 at 32x32): ONNX
    Runtime's CPU provider computes FP16 nodes in float32 and drops the Casts between them, so an
    activation that overflows FP16 leaves the logits finite here, while TensorRT, which stores that
    tensor in FP16, would produce Inf. A node output that is stored non-finite in FP16 fails the build.
    """
    reason = fp16_output_problem(result, reference_logits)
    offenders = find_fp16_offenders(fp32_onnx, fp16_onnx, x)
    overflowing = [o for o in offenders if o["non_finite"]]
    if reason is None and not overflowing:
        return
    log.info("FP16 offenders: %s", offenders)
    if reason is None:
        what = ("FP16 activations overflow on the eval images (finite logits here only because ONNX Runtime's "
                "CPU provider computes FP16 in float32; TensorRT would not)")
        offenders = overflowing
    elif reason == "NaN or Inf logits":
        what = "FP16 logits go non-finite on the eval images"
    else:
        what = f"FP16 logits drift from FP32 on the eval images: {reason}"
    if offenders:
        named = ", ".join(f"{o['node']} ({o['op_type']}, {_symptom(o)})" for o in offenders)
        message = f"{what}; first offending nodes: {named} (the first is the root cause, later ones inherit it)"
    else:
        message = (f"{what}; no single node output departs from FP32 by more than "
                   f"{FP16_NODE_MAX_RELATIVE_ERROR:.0%} of its FP32 max |value|: the error builds up across the model")
    raise AccuracyError(message, hint=FP16_HINT)


def _symptom(offender: dict[str, Any]) -> str:
    if offender["non_finite"]:
        count = offender["non_finite"]
        return f"{count} NaN/Inf value{'s' if count > 1 else ''}"
    return f"error {100 * offender['relative_error']:.3g}% of its FP32 max |value| {offender['fp32_absmax']:.3g}"
