"""The TensorRT backend.

On any host: its orchestration against stand-ins for TensorRT and CUDA (``fake_trt``): chunks
beyond the profile MAX, padding below MIN, gaps between profiles, lane rotation and reuse, one
synchronisation per call, profile switches, CUDA-graph replay, zero-copy device arrays, the
batcher over several contexts, plan checks and fallbacks, and freeing everything on close.

On a GPU host with TensorRT (``-m gpu``): the same API for real against ONNX Runtime, pipelining
(structurally: chunks in flight together, not a timing), CUDA graphs on/off, device arrays and
load/close cycles.
"""

from __future__ import annotations


import numpy as np
import pytest

import trtinfer
from trtinfer.errors import ArtifactError, DataError
from trtinfer.manifest import BatchProfile
from trtinfer.runtime.backends.tensorrt.loader import PlanIncompatibleError

from fakes import tensorrt as fake_trt
from fakes.tensorrt import FakeDeviceArray, make_plan_artifact, reference
from ... import helpers
from ...helpers import distinct_inputs, run_in_threads

SIMPLE = [BatchProfile(1, 8, 16)]
HIGH_MIN = [BatchProfile(4, 8, 16)]
GAPPED = [BatchProfile(1, 2, 4), BatchProfile(8, 12, 16)]




def close_to(y: np.ndarray, x: np.ndarray) -> bool:
    return y.shape == (len(x), 10) and np.allclose(y, reference(x), rtol=1e-5, atol=1e-5)


# -- results ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fakes", [SIMPLE, HIGH_MIN, GAPPED], indirect=True, ids=["simple", "high-min", "gapped"])
@pytest.mark.parametrize("streams", [1, 2, 3])
@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "graphs"])
def test_every_batch_size_comes_back_in_order(fakes, plan_artifact, streams, graphs):
    profiles = fakes[1]
    top = max(p.max for p in profiles)
    with trtinfer.load(plan_artifact, backend="tensorrt", streams=streams, cuda_graphs=graphs) as model:
        assert model.backend == "tensorrt" and model.max_chunk == top
        for rows in [0, 1, 3, 7, 12, top, 3 * top, 3 * top + 5]:
            x = distinct_inputs(rows, seed=rows)
            assert close_to(model.infer(x), x), f"rows={rows}"
        assert all(profiles[e.profile].covers(e.rows) for e in fakes[0].executions())


def test_auto_picks_tensorrt_and_says_why(fakes, plan_artifact):
    with trtinfer.load(plan_artifact) as model:
        assert model.backend == "tensorrt" and "fake TensorRT" in model.backend_reason
        assert model.max_batch == 8  # the profile's OPT
        assert model.gpu_name == "Fake GPU"


def test_one_synchronisation_per_call(fakes, plan_artifact):
    fake = fakes[0].cuda
    with trtinfer.load(plan_artifact, streams=2) as model:
        model.infer(distinct_inputs(32))  # two chunks over two lanes
        before = dict(fake.counts)
        model.infer(distinct_inputs(32))
        assert fake.counts["stream_sync"] - before["stream_sync"] == 1
        assert fake.counts["event_sync"] == before["event_sync"]
        before = dict(fake.counts)
        model.infer(distinct_inputs(64))  # four chunks: each lane reused once, waiting on its oldest chunk
        assert fake.counts["stream_sync"] - before["stream_sync"] == 1
        assert fake.counts["event_sync"] - before["event_sync"] == 2


def test_chunks_rotate_over_the_lanes(fakes, plan_artifact):
    with trtinfer.load(plan_artifact, streams=2) as model:
        model.infer(distinct_inputs(48))
        assert [len(fakes[0].executions(i)) for i in range(2)] == [2, 1]


@pytest.mark.parametrize("fakes", [GAPPED], indirect=True)
def test_profiles_switch_only_when_needed(fakes, plan_artifact):
    with trtinfer.load(plan_artifact, streams=1) as model:
        for rows in [2, 3, 4, 1]:
            model.infer(distinct_inputs(rows))
        assert fakes[0].profile_switches(0) == 1  # profile 0 set once, then kept
        model.infer(distinct_inputs(12))
        model.infer(distinct_inputs(10))
        assert fakes[0].profile_switches(0) == 2


def test_cuda_graphs_are_captured_once_per_shape_and_replayed(fakes, plan_artifact):
    fake = fakes[0].cuda
    with trtinfer.load(plan_artifact, streams=1, cuda_graphs=True, graph_cache=2) as model:
        x = distinct_inputs(5)
        for _ in range(4):
            assert close_to(model.infer(x), x)
        assert fake.counts["graph_capture"] == 1 and fake.counts["graph_launch"] == 3
        x = distinct_inputs(6)  # 5 rows ran padded to the graph size 6: the same graph serves 6
        assert close_to(model.infer(x), x)
        assert fake.counts["graph_capture"] == 1 and fake.counts["graph_launch"] == 4
        for rows in (7, 1):  # graph sizes 8 and 1: a shape change runs plainly once, then is captured
            model.infer(distinct_inputs(rows))
        assert fake.counts["graph_capture"] == 3 and fake.counts["graph_launch"] == 4
        assert len(model._lanes[0].graphs) == 2  # bounded: the oldest was freed
        assert {e.rows for e in fakes[0].executions(0)} <= {1, 6, 8}
    assert not fake.leaks()


def test_zero_copy_device_arrays(fakes, plan_artifact):
    fake = fakes[0].cuda
    with trtinfer.load(plan_artifact, streams=2) as model:
        x = distinct_inputs(40)
        x_dev = FakeDeviceArray(fake, x)
        out_dev = FakeDeviceArray(fake, np.zeros((40, 10), np.float32))
        assert model.infer(x_dev, out=out_dev, stream=7) is out_dev
        assert fake.counts["stream_sync"] == 0  # fully asynchronous: stream 7 waits, the host does not
        fake.drain(7)  # the caller synchronises its stream
        np.testing.assert_allclose(out_dev.host(), reference(x), rtol=1e-5, atol=1e-5)
        bound = {(e.input, e.output) for e in fakes[0].executions()}
        assert (x_dev.ptr, out_dev.ptr) in bound  # the engine read and wrote the caller's memory
        assert (x_dev.ptr + 32 * 12288, out_dev.ptr + 32 * 40) in bound  # chunk 3, in place (aligned)
        # chunk 2's output rows start 640 B in: not 256-byte aligned, so it went through the lane's buffer
        assert not any(out == out_dev.ptr + 16 * 40 for _, out in bound)
        assert any(inp == x_dev.ptr + 16 * 12288 for inp, _ in bound)  # its input was aligned: read in place
        assert close_to(model.infer(x_dev), x)  # device in, host out
        out2 = FakeDeviceArray(fake, np.zeros((40, 10), np.float32))
        model.infer(x, out=out2)  # host in, device out
        np.testing.assert_allclose(out2.host(), reference(x), rtol=1e-5, atol=1e-5)
        with pytest.raises(DataError, match="device input"):
            model.infer(FakeDeviceArray(fake, x.astype(np.float16)))
        with pytest.raises(DataError, match="device out"):
            model.infer(x_dev, out=FakeDeviceArray(fake, np.zeros((39, 10), np.float32)))


@pytest.mark.parametrize("fakes", [HIGH_MIN], indirect=True)
def test_device_input_below_min_is_padded_on_the_device(fakes, plan_artifact):
    fake = fakes[0].cuda
    with trtinfer.load(plan_artifact) as model:
        x = distinct_inputs(2)
        out_dev = FakeDeviceArray(fake, np.zeros((2, 10), np.float32))
        model.infer(FakeDeviceArray(fake, x), out=out_dev)
        np.testing.assert_allclose(out_dev.host(), reference(x), rtol=1e-5, atol=1e-5)


def test_batcher_over_several_contexts(fakes, plan_artifact):
    errors: list[str] = []
    with trtinfer.load(plan_artifact, streams=3, max_batch=8, max_delay_ms=1) as model:
        def client(seed: int) -> None:
            rng = np.random.default_rng(seed)
            for i in range(50):
                x = distinct_inputs(int(rng.integers(1, 6)), seed=seed * 100 + i)
                if not close_to(model.submit(x).result(timeout=30), x):
                    errors.append(f"{seed}/{i}")

        run_in_threads(client, 16)
        assert model.concurrency == 3 == model._batcher.concurrency and len(model._batcher._threads) == 4
    assert errors == []


def test_close_frees_every_buffer_stream_event_and_context(fakes, plan_artifact):
    fake = fakes[0].cuda
    for _ in range(50):
        with trtinfer.load(plan_artifact, streams=2, cuda_graphs=True) as model:
            model.infer(distinct_inputs(20))
            model.submit(distinct_inputs(3)).result(timeout=10)
        assert model._lanes == [] and model._engine is None and model._runtime is None
    assert not fake.leaks()


# -- plan checks -------------------------------------------------------------------------------------------
def test_plan_for_another_tensorrt_is_refused_or_falls_back(fakes, tiny_artifact, tmp_path):
    art = make_plan_artifact(tiny_artifact, tmp_path / "old", fakes[1], trt_version="10.0.1")
    with pytest.raises(PlanIncompatibleError, match="TensorRT 10.0.1") as info:
        trtinfer.load(art, backend="tensorrt")
    assert "trtinfer build --from-onnx" in info.value.hint
    with trtinfer.load(art) as model:  # auto: falls back to the CPU and says why
        assert model.backend in ("onnxruntime", "openvino")
        assert "TensorRT cannot run the plan" in model.backend_reason and "10.0.1" in model.backend_reason


def test_plan_for_another_gpu_architecture_is_refused(fakes, tiny_artifact, tmp_path):
    art = make_plan_artifact(tiny_artifact, tmp_path / "sm80", fakes[1], compute_capability="8.0",
                             trt_version=fakes[0].trt.__version__)
    with pytest.raises(PlanIncompatibleError, match="compute capability 8.0"):
        trtinfer.load(art, backend="tensorrt")


def test_undeserializable_plan_is_refused(fakes, tiny_artifact, tmp_path):
    art = make_plan_artifact(tiny_artifact, tmp_path / "junk", fakes[1], plan=b"not a plan",
                             trt_version=fakes[0].trt.__version__)
    with pytest.raises(PlanIncompatibleError, match="could not deserialize.*fake TensorRT error"):
        trtinfer.load(art, backend="tensorrt")
    assert not fakes[0].cuda.leaks()


def test_tampered_plan_never_falls_back(fakes, plan_artifact):
    path = plan_artifact / "model.plan"
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    with pytest.raises(ArtifactError, match="sha256") as info:
        trtinfer.load(plan_artifact)
    assert not isinstance(info.value, PlanIncompatibleError)


# -- real GPU ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine_artifact(tmp_path_factory, tiny_model):
    return helpers.engine_artifact(tmp_path_factory.mktemp("gpu") / "tiny", tiny_model, [BatchProfile(1, 16, 64)])


@pytest.mark.gpu
@pytest.mark.parametrize("rows", [0, 1, 7, 64, 192])
def test_gpu_equals_onnxruntime(engine_artifact, rows):
    x = distinct_inputs(rows, seed=rows)
    with trtinfer.load(engine_artifact, backend="onnxruntime") as cpu, trtinfer.load(engine_artifact) as gpu:
        assert gpu.backend == "tensorrt"
        np.testing.assert_allclose(gpu.infer(x), cpu.infer(x), rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
def test_gpu_cuda_graphs_on_and_off_agree(engine_artifact):
    x = distinct_inputs(37)
    with trtinfer.load(engine_artifact, cuda_graphs=False) as plain, \
            trtinfer.load(engine_artifact, cuda_graphs=True) as graphed:
        expected = plain.infer(x)
        for _ in range(3):  # capture, then replays
            np.testing.assert_allclose(graphed.infer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_gpu_device_arrays_zero_copy(engine_artifact):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    x = distinct_inputs(70)
    with trtinfer.load(engine_artifact) as model:
        expected = model.infer(x)
        x_dev = torch.from_numpy(x).cuda()
        out = torch.empty((70, 10), device="cuda")
        stream = torch.cuda.current_stream()
        model.infer(x_dev, out=out, stream=stream.cuda_stream)
        stream.synchronize()
        np.testing.assert_allclose(out.cpu().numpy(), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(model.infer(x_dev), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_gpu_pipelining_keeps_consecutive_chunks_in_flight(engine_artifact, monkeypatch):
    """Two lanes give the same results as one, and consecutive chunks are queued on different lanes'
    streams with no host wait between them: the structure that lets a GPU overlap one chunk's copies
    with another's compute, on any GPU. Whether it is faster is for `trtinfer bench` to measure (a
    wall-clock comparison here was a coin flip). The stand-in version runs on every host
    (test_tensorrt_ordering.py::test_consecutive_chunks_are_in_flight_together)."""
    x = distinct_inputs(64 * 6)
    with trtinfer.load(engine_artifact, streams=1) as serial, trtinfer.load(engine_artifact, streams=2) as piped:
        expected = serial.infer(x)
        trace = helpers.LaneTrace(monkeypatch, piped)
        np.testing.assert_allclose(piped.infer(x), expected, rtol=1e-5, atol=1e-5)
        trace.check_pipelined(len(piped._io.plan(len(x), piped.cuda_graphs)), lanes=2)


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_no_leak_over_many_load_close_cycles(engine_artifact):
    from trtinfer.runtime.backends.tensorrt import devices

    x = distinct_inputs(8)
    for _ in range(5):
        with trtinfer.load(engine_artifact, cuda_graphs=True) as model:
            model.infer(x)
    free_before, _ = devices.mem_get_info()
    for _ in range(1000):
        with trtinfer.load(engine_artifact, cuda_graphs=True) as model:
            model.infer(x)
    free_after, _ = devices.mem_get_info()
    assert free_before - free_after < 64 << 20


def test_a_failed_load_frees_what_it_made(fakes, plan_artifact, monkeypatch):
    fake = fakes[0].cuda
    made = []
    real_stream = fake.Stream

    def flaky_stream():
        if len(made) == 2:
            raise fake.CudaError("cudaStreamCreateWithFlags", "cudaErrorMemoryAllocation", 2)
        made.append(1)
        return real_stream()

    monkeypatch.setattr(fake, "Stream", flaky_stream)
    with pytest.raises(trtinfer.TrtInferError, match="cudaErrorMemoryAllocation"):
        trtinfer.load(plan_artifact, streams=3)
    assert not fake.leaks()
