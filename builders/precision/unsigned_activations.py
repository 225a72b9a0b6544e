"""Activations quantized as uint8 wherever NNCF wrote a signed int8 with a zero point: exact, and what
OpenVINO's CPU plugin runs in INT8.

NNCF's ``mixed`` preset (asymmetric activations) quantizes tensors that can be negative (the input
image, the convolution outputs that feed a residual Add) to **int8 with a non-zero zero point**.
OpenVINO 2026.4 has no INT8 convolution for a signed input with a zero point, so it runs the
consumer in float: measured on an AMX Xeon, the stem convolution of a standard-stem ResNet-18 took
660 us per batch of 32 in f32 against 183 us in INT8. Worse, on CPUs with native BF16, where OpenVINO's
default inference precision is bf16, ``compile_model`` then fails with "No suitable implementations"
(executor_factory.hpp) for the next INT8 layer, so ``benchmark_app``, OVMS and Triton's OpenVINO backend
refuse the artifact with their defaults.

The same grid in uint8 is exact: ``QuantizeLinear`` computes ``saturate(round(x / s) + z)``, and with
``z' = z + 128`` over [0, 255] every value is the int8 one plus 128, which ``DequantizeLinear`` takes
off again: ``(q + 128 - (z + 128)) * s == (q - z) * s``. ONNX Runtime gives bit-identical outputs.
Activations quantized symmetrically (zero point 0: NNCF's ``performance`` preset) are left signed,
which OpenVINO runs in INT8 as they are. Weights are not touched (their zero points are 0).
"""

from __future__ import annotations

from typing import Any


def make_activations_unsigned(model: Any) -> int:
    """Rewrite, in place, each activation QuantizeLinear whose zero point is a non-zero int8 constant (and
    the DequantizeLinear nodes reading it) to uint8 with the zero point moved by 128; the count rewritten.

    A quantizer is rewritten only when its zero point is an initializer read by nothing but it and the
    DequantizeLinear nodes of its output, so no other node sees the change. Types recorded for its output
    (``value_info``) are dropped; ONNX Runtime and OpenVINO infer them again.
    """
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    rewritten = 0
    stale: set[str] = set()
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or len(q.input) < 3 or q.input[0] in initializers:
            continue  # weights are initializers; an activation quantizer reads a computed tensor
        zero = initializers.get(q.input[2])
        if zero is None:
            continue
        values = numpy_helper.to_array(zero)
        if values.dtype != np.int8 or not values.any():
            continue
        dqs = readers.get(q.output[0], [])
        if not dqs or any(d.op_type != "DequantizeLinear" or d.input[2:3] != [zero.name] for d in dqs):
            continue
        if {id(n) for n in readers[zero.name]} != {id(q), *(id(d) for d in dqs)}:
            continue
        zero.CopyFrom(numpy_helper.from_array((values.astype(np.int16) + 128).astype(np.uint8), zero.name))
        stale.add(q.output[0])
        rewritten += 1
    if stale:
        keep = [vi for vi in graph.value_info if vi.name not in stale]
        del graph.value_info[:]
        graph.value_info.extend(keep)
    return rewritten


__all__ = ["make_activations_unsigned"]
