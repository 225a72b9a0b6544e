"""Tiny real artifacts for the engine-stage tests, and a snapshot of a directory to prove nothing was written."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trtinfer.hashing import sha256_file
from trtinfer.manifest import Manifest, PreprocessSpec, TensorSpec

NUM_CLASSES = 10


def write_tiny_artifact(directory: Path, precision: str = "fp32", size: int = 8, batch: int | str = -1) -> Path:
    """A real (tiny) artifact: GlobalAveragePool -> Flatten -> Gemm, input [-1, 3, size, size]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((NUM_CLASSES, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(NUM_CLASSES).astype(np.float32), "b")
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"], name="pool"),
             helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], name="fc", transB=1)]
    dim0 = "batch" if batch == -1 else batch
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [dim0, 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dim0, NUM_CLASSES])],
                              initializer=[weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(directory / "model.onnx"))
    manifest = Manifest(name=directory.name, arch="tiny", num_classes=NUM_CLASSES,
                        labels=[f"c{i}" for i in range(NUM_CLASSES)], precision=precision,
                        input=TensorSpec("input", [-1 if batch == -1 else int(batch), 3, size, size]),
                        output=TensorSpec("logits", [-1, NUM_CLASSES]),
                        preprocess=PreprocessSpec(input_size=size, resize=size, mean=[0.5] * 3, std=[0.5] * 3))
    manifest.record_file(directory, "model.onnx")
    manifest.write(directory)
    return directory


def snapshot(directory: Path) -> dict[str, str]:
    """Every file of the artifact and of its staging siblings (.NAME.tmp-*, .NAME.old-*) with its sha256."""
    root = directory.parent
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] in (directory.name,)
            or p.is_file() and p.relative_to(root).parts[0].startswith(f".{directory.name}.")}
