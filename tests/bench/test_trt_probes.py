"""benchmarks/trt_probes.py against the TensorRT backend's stand-ins: the engine-time and copy-bandwidth
probes read the work the simulated GPU clock was given (tests/fakes/cuda.py)."""

from __future__ import annotations

import pytest

import trtinfer
from fakes import cuda as fake_cuda
from fakes import tensorrt as fake_trt
from runtime.conftest import fakes, plan_artifact, tiny_artifact, tiny_model, trt_version  # noqa: F401 -- fixtures
from trtinfer.benchmarks import trt_probes


def test_the_probes_follow_the_work(fakes, plan_artifact, monkeypatch):  # noqa: F811 -- the fixtures above
    monkeypatch.setattr(trt_probes, "cuda", fakes[0].cuda)  # the CUDA layer the model runs on: the stand-in's
    with trtinfer.load(plan_artifact, streams=1) as model:
        assert trt_probes.compute_time_ms(model, 8) == pytest.approx(8 * fake_trt.KERNEL_MS_PER_ROW)
        assert trt_probes.compute_time_ms(model, 16) == pytest.approx(16 * fake_trt.KERNEL_MS_PER_ROW)
        assert trt_probes.h2d_bandwidth_gbs(model, nbytes=1 << 20, repeats=3) == pytest.approx(
            fake_cuda.COPY_BYTES_PER_MS / 1e6)
