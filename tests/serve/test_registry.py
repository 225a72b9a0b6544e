"""trtinfer.serve.registry: what the page and ``/v1/models`` say about a served model, read from its manifest's
typed accuracy record."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

from trtinfer.manifest import AccuracyRecord, Manifest
from trtinfer.serve.registry import ServedModel

INT8 = Path(__file__).parent.parent / "data" / "manifest-v3" / "int8.json"


def _served(manifest: Manifest) -> ServedModel:
    model = SimpleNamespace(manifest=manifest, backend="openvino", execution="openvino")
    return ServedModel("r18", model, Path("."))  # type: ignore[arg-type]


def test_facts_show_the_recorded_accuracy():
    manifest = Manifest.from_dict(json.loads(INT8.read_text()))
    facts = _served(manifest).facts()
    assert facts == {"name": "r18", "arch": "resnet18", "precision": "int8", "backend": "openvino",
                     "execution": "openvino", "classes": 10, "input_size": 32, "top1": 0.327423,
                     "top1_reference": 0.321513, "accuracy_checked": True}


def test_an_unchecked_artifact_says_so():
    manifest = Manifest.from_dict(json.loads(INT8.read_text()))
    for accuracy in (AccuracyRecord(), AccuracyRecord(checked=False, reason="no --eval-data given")):
        facts = _served(dataclasses.replace(manifest, accuracy=accuracy)).facts()
        assert (facts["top1"], facts["top1_reference"], facts["accuracy_checked"]) == (None, None, False)
