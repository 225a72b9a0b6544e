"""The manifest is checked, not trusted: a typed reader names every malformed field, file names stay
inside the artifact, sizes are compared before anything is read, and the shapes must match the
model graph the backend loaded. Each case writes a real hostile manifest or file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import trtinfer
from trtinfer.cli import main
from trtinfer.errors import ArtifactError
from trtinfer.manifest import MANIFEST_NAME, ONNX_NAME, Manifest


def _edit(directory: Path, change) -> None:
    path = directory / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _refused(directory: Path, match: str, capsys) -> None:
    with pytest.raises(ArtifactError, match=match):
        trtinfer.load(directory, backend="onnxruntime")
    assert main(["inspect", str(directory), "--verify"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "hint:" in errors[0]


@pytest.mark.parametrize("change, match", [
    (lambda d: d.pop("files"), "model.onnx is not listed in the manifest|lists no files at all"),
    (lambda d: d.__setitem__("files", []), "field 'files' must be an object"),
    (lambda d: d["files"][ONNX_NAME].pop("sha256"), "files.model.onnx.sha256' is missing"),
    (lambda d: d["files"][ONNX_NAME].pop("bytes"), "files.model.onnx.bytes' is missing"),
    (lambda d: d["files"][ONNX_NAME].__setitem__("bytes", "12"), "files.model.onnx.bytes' must be an integer"),
    (lambda d: d.__setitem__("labels", 7), "field 'labels' must be a list"),
    (lambda d: d.__setitem__("labels", d["labels"][:-1]), "has 9 names but num_classes is 10"),
    (lambda d: d.__setitem__("labels", [d["labels"][0]] * 10), "names a class twice: airplane"),
    (lambda d: d["input"].__setitem__("shape", ["-1", "3", "32", "32"]), r"input.shape\[0\]' must be an integer"),
    (lambda d: d["preprocess"].__setitem__("interpolation", "lanczos9"), "interpolation' is 'lanczos9'"),
    (lambda d: d["preprocess"].__setitem__("std", [0.2, 0.0, 0.2]), r"preprocess.std\[1\]' must be positive"),
    (lambda d: d["preprocess"].__setitem__("mean", [0.5, 0.5]), "preprocess.mean' must be a list of 3 numbers"),
    (lambda d: d.__setitem__("precision", "int4"), "'precision' is 'int4'"),
    (lambda d: d.__setitem__("num_classes", True), "'num_classes' must be an integer"),
    (lambda d: d.__setitem__("engine", "plan"), "field 'engine' must be an object"),
    (lambda d: d.pop("preprocess"), "field 'preprocess' is missing"),
])
def test_malformed_fields_are_named(artifact_copy, capsys, change, match):
    _edit(artifact_copy, change)
    _refused(artifact_copy, match, capsys)


def test_non_finite_and_deeply_nested_json_are_refused(artifact_copy, capsys):
    path = artifact_copy / MANIFEST_NAME
    text = path.read_text()
    path.write_text(text.replace('"std": [', '"std": [NaN, ', 1).replace("0.2616", "", 1))
    _refused(artifact_copy, "NaN", capsys)
    path.write_text("[" * 200_000 + "]" * 200_000)
    _refused(artifact_copy, "nested too deeply|not a JSON object", capsys)
    path.write_text("{" + " " * (17 << 20) + "}")
    _refused(artifact_copy, "a manifest is a few kB", capsys)


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/passwd", "sub/model.onnx", "..", "a\\b"])
def test_file_names_never_leave_the_artifact(artifact_copy, tmp_path, capsys, name):
    """A listed name that points elsewhere is refused before anything is hashed or read."""
    outside = artifact_copy.parent / "outside.bin"
    outside.write_bytes(b"secret")
    _edit(artifact_copy, lambda d: d["files"].__setitem__(name, {"sha256": "0" * 64, "bytes": 6}))
    _refused(artifact_copy, "is not a plain file name inside the artifact directory", capsys)


def test_a_huge_replacement_file_is_refused_by_size_before_reading(artifact_copy, monkeypatch, capsys):
    """A 3 GB sparse file in place of model.onnx: refused from its size alone. The stand-ins below
    only record whether our code reads or hashes the file (a check of our order of work)."""
    import trtinfer.manifest.document as manifest_module

    with open(artifact_copy / ONNX_NAME, "r+b") as f:
        f.truncate(3 << 30)
    touched: list[str] = []
    monkeypatch.setattr(manifest_module, "sha256_file", lambda p: touched.append(str(p)) or "0" * 64)
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: touched.append(str(self)) or real_read_bytes(self))
    with pytest.raises(ArtifactError, match="has 3221225472 bytes, the manifest says"):
        trtinfer.load(artifact_copy, backend="onnxruntime")
    assert main(["inspect", str(artifact_copy), "--verify"]) == 1
    assert "truncated or replaced" in capsys.readouterr().err
    assert touched == []


def test_shapes_must_match_the_model_graph(artifact_copy, capsys):
    """A manifest claiming another input size or class count than the ONNX graph has."""
    def bigger(d):
        d["input"]["shape"] = [-1, 3, 64, 64]
        d["preprocess"]["input_size"] = d["preprocess"]["resize"] = 64
    _edit(artifact_copy, bigger)
    for backend in ("onnxruntime", "openvino"):
        with pytest.raises(ArtifactError, match=r"the model's input is \[\?, 3, 32, 32\] but the manifest says"):
            trtinfer.load(artifact_copy, backend=backend)


def test_fewer_classes_than_the_graph_outputs_is_refused(artifact_copy):
    def five(d):
        d["num_classes"] = 5
        d["labels"] = d["labels"][:5]
        d["output"]["shape"] = [-1, 5]
    _edit(artifact_copy, five)
    with pytest.raises(ArtifactError, match=r"the model's output is \[\?, 10\] but the manifest says \[-1, 5\]"):
        trtinfer.load(artifact_copy, backend="onnxruntime")


def test_load_of_something_that_is_not_a_path_is_one_clear_error():
    with pytest.raises(trtinfer.TrtInferError, match="load\\(\\) takes an artifact directory"):
        trtinfer.load(None)
    with pytest.raises(trtinfer.TrtInferError, match="backend=3 must be a string"):
        trtinfer.load("x", backend=3)


def test_manifests_are_written_as_strict_json(artifact_copy):
    manifest = Manifest.read(artifact_copy)
    manifest.preprocess.mean = [float("nan"), 0.0, 0.0]
    with pytest.raises(ValueError):
        manifest.write(artifact_copy)


def test_verify_reports_what_it_checked(artifact_copy, capsys):
    assert main(["inspect", str(artifact_copy), "--verify"]) == 0
    assert "sizes and sha256 match" in capsys.readouterr().out
    os.chmod(artifact_copy, 0o755)
