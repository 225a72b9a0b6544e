"""The TensorRT backend against CUDA's and TensorRT's own rules (issue 17's defects).

On any host, under the queue CUDA stand-in (``fakes.cuda``: nothing runs until something waits
for it, copies read their source when they run, graph capture refuses what CUDA refuses) and the
TensorRT runtime stand-in: these check *our* ordering and decisions, not TensorRT. Each "defect"
test here failed against the backend before the fix it names; the refusal and pipelining tests
pin behaviour that was already right. The ``gpu`` tests at the end run the same situations for real.
"""

from __future__ import annotations

import numpy as np
import pytest

import trtinfer
from fakes import tensorrt as fake_trt
from fakes.tensorrt import FakeDeviceArray, make_plan_artifact, reference
from trtinfer.errors import ArtifactError, DataError, InternalError, TrtInferError
from trtinfer.manifest import BatchProfile

from ... import helpers
from ...helpers import distinct_inputs

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
        bound = {a for e in fakes[0].executions() for a in (e.input, e.output)}
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
        outs = sorted(e.output for e in fakes[0].executions())
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


# -- defect 7: a failed graph capture clears CUDA's last error (trtexec's endCaptureOnError) ----------------------
def test_a_failed_capture_leaves_the_lane_usable(fakes, plan_artifact, caplog):
    """The enqueue in the capture synchronises its stream, which CUDA forbids while capturing: the capture
    is invalidated, ``cudaStreamEndCapture`` fails, and the error stays as the thread's last CUDA error
    unless ``CudaGraph`` clears it; TensorRT's next enqueue would report it (the stand-in's model)."""
    stand_ins = fakes[0]
    fake = stand_ins.cuda
    with trtinfer.load(plan_artifact, streams=1, cuda_graphs=True) as model:
        stand_ins.knobs.uncapturable = True
        x = distinct_inputs(5)
        same(model.infer(x), x)  # ran plainly; the capture after it failed
        assert "CUDA graph capture failed on lane 0" in caplog.text
        assert "cudaErrorStreamCaptureUnsupported" in caplog.text  # the synchronisation TensorRT reported
        assert not model._lanes[0].graphs_ok and fake.counts["graph_capture"] == 0
        for rows in (5, 8, 3, 16):  # the lane goes on without graphs
            x = distinct_inputs(rows, seed=rows)
            same(model.infer(x), x)
        assert fake.counts["graph_launch"] == 0 and fake.counts["graph_capture"] == 0
    assert not fake.leaks()


def test_a_capture_refused_by_tensorrt_leaves_the_lane_usable(fakes, plan_artifact, monkeypatch):
    """execute_async_v3 returns False inside the capture (the capture itself stays valid): the graph
    CUDA returns is destroyed, and the lane runs without graphs."""
    stand_ins = fakes[0]
    with trtinfer.load(plan_artifact, streams=1, cuda_graphs=True) as model:
        lane = model._lanes[0]
        execute = lane._execute
        captures = []

        def refused_in_capture(stream):
            if stand_ins.cuda.captures():
                captures.append(stream)
                stand_ins.knobs.fail_execute = True
            try:
                execute(stream)
            finally:
                stand_ins.knobs.fail_execute = False

        monkeypatch.setattr(lane, "_execute", refused_in_capture)
        for rows in (5, 5, 9):
            x = distinct_inputs(rows, seed=rows)
            same(model.infer(x), x)
        assert len(captures) == 1 and not lane.graphs_ok
    assert not stand_ins.cuda.leaks()


# -- TensorRT's refusals are clear errors ---------------------------------------------------------------------------
def test_a_failed_enqueue_is_a_clear_error_and_the_model_recovers(fakes, plan_artifact):
    stand_ins = fakes[0]
    with trtinfer.load(plan_artifact, streams=2) as model:
        stand_ins.knobs.fail_execute = True
        with pytest.raises(TrtInferError, match="execute_async_v3 failed on lane 0: fake TensorRT error: enqueue "
                                                "failed") as info:
            model.infer(distinct_inputs(20))
        assert "-vv" in info.value.hint
        stand_ins.knobs.fail_execute = False
        x = distinct_inputs(40)
        same(model.infer(x), x)
    assert not stand_ins.cuda.leaks()


def test_a_refused_address_is_a_clear_error_and_nothing_stale_stays_bound(fakes, plan_artifact, monkeypatch):
    """TensorRT returns False for an address that is not 256-byte aligned (our own check runs first; it is
    switched off here to reach TensorRT's). The input's address may already be set when the output's is
    refused: the lane must not keep believing its old addresses are bound (it did, before this test)."""
    from trtinfer.runtime.backends.tensorrt import lanes, runner

    fake = fakes[0].cuda
    with trtinfer.load(plan_artifact, streams=1) as model:
        x = distinct_inputs(8)
        same(model.infer(x), x)  # binds the lane's own buffers
        x_dev = FakeDeviceArray(fake, distinct_inputs(8, seed=1))
        out = FakeDeviceArray(fake, np.zeros((8, 10), np.float32), offset=OUT_ROW_BYTES)
        with monkeypatch.context() as patch, \
                pytest.raises(InternalError, match="TensorRT refused tensor addresses .*fake TensorRT error: logits "
                                                   "address 0x[0-9a-f]+ is not 256-byte aligned"):
            patch.setattr(runner, "aligned", lambda ptr: True)  # where the call places its output
            patch.setattr(lanes, "aligned", lambda ptr: True)  # the lane's check before binding
            model.infer(x_dev, out=out)
        x = distinct_inputs(8, seed=2)
        same(model.infer(x), x)  # the lane's buffers again, both addresses set anew


@pytest.mark.parametrize("fakes", [GAPPED], indirect=True)
def test_refused_shapes_and_profiles_are_clear_errors(fakes, plan_artifact):
    stand_ins = fakes[0]
    with trtinfer.load(plan_artifact, streams=1) as model:
        engine = stand_ins.engines[0]
        engine._profiles = [BatchProfile(1, 2, 3)]  # the engine now disagrees with what was read at load
        with pytest.raises(DataError, match=r"TensorRT refused input shape \(4, 3, 32, 32\) for profile 0 "
                                            r"\(1:2:4\): fake TensorRT error: shape .* is outside"):
            model.infer(distinct_inputs(4))
        with pytest.raises(InternalError, match="TensorRT refused optimization profile 1: Error in set "
                                                "optimization profile async"):
            model.infer(distinct_inputs(12))


# -- pipelining, structurally (the GPU version is below) -----------------------------------------------------------
@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "graphs"])
def test_consecutive_chunks_are_in_flight_together(fakes, plan_artifact, monkeypatch, graphs):
    """Chunks alternate over two lanes and the host never waits for a chunk before launching the next.
    The stand-in's queues show more than a GPU can: when chunk i was launched, chunk i-1 had not run."""
    stand_ins = fakes[0]
    x = distinct_inputs(16 * 6)
    with trtinfer.load(plan_artifact, streams=1) as serial, \
            trtinfer.load(plan_artifact, streams=2, cuda_graphs=graphs) as piped:
        expected = serial.infer(x)
        ran = []  # kernels of the pipelined model run when each chunk was launched
        trace = helpers.LaneTrace(monkeypatch, piped,
                                  on_launch=lambda lane: ran.append(len(stand_ins.executions(1))
                                                                    + len(stand_ins.executions(2))))
        np.testing.assert_array_equal(piped.infer(x), expected)
        chunks = len(piped._io.plan(len(x), graphs))
        trace.check_pipelined(chunks, lanes=2)
        assert chunks == 6 and all(count <= max(0, i - 1) for i, count in enumerate(ran)), ran


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


@pytest.mark.gpu
def test_gpu_a_failed_capture_leaves_the_lane_usable(two_profile_engine, monkeypatch):
    """A capture spoilt for real (its stream synchronised while capturing, which CUDA forbids): the lane
    falls back to plain launches, its results stay right, and no CUDA error is left pending."""
    from trtinfer.runtime.backends.tensorrt import cuda, lanes

    real_graph = lanes.CudaGraph

    def spoilt_graph(stream, record):
        def spoilt():
            cuda.cudart().cudaStreamSynchronize(cuda.stream_handle(stream))  # refused; invalidates the capture
            record()
        return real_graph(stream, spoilt)

    cuda.cudart().cudaGetLastError()  # whatever earlier tests left
    with trtinfer.load(two_profile_engine, streams=1, cuda_graphs=True) as model:
        monkeypatch.setattr(lanes, "CudaGraph", spoilt_graph)
        for rows in (3, 3, 40, 3):
            x = distinct_inputs(rows, seed=rows)
            np.testing.assert_allclose(model.infer(x), _expected(two_profile_engine, x), rtol=1e-3, atol=1e-3)
        assert not model._lanes[0].graphs_ok
        assert cuda.cudart().cudaGetLastError() == (cuda.cudart().cudaError_t.cudaSuccess,)
