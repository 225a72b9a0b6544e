"""The artifact contract across schema versions: a schema-1 artifact (tests/data/artifact-v1, a real
v1 manifest) keeps loading and running; schema 2 requires ``target``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import trtinfer
from trtinfer.errors import ArtifactError
from trtinfer.manifest import SCHEMA_VERSION, Manifest

V1 = Path(__file__).parent / "data" / "artifact-v1"


def test_schema_1_artifact_loads_and_runs(tmp_path):
    art = tmp_path / "v1"
    shutil.copytree(V1, art)
    m = Manifest.read(art)
    assert m.schema_version == 1 and m.target == "" and m.precision == "int8"
    assert m.accuracy["top1_drop_points"] is not None and "executions" not in m.accuracy
    m.verify_files(art)
    with trtinfer.load(art) as model:  # no recorded executions: every installed CPU execution is a candidate
        x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
        assert model.infer(x).shape == (4, 10)
        assert "bf16" not in model.execution


def test_schema_2_is_what_the_build_writes_and_needs_a_target(tmp_path):
    assert SCHEMA_VERSION == 2
    art = tmp_path / "v2"
    shutil.copytree(V1, art)
    data = json.loads((art / "manifest.json").read_text())
    data["schema_version"] = 2
    (art / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="field 'target' is missing"):
        Manifest.read(art)
    data["target"] = "tpu"
    (art / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="field 'target' is 'tpu', not one of cpu, gpu"):
        Manifest.read(art)
    data["target"] = "cpu"
    data["accuracy"]["executions"] = ["openvino"]
    (art / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="accuracy.executions"):
        Manifest.read(art)
    data["accuracy"]["executions"] = {"openvino": {"passed": True}}
    (art / "manifest.json").write_text(json.dumps(data))
    assert Manifest.read(art).target == "cpu"


@pytest.mark.parametrize("version", [0, 3, "2", True, None])
def test_other_versions_are_refused(tmp_path, version):
    art = tmp_path / "v"
    shutil.copytree(V1, art)
    data = json.loads((art / "manifest.json").read_text())
    data["schema_version"] = version
    (art / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="schema_version"):
        Manifest.read(art)
