"""The manifest's typed section records (issue 29): each writes exactly the JSON the build wrote before
they existed, and each field is checked on reading, with a one-line error naming it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from trtinfer.errors import ArtifactError
from trtinfer.manifest import (AccuracyRecord, CalibrationRecord, ConversionRecord, ExecutionRecord, FileRecord,
                               Int8ChoiceRecord, Manifest, PreprocessSpec, SourceRecord, TensorSpec, VariantRecord,
                               read_record)

DATA = Path(__file__).parent / "data"
V3 = DATA / "manifest-v3"


def _written(manifest: Manifest) -> str:
    return json.dumps(manifest.to_dict(), indent=2, allow_nan=False) + "\n"


@pytest.mark.parametrize("name", ["fp32.json", "int8.json"])
def test_a_built_manifest_reads_and_writes_back_byte_for_byte(name):
    text = (V3 / name).read_text()
    m = Manifest.from_dict(json.loads(text))
    assert _written(m) == text
    assert isinstance(m.accuracy, AccuracyRecord) and isinstance(m.source, SourceRecord)
    assert m.accuracy.checked is True and isinstance(m.accuracy.top1, float)
    assert m.source.checkpoint is not None and m.source.checkpoint_sha256 == m.source.checkpoint.sha256
    assert m.variant.cifar_stem is True and m.validation.random is not None and m.validation.random.passed
    assert all(isinstance(r, ExecutionRecord) and r.passed for r in (m.accuracy.executions or {}).values())
    assert all(isinstance(f, FileRecord) for f in m.files.values())


def test_the_int8_sections_are_typed_to_the_bottom():
    m = Manifest.from_dict(json.loads((V3 / "int8.json").read_text()))
    calib, conv = m.calibration, m.conversion
    assert isinstance(calib.transform, PreprocessSpec) and calib.transform == m.preprocess
    assert calib.count == 256 and calib.per_class is not None and sum(calib.per_class.values()) == 256
    choice = calib.choice
    assert isinstance(choice, Int8ChoiceRecord) and choice.ran and choice.method == "performance"
    assert choice.slice is not None and choice.slice.rows == 2000
    assert choice.methods is not None and [t.method for t in choice.methods] == ["performance", "mixed", "mean_minmax"]
    assert choice.fallback is not None and choice.fallback.ran is False and "within" in (choice.fallback.reason or "")
    assert isinstance(conv, ConversionRecord) and conv.tool == "nncf" and conv.quantize_linear == 30
    assert conv.io_types is not None and conv.io_types.inputs == {"input": "float32"}
    assert calib.diagnostics is not None and "coverage" in calib.diagnostics


@pytest.mark.parametrize("fixture", ["artifact-v1", "artifact-v2"])
def test_older_manifests_keep_every_section_but_the_engine(fixture):
    raw = json.loads((DATA / fixture / "manifest.json").read_text())
    out = Manifest.from_dict(raw).to_dict()
    for key in ("source", "files", "versions", "validation", "accuracy", "calibration", "conversion", "variant"):
        assert json.dumps(out[key]) == json.dumps(raw[key]), key


def _fp16_conversion() -> dict:
    """ModelOpt AutoCast's facts in the order it writes them (builders/precision/modelopt.py), with the wall time."""
    return {"tool": "modelopt.onnx.autocast", "version": "0.47.0", "precision": "fp16", "keep_io_types": True,
            "data_max": 512.0, "reference_data": "64 calibration images", "nodes_fp16": 40, "nodes_fp32": 2,
            "cast_nodes": 4, "fp32_op_types": {"Softmax": 2}, "opset_in": 17, "opset_out": 17,
            "io_types": {"inputs": {"input": "float32"}, "outputs": {"logits": "float32"}},
            "nodes_excluded": [], "op_types_excluded": [], "notes": ["a note"], "seconds": 1.5}


def _fallback_choice() -> dict:
    """An INT8 choice whose fallback ran (builders/precision/int8_choice.py), ModelOpt facts."""
    return {
        "ran": True, "judged_on": "onnxruntime",
        "slice": {"source": "/d", "split": "train", "rows": 500, "held_out_of_calibration": True, "fp32_top1": 0.9},
        "methods": [{"method": "entropy", "excluded": 0, "top1_agreement": 0.97, "top1": 0.88,
                     "top1_drop_points": 2.0, "drop_se_points": 0.5, "logit_mse": 0.01, "seconds": 3.2}],
        "method": "entropy", "why": "highest top-1 agreement with FP32 on the slice (no method was within the allowance)",
        "fallback": {"ran": True, "reason": "too far", "ranked_on": "256 slice rows", "quantized_layers": 20,
                     "budget": 5, "ranking": [{"node": "/fc/Gemm", "mse_recovered": 0.004, "compute_share": 0.001}],
                     "steps": [{"excluded": 1, "top1_drop_points": 0.4, "top1_agreement": 0.985}],
                     "excluded_nodes": ["/fc/Gemm"], "float_compute_share": 0.001, "drop_before_points": 2.0,
                     "drop_after_points": 0.4, "drop_after_se_points": 0.3, "passed": True},
    }


def test_the_other_writers_shapes_round_trip_exactly():
    base = json.loads((V3 / "int8.json").read_text())
    variants = []
    fp16 = copy.deepcopy(base)
    fp16.update(precision="fp16", conversion=_fp16_conversion(), calibration={})
    variants.append(fp16)
    modelopt = copy.deepcopy(base)
    modelopt["conversion"] = json.loads((DATA / "artifact-v2" / "manifest.json").read_text())["conversion"]
    calibration = {k: v for k, v in modelopt["calibration"].items() if k not in ("method", "quantizer", "choice",
                                                                                 "diagnostics")}
    modelopt["calibration"] = {**calibration, "file": "/data/calib.npz",  # a saved set's summary ends with its file
                               "method": "entropy", "quantizer": "modelopt.onnx.quantization",
                               "choice": _fallback_choice()}
    variants.append(modelopt)
    unchecked = copy.deepcopy(base)
    unchecked["accuracy"] = {"checked": False, "reason": "no --eval-data given: pass labelled test images"}
    unchecked["source"]["eval_data"] = None
    unchecked["validation"].pop("eval")
    unchecked["calibration"]["choice"] = {"ran": False, "method": "performance", "reason": "no labelled rows"}
    variants.append(unchecked)
    skipped = copy.deepcopy(base)
    skipped["accuracy"]["executions"] = {"openvino-bf16": {"skipped": "this CPU has no BF16"}}
    variants.append(skipped)
    for data in variants:
        text = json.dumps(data, indent=2) + "\n"
        assert _written(Manifest.from_dict(json.loads(text))) == text


def test_a_manifest_without_sections_writes_them_empty():
    m = Manifest(name="m", arch="resnet18", num_classes=2, labels=["a", "b"], precision="fp32",
                 input=TensorSpec("input", [-1, 3, 32, 32]), output=TensorSpec("logits", [-1, 2]),
                 preprocess=PreprocessSpec(32, 32, [0.5] * 3, [0.5] * 3))
    data = m.to_dict()
    for key in ("source", "files", "versions", "validation", "accuracy", "calibration", "conversion", "variant"):
        assert data[key] == {}, key
    back = Manifest.from_dict(json.loads(json.dumps(data)))
    assert back.accuracy == AccuracyRecord() and back.variant == VariantRecord() and back.to_dict() == data


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["accuracy"].__setitem__("top1", "0.9"), "field 'accuracy.top1' must be a finite number, not str"),
    (lambda d: d["accuracy"].__setitem__("checked", 1), "field 'accuracy.checked' must be true or false, not int"),
    (lambda d: d["accuracy"]["executions"]["openvino"].__setitem__("passed", "yes"),
     "field 'accuracy.executions.openvino.passed' must be true or false"),
    (lambda d: d["accuracy"]["eval"].__setitem__("warnings", "none"), "field 'accuracy.eval.warnings' must be a list"),
    (lambda d: d["source"].__setitem__("checkpoint", {"file": "m.pth"}), "field 'source.checkpoint.path' is missing"),
    (lambda d: d["source"].__setitem__("eval_data", 3), "field 'source.eval_data' must be a string, not int"),
    (lambda d: d["validation"]["random"].__setitem__("samples", -1),
     "field 'validation.random.samples' must be an integer in 0.."),
    (lambda d: d["calibration"]["choice"]["methods"][1].__setitem__("top1", "high"),
     r"field 'calibration.choice.methods\[1\].top1' must be a finite number, not str"),
    (lambda d: d["calibration"]["choice"]["fallback"].pop("ran"), "field 'calibration.choice.fallback.ran' is missing"),
    (lambda d: d["calibration"]["transform"].__setitem__("std", [1, 0, 1]),
     r"field 'calibration.transform.std\[1\]' must be positive"),
    (lambda d: d["calibration"]["per_class"].__setitem__("cat", 2.5), "field 'calibration.per_class.cat' must be an integer"),
    (lambda d: d["calibration"].__setitem__("diagnostics", []), "field 'calibration.diagnostics' must be an object"),
    (lambda d: d["conversion"].__setitem__("nodes_excluded", "fc"), "field 'conversion.nodes_excluded' must be a list"),
    (lambda d: d["conversion"]["io_types"].__setitem__("inputs", {"input": 1}),
     "field 'conversion.io_types.inputs.input' must be a string"),
    (lambda d: d["variant"].__setitem__("cifar_stem", "true"), "field 'variant.cifar_stem' must be true or false"),
    (lambda d: d["versions"].__setitem__("torch", 2), "field 'versions.torch' must be a string"),
    (lambda d: d.__setitem__("accuracy", [1]), "field 'accuracy' must be an object, not list"),
])
def test_each_section_field_is_checked_with_its_name(edit, message):
    data = json.loads((V3 / "int8.json").read_text())
    edit(data)
    with pytest.raises(ArtifactError, match=message) as caught:
        Manifest.from_dict(data, where="m/manifest.json")
    assert "\n" not in caught.value.message and caught.value.message.startswith("m/manifest.json: field '")


def test_engine_timing_cache_and_evaluation_are_records(tmp_path):
    data = json.loads((DATA / "artifact-v2" / "manifest.json").read_text())
    data["schema_version"] = 3
    engine = Manifest.from_dict(data).engine
    assert engine is not None and engine.timing_cache is not None and engine.timing_cache.reused is False
    assert engine.evaluation.checked is True and engine.evaluation.top1 == 0.5402
    data["engine"]["timing_cache"] = {"path": "/c", "reused": "no"}
    with pytest.raises(ArtifactError, match="field 'engine.timing_cache.reused' must be true or false"):
        Manifest.from_dict(data)
    data["engine"]["timing_cache"] = {}
    assert Manifest.from_dict(data).engine.to_dict()["timing_cache"] == {}


def test_a_stage_summary_reads_into_its_record():
    summary = json.loads((V3 / "int8.json").read_text())["calibration"]
    record = read_record(CalibrationRecord, summary)
    assert record.to_dict() == summary
    with pytest.raises(ArtifactError, match="field 'calibration.count' must be an integer"):
        read_record(CalibrationRecord, {**summary, "count": "256"}, name="calibration")
