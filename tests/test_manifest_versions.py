"""The artifact contract across schema versions: a schema-1 artifact (tests/data/artifact-v1, a real
v1 manifest) and a schema-2 artifact with a TensorRT engine section (tests/data/artifact-v2) keep
loading and running; schema 2 requires ``target``; schema 3 makes ``engine`` a typed, complete record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import trtinfer
from trtinfer.errors import ArtifactError
from trtinfer.manifest import SCHEMA_VERSION, BatchProfile, EngineRecord, Manifest
from trtinfer.runtime.backends.tensorrt.loader import check_plan_compatible

V1 = Path(__file__).parent / "data" / "artifact-v1"
V2 = Path(__file__).parent / "data" / "artifact-v2"


def test_schema_1_artifact_loads_and_runs(tmp_path):
    art = tmp_path / "v1"
    shutil.copytree(V1, art)
    m = Manifest.read(art)
    assert m.schema_version == 1 and m.target == "" and m.precision == "int8"
    assert m.accuracy.top1_drop_points is not None and m.accuracy.executions is None
    m.verify_files(art)
    with trtinfer.load(art) as model:  # no recorded executions: every installed CPU execution is a candidate
        x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
        assert model.infer(x).shape == (4, 10)
        assert "bf16" not in model.execution


def test_schema_2_needs_a_target(tmp_path):
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


def test_schema_2_engine_section_reads_into_the_typed_record(tmp_path):
    art = tmp_path / "v2"
    shutil.copytree(V2, art)
    m = Manifest.read(art)
    assert m.schema_version == 2 and m.target == "gpu"
    record = m.engine
    assert isinstance(record, EngineRecord)
    assert record.profiles == [BatchProfile(1, 32, 256)] and record.tensorrt_version == "10.16.1.11"
    assert record.compute_capability == "9.0" and record.layer_precisions["int8"] == 28
    assert record.evaluation.checked is True and record.workspace_mib is None
    m.verify_files(art)
    with pytest.raises(ArtifactError, match="built for TensorRT 10.16.1.11"):  # the runtime's check reads it
        check_plan_compatible(m, "11.4.0.106", "NVIDIA H100 80GB HBM3", "9.0", art)
    check_plan_compatible(m, "10.16.1.11", "NVIDIA H100 80GB HBM3", "9.0", art)
    with trtinfer.load(art) as model:  # no TensorRT here: its ONNX model runs on the CPU
        x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
        assert model.infer(x).shape == (4, 10) and model.backend != "tensorrt"
    # written back, it becomes the current schema with the same record
    m.schema_version = SCHEMA_VERSION
    m.write(art)
    again = Manifest.read(art)
    assert again.schema_version == SCHEMA_VERSION and again.engine == record


def test_schema_3_engine_is_null_or_complete(tmp_path):
    art = tmp_path / "v3"
    shutil.copytree(V2, art)
    data = json.loads((art / "manifest.json").read_text())
    data["schema_version"] = 3
    (art / "manifest.json").write_text(json.dumps(data))
    assert Manifest.read(art).engine.plan_bytes == data["engine"]["plan_bytes"]
    for field_name, broken, message in [
        ("plan_sha256", None, "field 'engine.plan_sha256' is missing"),
        ("profiles", [{"min": 8, "opt": 4, "max": 16}], "engine.profiles.0.' batch profile 8:4:16 needs"),
        ("profiles", [{"min": 1, "opt": 4, "max": 16}, {"min": 8, "opt": 8, "max": 8}], "non-overlapping"),
        ("profiles", "1:32:256", "engine.profiles' must be a list"),
        ("plan", "../model.plan", "engine.plan' is '../model.plan'"),
    ]:
        bad = json.loads(json.dumps(data))
        if broken is None:
            del bad["engine"][field_name]
        else:
            bad["engine"][field_name] = broken
        (art / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(ArtifactError, match=message):
            Manifest.read(art)
    data["engine"] = None
    (art / "manifest.json").write_text(json.dumps(data))
    assert Manifest.read(art).engine is None


def test_schema_4_adds_calibration_qat_and_schema_3_reads_without_it(tmp_path):
    """Schema 4 (issue 31) records quantization-aware fine-tuning; a schema-3 INT8 manifest (a real one,
    tests/data/manifest-v3) reads with no ``qat``, and a schema-4 one carries it through a write."""
    from trtinfer.manifest import QatRecord

    assert SCHEMA_VERSION == 4
    art = tmp_path / "v3"
    shutil.copytree(V2, art)
    v3 = json.loads((Path(__file__).parent / "data" / "manifest-v3" / "int8.json").read_text())
    (art / "manifest.json").write_text(json.dumps({**v3, "files": json.loads(
        (art / "manifest.json").read_text())["files"]}))
    m = Manifest.read(art)
    assert m.schema_version == 3 and m.calibration.qat is None
    data = m.to_dict()
    data["schema_version"] = 4
    data["calibration"]["qat"] = {"ran": True, "kept": True, "epochs": 2, "learning_rate": 0.005,
                                  "drop_before_points": 0.59, "drop_after_points": 0.1}
    (art / "manifest.json").write_text(json.dumps(data))
    again = Manifest.read(art)
    assert again.calibration.qat == QatRecord(ran=True, kept=True, epochs=2, learning_rate=0.005,
                                              drop_before_points=0.59, drop_after_points=0.1)


@pytest.mark.parametrize("version", [0, 5, "2", True, None])
def test_other_versions_are_refused(tmp_path, version):
    art = tmp_path / "v"
    shutil.copytree(V1, art)
    data = json.loads((art / "manifest.json").read_text())
    data["schema_version"] = version
    (art / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="schema_version"):
        Manifest.read(art)
