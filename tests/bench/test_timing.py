"""Timing the checked cases and the rows it makes (benchmarks/timing.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trtinfer.benchmarks.measure import Measured, Window
from trtinfer.benchmarks.options import BenchSettings
from trtinfer.benchmarks.plan import Inputs
from trtinfer.benchmarks.timing import case_record, profile_note, time_batches

from .fake_case import FakeCase, engine, images, manifest


def test_a_batch_outside_the_engines_profiles_is_said_plainly():
    m = manifest("fp16", engine((1, 8, 16), (17, 64, 128)))
    assert profile_note(m, 8) is None and profile_note(m, 128) is None
    note = profile_note(m, 256)
    assert note is not None
    assert "batch 256 is outside the engine's profiles (1:8:16, 17:64:128)" in note and "--batch" in note
    m.engine = None
    assert profile_note(m, 4096) is None  # no engine: nothing to say


def _measured(*throughputs: float) -> Measured:
    return Measured([Window(int(t), 1.0, np.full(4, 1.0 / t)) for t in throughputs])


def test_a_row_carries_its_check_and_its_figures():
    check = {"passed": True, "eval_top1": 0.9, "eval_drop_points": 0.25, "eval_agreement": 0.98}
    row = case_record(FakeCase(), 8, check=check, measured=_measured(100, 101, 99), rss=1.5)
    assert (row.scenario, row.status, row.throughput, row.windows) == ("offline", "ok", 100.0, [100, 101, 99])
    assert (row.accuracy, row.accuracy_drop_points, row.top1_agreement) == (0.9, 0.25, 0.98)
    assert row.correctness == check and row.rss_growth_mb == 1.5 and row.latency_ms["p50"] == 10.0
    assert case_record(FakeCase(), 1).scenario == "single-stream"


def test_windows_that_never_agree_make_the_row_unstable_with_the_reason():
    row = case_record(FakeCase(), 8, measured=_measured(100, 200, 300))
    assert row.status == "unstable" and "did not agree within 10%" in row.reason and row.spread == 2.0


def test_each_batch_size_of_the_asked_scenarios_is_timed_and_a_failure_is_a_row():
    settings = BenchSettings(Path("m.pth"), batch_sizes=(1, 4, 8), scenarios=("offline",), seconds=0.01, warmup=1,
                             warmup_seconds=0.0, max_windows=3)
    live = {"a": FakeCase("onnxruntime"), "b": FakeCase("openvino", fail_at=(8,))}
    checks = {"a": {"passed": True}, "b": {"passed": True}}
    said: list[str] = []
    rows = time_batches(settings, live, checks, {"a": 2.0}, Inputs(images(3), "rows"), said.append)
    assert [(r.backend, r.batch_size) for r in rows] == [("onnxruntime", 4), ("openvino", 4), ("onnxruntime", 8),
                                                         ("openvino", 8)]
    assert [r.status in ("ok", "unstable") for r in rows] == [True, True, True, False]  # windows of 10 ms may not agree
    assert 1 not in live["a"].seen  # single-stream was not asked
    assert "failed at batch 8: RuntimeError: no batch 8 here" in rows[-1].reason and rows[-1].throughput is None
    assert rows[0].rss_growth_mb == 2.0 and rows[1].rss_growth_mb is None
    assert any("batch 4: timing 2 case(s)" in s for s in said)
