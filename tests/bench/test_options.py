"""What ``trtinfer bench`` is asked to do, said once (benchmarks/options.py)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from trtinfer.benchmarks import options as o
from trtinfer.benchmarks.options import BenchSettings
from trtinfer.cli import main
from trtinfer.errors import TrtInferError


def test_the_command_without_options_asks_for_the_settings_defaults(monkeypatch, tmp_path):
    """Every default the CLI passes is the dataclass's own (so the command states none of its own)."""
    import trtinfer.benchmarks.bench as bench

    asked: list[BenchSettings] = []

    class Stop:
        def __init__(self, settings: BenchSettings, **kwargs) -> None:
            asked.append(settings)

        def run(self):
            raise TrtInferError("stopped before any work")

    monkeypatch.setattr(bench, "Bench", Stop)
    checkpoint = tmp_path / "m.pth"
    assert main(["bench", str(checkpoint), "-q"]) == 1
    (got,) = asked
    default = BenchSettings(checkpoint)
    for f in fields(BenchSettings):
        if f.name != "build":  # the model and data options: trtinfer.defaults, shared with `trtinfer build`
            assert getattr(got, f.name) == getattr(default, f.name), f.name


def test_the_timing_and_the_server_scenario_take_their_defaults_from_the_options():
    import inspect

    from trtinfer.benchmarks.measure import interleave

    params = inspect.signature(interleave).parameters
    assert params["window_seconds"].default == o.DEFAULT_WINDOW_SECONDS
    assert params["max_windows"].default == o.DEFAULT_MAX_WINDOWS
    assert params["warmup_calls"].default == o.DEFAULT_WARMUP_CALLS
    assert params["warmup_seconds"].default == o.DEFAULT_WARMUP_SECONDS


@pytest.mark.parametrize("change, message", [
    ({"backends": ("tensorflow",)}, "unknown backend(s) tensorflow"),
    ({"precisions": ("int4",)}, "unknown precision(s) int4"),
    ({"precisions": ()}, "unknown precision(s) (none)"),
    ({"device": "tpu"}, "--device 'tpu'"),
    ({"batch_sizes": (0, 8)}, "--batch-sizes 0,8"),
    ({"concurrency": (2000,)}, "--concurrency 2000"),
    ({"seconds": float("nan")}, "--seconds nan"),
    ({"iterations": 0}, "--iterations 0"),
    ({"latency_bound_ms": 0.0}, "--latency-bound-ms 0.0"),
    ({"max_windows": 2}, "--max-windows 2 must be at least 3"),
])
def test_bad_settings_are_refused_with_the_option_named(change, message):
    with pytest.raises(TrtInferError) as info:
        BenchSettings(Path("m.pth"), **change).check()
    assert message in str(info.value)
    BenchSettings(Path("m.pth")).check()


def test_wanted_backends_and_devices():
    s = BenchSettings(Path("m.pth"), backends=("auto",), device="cpu")
    assert s.wants("auto") and not s.wants("openvino") and BenchSettings(Path("m.pth")).wants("openvino")
    assert s.wants_device("cpu") and not s.wants_device("cuda") and BenchSettings(Path("m.pth")).wants_device("cuda")
