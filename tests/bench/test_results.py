"""results.json / results.csv and ``--compare`` (benchmarks/results.py)."""

from __future__ import annotations

import csv
import json
import os

import pytest

from trtinfer.benchmarks.results import SCHEMA, SCHEMA_VERSION, BenchResults, CaseResult, compare
from trtinfer.errors import DataError


def _results(rate: float = 100.0, spread: float = 0.02, cpu: str = "CPU A") -> BenchResults:
    cases = [
        CaseResult("torch-eager", "fp32", "cpu", 32, "offline", kind="baseline", throughput=rate / 2,
                   latency_ms={"p50": 1.0, "p99": 2.0}, spread=spread),
        CaseResult("openvino", "int8", "cpu", 32, "offline", throughput=rate, latency_ms={"p50": 1.0, "p99": float("nan")},
                   spread=spread, accuracy=0.5, options={"threads": 2}),
        CaseResult("auto", "int8", "cpu", 1, "server", concurrency=64, throughput=rate * 0.9, spread=spread,
                   options={"chosen": "openvino"}),
        CaseResult("tensorrt", "fp32", "cuda", None, "offline", status="skipped", reason="no GPU"),
    ]
    return BenchResults(environment={"cpu": {"model": cpu}}, settings={"latency_bound_ms": 15.0}, cases=cases)


def test_json_is_versioned_strict_and_reads_back(tmp_path):
    path = _results().write_json(tmp_path / "results.json")
    text = path.read_text()
    assert "NaN" not in text  # strict JSON: non-finite values become null
    data = json.loads(text)
    assert data["schema"] == SCHEMA and data["schema_version"] == SCHEMA_VERSION
    assert set(data) >= {"environment", "settings", "cases", "summary"}
    record = data["cases"][1]
    for key in ("backend", "precision", "device", "batch_size", "latency_ms", "throughput", "speedup_vs_eager",
                "accuracy", "status", "reason"):
        assert key in record
    assert record["latency_ms"]["p99"] is None
    back = BenchResults.read(path)
    assert [c.key for c in back.cases] == [c.key for c in _results().cases]


def test_csv_has_one_row_per_case(tmp_path):
    path = _results().write_csv(tmp_path / "results.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 4
    assert rows[1]["backend"] == "openvino" and rows[1]["latency_p50_ms"] == "1.0" and rows[1]["threads"] == "2"
    assert rows[2]["chosen"] == "openvino" and rows[2]["concurrency"] == "64"
    assert rows[3]["status"] == "skipped" and rows[3]["reason"] == "no GPU"


def test_compare_flags_only_changes_beyond_noise():
    changes, notes = compare(_results(100.0), _results(95.0))
    assert {c.verdict for c in changes} == {"within noise"}
    changes, _ = compare(_results(100.0), _results(60.0))
    assert {c.verdict for c in changes} == {"regression"}
    assert all(c.ratio == pytest.approx(0.6) for c in changes)
    changes, _ = compare(_results(100.0), _results(200.0))
    assert {c.verdict for c in changes} == {"improvement"}
    # a noisy pair (windows 30 % apart) gets a wider allowance: 0.6x is then within it
    changes, _ = compare(_results(100.0, spread=0.3), _results(60.0, spread=0.3))
    assert {c.verdict for c in changes} == {"within noise"}


def test_compare_notes_unmatched_cases_and_other_machines():
    old, new = _results(), _results(cpu="CPU B")
    new.cases.append(CaseResult("onnxruntime", "fp32", "cpu", 8, "offline", throughput=5.0))
    _, notes = compare(old, new)
    assert any("only in the new run: onnxruntime" in n for n in notes)
    assert any("different CPUs" in n for n in notes)


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read"),
    ('{"schema": "other"}', "not a trtinfer bench results file"),
    ('{"schema": "trtinfer-bench", "schema_version": 99, "cases": []}', "schema_version 99"),
    ('{"schema": "trtinfer-bench", "schema_version": 1, "cases": {}}', "not a list"),
    ('[' * 100000 + ']' * 100000, "cannot read"),
])
def test_bad_results_files_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        BenchResults.read(path)
    with pytest.raises(DataError, match="not found"):
        BenchResults.read(tmp_path / "missing.json")


def test_option_defaults_said_once_agree_with_the_library():
    """The CLI's choices are import-free constants (for --help); they must equal what the library knows."""
    from trtinfer import defaults
    from trtinfer.builders.precision import quantizer_for_target  # noqa: F401 -- registers NNCF beside ModelOpt, as every build does
    from trtinfer.builders.precision.tools import tools
    from trtinfer.commands import build_options as o
    from trtinfer.preprocess import NORMALIZATIONS

    assert set(o.CALIB_METHODS) == {m for t in tools("int8") for m in t.methods}
    assert set(defaults.NORMALIZE_PRESETS) == set(NORMALIZATIONS) and defaults.NORMALIZE in NORMALIZATIONS


def test_a_results_path_that_is_a_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "results.json"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="FIFO"):
        BenchResults.read(fifo)
