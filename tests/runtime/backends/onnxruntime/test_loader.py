"""backends/onnxruntime/loader.py: the one place ONNX Runtime sessions are made, with one set of options."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from trtinfer.errors import BackendUnavailable
from trtinfer.manifest import ONNX_NAME
from trtinfer.runtime.backends.onnxruntime import loader

from ...helpers import distinct_inputs

ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed")
REPO = Path(__file__).resolve().parents[4]
SPIN = "session.intra_op.allow_spinning"


def test_every_session_gets_the_same_options():
    so = loader.session_options(ort, threads=3, spin=False)
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.log_severity_level == 3
    assert so.get_session_config_entry(SPIN) == "0"
    assert loader.session_options(ort, spin=True).get_session_config_entry(SPIN) == "1"
    plain = loader.session_options(ort)  # threads and spinning left to ONNX Runtime
    assert plain.intra_op_num_threads == ort.SessionOptions().intra_op_num_threads
    assert plain.log_severity_level == 3 and plain.inter_op_num_threads == 1


def test_bytes_and_paths_give_the_same_session(tiny_artifact):
    path = tiny_artifact / ONNX_NAME
    x = distinct_inputs(4)
    results = []
    for source in (path.read_bytes(), path, str(path)):
        session = loader.session(source, threads=1, spin=False)
        assert session.get_providers() == ["CPUExecutionProvider"]
        results.append(session.run(None, {session.get_inputs()[0].name: x})[0])
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_a_missing_onnxruntime_says_who_needs_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # the import raises ImportError
    with pytest.raises(BackendUnavailable, match="ONNX Runtime is not installed") as info:
        loader.session(b"")
    assert "trtinfer[onnxruntime]" in info.value.hint
    with pytest.raises(BackendUnavailable, match="the accuracy check runs ONNX Runtime") as info:
        loader.import_onnxruntime("the accuracy check runs ONNX Runtime", hint="pip install 'trtinfer[build]'")
    assert info.value.hint == "pip install 'trtinfer[build]'"


def test_sessions_are_made_only_here():
    """Our code (runtime, build, calibration, benchmarks) makes ONNX Runtime sessions through this loader
    only. ``exporters/triton_classifier/model.py`` is apart: Triton runs it in its own Python, without trtinfer."""
    found = set()
    for folder in ("trtinfer", "builders", "calibration", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            if re.search(r"\bInferenceSession\(", path.read_text(encoding="utf-8")):
                found.add(path.relative_to(REPO).as_posix())
    assert found == {"trtinfer/runtime/backends/onnxruntime/loader.py"}
