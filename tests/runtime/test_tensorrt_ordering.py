"""The TensorRT backend against CUDA's and TensorRT's own rules (issue 17's defects).

On any host, under the queue CUDA stand-in (``fakes.cuda``: nothing runs until something waits
for it, copies read their source when they run) and the TensorRT runtime stand-in: these check
*our* ordering and decisions, not TensorRT. Each test here failed against the backend before
the fix it names. The ``gpu`` tests at the end run the same situations for real.
"""

from __future__ import annotations

import numpy as np
import pytest

import trtinfer
from fakes import tensorrt as fake_trt
from fakes.tensorrt import FakeDeviceArray, make_plan_artifact, reference
from trtinfer.errors import ArtifactError
from trtinfer.manifest import BatchProfile

from . import helpers
from .helpers import distinct_inputs

SIMPLE = [BatchProfile(1, 8, 16)]
GAPPED = [BatchProfile(1, 2, 4), BatchProfile(8, 12, 16)]
ROW_BYTES, OUT_ROW_BYTES = 3 * 32 * 32 * 4, 10 * 4




def same(y, x) -> None:
    np.testing.assert_allclose(y, reference(x), rtol=1e-5, atol=1e-5)


# -- defect 1: a lane's pinned input is refilled only after its upload ran --------------------------------------
@pytest.mark.parametrize("streams", [1, 2])
def test_host_input_device_output_with_more_chunks_than_lanes(fakes, plan_artifact, streams):
    fake = fakes[0].cuda
    x = distinct_inputs(16 * 5 + 3)  # six chunks over one or two lanes
    with trtinfer.load(plan_artifact, streams=streams) as model:
        out = FakeDeviceArray(fake, np.zeros((len(x), 10), np.float32))
        model.infer(x, out=out)
        same(out.host(), x)


# -- defect 2: the producer's queued writes come first ----------------------------------------------------------
def test_torch_like_input_waits_for_torchs_current_stream(fakes, plan_artifact):
    fake = fakes[0].cuda
    x = distinct_inputs(20)
    with trtinfer.load(plan_artifact) as model:
        x_dev = FakeDeviceArray(fake, x, torch_stream=0x7777)  # its data is still a queued kernel
        same(model.infer(x_dev), x)  # host output: the host waited, after the producer's kernel
        x_dev = FakeDeviceArray(fake, x, torch_stream=0x7777)
        out = FakeDeviceArray(fake, np.zeros((20, 10), np.float32))
        model.infer(x_dev, out=out)  # fully asynchronous on torch's stream
        fake.drain(0x7777)  # what torch.cuda.current_stream().synchronize() would do
        same(out.host(), x)


def test_v3_stream_none_means_ready(fakes, plan_artifact):
    fake = fakes[0].cuda
    x = distinct_inputs(5)
    with trtinfer.load(plan_artifact) as model:
        same(model.infer(FakeDeviceArray(fake, x, stream=None)), x)
        assert fake.queue(1).queued == 0  # nothing was fenced on the legacy default stream


# -- defect 3: TensorRT needs 256-byte aligned tensor addresses ---------------------------------------------------
def test_misaligned_slices_are_copied_through_the_lanes_buffers(fakes, plan_artifact):
    fake = fakes[0].cuda
    x = distinct_inputs(40)
    with trtinfer.load(plan_artifact, streams=2) as model:
        x_dev = FakeDeviceArray(fake, x, offset=64)  # a slice whose start is not 256-byte aligned
        out = FakeDeviceArray(fake, np.zeros((40, 10), np.float32), offset=OUT_ROW_BYTES)  # y[1:]
        model.infer(x_dev, out=out)
        same(out.host(), x)
        bound = {a for c in fakes[0].trt.engines[0].contexts for e in c.executions for a in e[2:]}
        assert all(a % 256 == 0 for a in bound)


@pytest.mark.parametrize("fakes", [[BatchProfile(1, 32, 128)]], indirect=True)
def test_chunks_start_on_aligned_rows_so_large_calls_stay_zero_copy(fakes, plan_artifact):
    fake = fakes[0].cuda
    x = distinct_inputs(300)
    with trtinfer.load(plan_artifact, chunk_size=100) as model:  # 100 rows: cut at 96, a multiple of 32
        x_dev = FakeDeviceArray(fake, x)
        out = FakeDeviceArray(fake, np.zeros((300, 10), np.float32))
        model.infer(x_dev, out=out)
        same(out.host(), x)
        outs = sorted(e[3] for c in fakes[0].trt.engines[0].contexts for e in c.executions)
        assert outs == [out.ptr + start * OUT_ROW_BYTES for start in (0, 96, 192, 288)]  # all in place


# -- defect 5: graphs keyed by shape, bounded, never replayed over a pending update ------------------------------
def test_graphs_do_not_multiply_with_new_device_pointers(fakes, plan_artifact):
    fake = fakes[0].cuda
    with trtinfer.load(plan_artifact, streams=1, cuda_graphs=True) as model:
        for seed in range(5):
            x = distinct_inputs(8, seed=seed)
            out = FakeDeviceArray(fake, np.zeros((8, 10), np.float32))
            model.infer(FakeDeviceArray(fake, x), out=out)
            same(out.host(), x)
        assert fake.counts["graph_capture"] == 1 and fake.counts["graph_launch"] == 4


def test_graph_captures_are_bounded_by_the_batch_size_ladder(fakes, plan_artifact):
    fake = fakes[0].cuda
    with trtinfer.load(plan_artifact, streams=1, cuda_graphs=True) as model:
        for rows in range(1, 17):
            x = distinct_inputs(rows, seed=rows)
            same(model.infer(x), x)
        assert fake.counts["graph_capture"] == 8  # 1, 2, 3, 4, 6, 8, 12, 16 for profile 1:8:16
        assert len(model._lanes[0].graphs) == 8


@pytest.mark.parametrize("fakes", [GAPPED], indirect=True)
def test_a_profile_switch_runs_plainly_before_any_replay(fakes, plan_artifact):
    fake = fakes[0].cuda
    with trtinfer.load(plan_artifact, streams=1, cuda_graphs=True) as model:
        for rows in (2, 2, 12, 12, 2, 2, 12):  # back and forth between two profiles, graphs for both
            x = distinct_inputs(rows, seed=rows)
            same(model.infer(x), x)
        assert fake.counts["graph_capture"] == 2
        assert fake.counts["graph_launch"] == 3  # the second of each pair; every switch ran plainly


# -- defect 6: every output needs an address ---------------------------------------------------------------------
def test_an_engine_with_two_outputs_is_refused_at_load(monkeypatch, tiny_artifact, tmp_path):
    fake_trt.install(monkeypatch, SIMPLE, outputs=("logits", "features"))
    art = make_plan_artifact(tiny_artifact, tmp_path / "plan", SIMPLE)
    with pytest.raises(ArtifactError, match="one input and one output"):
        trtinfer.load(art, backend="tensorrt")


# -- on a GPU with TensorRT, for real ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_profile_engine(tmp_path_factory, tiny_model):
    return helpers.engine_artifact(tmp_path_factory.mktemp("gpu2") / "tiny", tiny_model,
                                   [BatchProfile(1, 4, 8), BatchProfile(16, 32, 64)])


def _expected(art, x):
    with trtinfer.load(art, backend="onnxruntime") as cpu:
        return cpu.infer(x)


@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "graphs"])
def test_gpu_profile_switching_on_one_lane(two_profile_engine, graphs):
    sizes = [3, 40, 3, 8, 64, 1, 20, 3]  # both profiles, two shapes each, back and forth
    with trtinfer.load(two_profile_engine, streams=1, cuda_graphs=graphs) as model:
        for _ in range(2):
            for rows in sizes:
                x = distinct_inputs(rows, seed=rows)
                np.testing.assert_allclose(model.infer(x), _expected(two_profile_engine, x), rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
def test_gpu_torch_tensor_without_stream_on_a_side_stream(two_profile_engine):
    torch = pytest.importorskip("torch")
    x = distinct_inputs(64)
    expected = _expected(two_profile_engine, x)
    with trtinfer.load(two_profile_engine, streams=2) as model:
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            for _ in range(3):
                big = torch.randn(4096, 4096, device="cuda")
                x_dev = (big @ big)[:0].sum() * 0 + torch.from_numpy(x).cuda()  # queued behind a slow kernel
                out = torch.empty((64, 10), device="cuda")
                model.infer(x_dev, out=out)  # no stream=: fenced on torch's current stream (side)
                side.synchronize()
                np.testing.assert_allclose(out.cpu().numpy(), expected, rtol=1e-3, atol=1e-3)
                np.testing.assert_allclose(model.infer(x_dev), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
def test_gpu_misaligned_slices(two_profile_engine):
    torch = pytest.importorskip("torch")
    x = distinct_inputs(41)
    expected = _expected(two_profile_engine, x[1:])
    with trtinfer.load(two_profile_engine) as model:
        x_dev = torch.from_numpy(x).cuda()[1:]  # starts 12,288 B in: aligned; the output slice is not
        out = torch.zeros((41, 10), device="cuda")[1:]  # starts 40 B in
        model.infer(x_dev, out=out)
        torch.cuda.current_stream().synchronize()
        np.testing.assert_allclose(out.cpu().numpy(), expected, rtol=1e-3, atol=1e-3)
