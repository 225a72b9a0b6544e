"""Real artifacts for the export tests: the session's briefly trained CIFAR ResNet as FP32, FP16
(ModelOpt AutoCast) and INT8 (ModelOpt Q/DQ) ONNX, each wrapped as an artifact directory with its
manifest. Modules using them declare ``pytest_plugins = ["conftest_trained"]`` (pytest takes plugins
only from the top-level conftest or from test modules)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from trtinfer.manifest import ONNX_NAME, Manifest, TensorSpec


_ONNX_DTYPES = {1: "float32", 10: "float16"}


def wrap_onnx(onnx_path: Path, directory: Path, name: str, precision: str, trained) -> Path:
    """``onnx_path`` copied into ``directory`` with a manifest, as ``trtinfer build`` lays one out."""
    import onnx

    directory.mkdir(parents=True)
    shutil.copyfile(onnx_path, directory / ONNX_NAME)
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    dtypes = [_ONNX_DTYPES[t.type.tensor_type.elem_type] for t in (graph.input[0], graph.output[0])]
    manifest = Manifest(name=name, arch=trained.arch, num_classes=trained.num_classes,
                        labels=list(trained.class_names), precision=precision,
                        input=TensorSpec(graph.input[0].name, [-1, 3, trained.input_size, trained.input_size], dtypes[0]),
                        output=TensorSpec(graph.output[0].name, [-1, trained.num_classes], dtypes[1]),
                        preprocess=trained.spec, trtinfer_version="test")
    manifest.record_file(directory, ONNX_NAME)
    manifest.write(directory)
    return directory


@pytest.fixture(scope="session")
def artifacts(trained_model, fp16_model, int8_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-artifacts")
    onnx = {"fp32": trained_model.onnx_path, "fp16": fp16_model.path, "int8": int8_model.path}
    return {p: wrap_onnx(path, root / f"resnet-{p}", f"resnet-{p}", p, trained_model) for p, path in onnx.items()}
