"""The stand-ins themselves (``tests/fakes``): that they refuse what CUDA and TensorRT refuse, so the
backend tests over them cannot pass by accident, and that they offer only TensorRT's own names.

These check the stand-ins against CUDA's and TensorRT's documented rules as we read them, and the
names against the real TensorRT bindings; they do not run CUDA or TensorRT (the ``gpu`` tests do).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import trtinfer
from fakes import cuda as fake_cuda
from fakes import tensorrt as fake_trt
from fakes import tensorrt_build
from fakes.cuda import DEVICE, PINNED, FakeDeviceArray, cudaError_t
from trtinfer.manifest import BatchProfile
from trtinfer.runtime.backends.tensorrt import cuda
from trtinfer.runtime.backends.tensorrt.cuda_graphs import CudaGraph

from .helpers import distinct_inputs

SIMPLE = [BatchProfile(1, 8, 16)]


@pytest.fixture
def fake(monkeypatch) -> fake_cuda.FakeCuda:
    return fake_cuda.install(monkeypatch)


# -- memory: device and pinned host apart; copies of the wrong kind fail -------------------------------------
def test_device_and_pinned_memory_are_apart(fake):
    host, dev = fake.PinnedBuffer(1024), fake.DeviceBuffer(1024)
    array = FakeDeviceArray(fake, np.zeros(4, np.float32))
    assert host.ptr >= fake_cuda.HOST_BASE > dev.ptr >= fake_cuda.DEVICE_BASE
    assert fake_cuda.HOST_BASE > array.ptr >= fake_cuda.DEVICE_BASE
    assert all(p % fake_cuda.ALIGNMENT == 0 for p in (host.ptr, dev.ptr, array.ptr))
    fake.memory.at(dev.ptr, 1024, DEVICE)
    with pytest.raises(AssertionError, match="must be device memory; it is pinned host memory"):
        fake.memory.at(host.ptr, 16, DEVICE)


@pytest.mark.parametrize("call, dst, src", [
    ("htod_async", "host", "host"), ("htod_async", "dev", "dev"), ("htod_async", "host", "dev"),
    ("dtoh_async", "dev", "dev"), ("dtoh_async", "dev", "host"), ("dtod_async", "host", "dev"),
    ("dtod_async", "dev", "host"), ("memset_async", "host", None),
])
def test_a_copy_of_the_wrong_kind_fails(fake, call, dst, src):
    buffers = {"host": fake.PinnedBuffer(256), "dev": fake.DeviceBuffer(256)}
    stream = fake.Stream()
    with pytest.raises(AssertionError, match="must be (device|pinned host) memory"):
        if src is None:
            getattr(fake, call)(buffers[dst].ptr, 0, 256, stream)
        else:
            getattr(fake, call)(buffers[dst].ptr, buffers[src].ptr, 256, stream)


def test_copies_of_the_right_kind_round_trip(fake):
    host, back, dev, dev2 = fake.PinnedBuffer(64), fake.PinnedBuffer(64), fake.DeviceBuffer(64), fake.DeviceBuffer(64)
    stream = fake.Stream()
    host.view(np.uint8, (64,))[:] = np.arange(64)
    fake.htod_async(dev.ptr, host.ptr, 64, stream)
    fake.dtod_async(dev2.ptr, dev.ptr, 64, stream)
    fake.memset_async(dev2.ptr, 7, 1, stream)
    fake.dtoh_async(back.ptr, dev2.ptr, 64, stream)
    assert not back.view(np.uint8, (64,)).any()  # nothing ran yet: queued
    stream.synchronize()
    assert back.view(np.uint8, (64,))[0] == 7 and list(back.view(np.uint8, (64,))[1:]) == list(range(1, 64))


def test_memory_freed_before_its_queued_copy_ran_fails_the_copy(fake):
    host, dev, stream = fake.PinnedBuffer(64), fake.DeviceBuffer(64), fake.Stream()
    fake.htod_async(dev.ptr, host.ptr, 64, stream)
    host.close()
    with pytest.raises(AssertionError, match="outside every allocation"):
        stream.synchronize()


def test_a_double_free_and_a_free_of_the_wrong_kind_fail(fake):
    dev = fake.DeviceBuffer(64)
    ptr = dev.ptr
    with pytest.raises(AssertionError, match="pinned host free .* device memory"):
        fake.memory.free(ptr, PINNED)
    dev.close()
    dev.close()  # idempotent, as ours
    with pytest.raises(AssertionError, match="freed twice"):
        fake.memory.free(ptr, DEVICE)


# -- capture: what CUDA forbids while a stream captures (thread-local mode) -------------------------------------
def _forbidden(fake, what, stream, state):
    if what == "sync the capturing stream":
        stream.synchronize()
    elif what == "cudaMalloc":
        fake.DeviceBuffer(16)
    elif what == "cudaMallocHost":
        fake.PinnedBuffer(16)
    elif what == "cudaFree":
        state["victim"].close()
    elif what == "cudaFreeHost":
        state["host"].close()
    elif what == "sync a captured event":
        state["event"].record(stream)
        state["event"].synchronize()
    elif what == "query a captured event":
        state["event"].record(stream)
        state["event"].query()
    elif what == "use the legacy stream":
        fake.memset_async(state["dev"].ptr, 0, 16, cuda.LEGACY_DEFAULT_STREAM)
    elif what == "wait on an event recorded outside the capture":
        stream.wait(state["outside"])
    elif what == "synchronise the device":
        fake.device_synchronize()


FORBIDDEN = {
    "sync the capturing stream": "cudaErrorStreamCaptureUnsupported",
    "cudaMalloc": "cudaErrorStreamCaptureUnsupported",
    "cudaMallocHost": "cudaErrorStreamCaptureUnsupported",
    "cudaFree": "cudaErrorStreamCaptureUnsupported",
    "cudaFreeHost": "cudaErrorStreamCaptureUnsupported",
    "sync a captured event": "cudaErrorCapturedEvent",
    "query a captured event": "cudaErrorCapturedEvent",
    "use the legacy stream": "cudaErrorStreamCaptureImplicit",
    "wait on an event recorded outside the capture": "cudaErrorStreamCaptureIsolation",
    "synchronise the device": "cudaErrorStreamCaptureUnsupported",
}


def _capture_scene(fake):
    """A stream to capture on, and what the forbidden calls use: buffers, an event, one recorded elsewhere."""
    stream, other = fake.Stream(), fake.Stream()
    state = {"dev": fake.DeviceBuffer(64), "victim": fake.DeviceBuffer(16), "host": fake.PinnedBuffer(64),
             "event": fake.Event(), "outside": fake.Event()}
    state["outside"].record(other)
    return stream, state


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_a_forbidden_call_invalidates_the_capture(fake, what):
    stream, state = _capture_scene(fake)
    rt = fake.runtime
    assert rt.cudaStreamBeginCapture(stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal) == (
        cudaError_t.cudaSuccess,)
    fake.memset_async(state["dev"].ptr, 1, 16, stream)  # captured
    with pytest.raises(cuda.CudaError) as info:
        _forbidden(fake, what, stream, state)
    assert info.value.name == FORBIDDEN[what]
    assert rt.cudaStreamIsCapturing(stream.handle)[1] == rt.cudaStreamCaptureStatus.cudaStreamCaptureStatusInvalidated
    with pytest.raises(cuda.CudaError, match="cudaErrorStreamCaptureInvalidated"):
        fake.memset_async(state["dev"].ptr, 2, 16, stream)  # the spoilt capture refuses more work
    assert rt.cudaStreamEndCapture(stream.handle) == (cudaError_t.cudaErrorStreamCaptureInvalidated, None)
    assert rt.cudaGetLastError() == (cudaError_t.cudaErrorStreamCaptureInvalidated,)
    assert rt.cudaGetLastError() == (cudaError_t.cudaSuccess,)  # taken once, as CUDA's
    assert not fake.queue(stream.handle).pending  # nothing of the capture was queued


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_our_graph_capture_fails_cleanly_on_a_forbidden_call(fake, what):
    """Our CudaGraph (backends/tensorrt/cuda_graphs.py) over the stand-in cudart: the error comes out, nothing is left."""
    stream, state = _capture_scene(fake)
    with pytest.raises(cuda.CudaError) as info:
        CudaGraph(stream.handle, lambda: _forbidden(fake, what, stream, state))
    assert info.value.name == FORBIDDEN[what]
    assert fake.take_last_error() == cudaError_t.cudaSuccess
    assert fake.queue(stream.handle).capture is None and not fake.runtime.graphs and not fake.runtime.execs
    fake.memset_async(state["dev"].ptr, 3, 16, stream)  # the stream works again
    stream.synchronize()


def test_a_capture_restricts_only_its_own_thread(fake):
    """Thread-local mode: another thread allocates, frees, uses its own streams and the legacy stream
    while this one captures; only its synchronising of the capturing stream spoils the capture."""
    stream, side = fake.Stream(), fake.Stream()
    dev = fake.DeviceBuffer(64)
    errors: list[BaseException] = []

    def other_thread(sync_capturing: bool) -> None:
        try:
            with fake.DeviceBuffer(64) as scratch, fake.PinnedBuffer(64) as host:
                fake.htod_async(scratch.ptr, host.ptr, 64, side)
                side.synchronize()
                fake.memset_async(scratch.ptr, 0, 64, cuda.LEGACY_DEFAULT_STREAM)
                fake.drain(cuda.LEGACY_DEFAULT_STREAM)
            if sync_capturing:
                stream.synchronize()
        except BaseException as exc:  # noqa: BLE001 -- reported to the test thread
            errors.append(exc)

    def record(sync_capturing: bool) -> None:
        fake.memset_async(dev.ptr, 5, 64, stream)
        thread = threading.Thread(target=other_thread, args=(sync_capturing,))
        thread.start()
        thread.join()

    with CudaGraph(stream.handle, lambda: record(False)) as graph:
        assert not errors
        graph.launch(stream.handle)
        stream.synchronize()
    with pytest.raises(cuda.CudaError, match="cudaErrorStreamCaptureInvalidated"):
        CudaGraph(stream.handle, lambda: record(True))
    assert [getattr(e, "name", e) for e in errors] == ["cudaErrorStreamCaptureUnsupported"]


def test_a_capture_that_cannot_begin_clears_its_error(fake):
    recorded = []
    with pytest.raises(cuda.CudaError, match="cudaStreamBeginCapture failed: cudaErrorStreamCaptureUnsupported"):
        CudaGraph(cuda.LEGACY_DEFAULT_STREAM, lambda: recorded.append(1))  # the legacy stream cannot capture
    assert not recorded and fake.take_last_error() == cudaError_t.cudaSuccess


def test_a_failed_instantiation_destroys_the_graph(fake):
    stream, dev = fake.Stream(), fake.DeviceBuffer(64)
    fake.runtime.instantiate_error = cudaError_t.cudaErrorMemoryAllocation
    with pytest.raises(cuda.CudaError, match="cudaGraphInstantiate failed: cudaErrorMemoryAllocation"):
        CudaGraph(stream.handle, lambda: fake.memset_async(dev.ptr, 1, 64, stream))
    assert not fake.runtime.graphs and fake.take_last_error() == cudaError_t.cudaSuccess


# -- the simulated clock ------------------------------------------------------------------------------------
def test_elapsed_time_is_the_work_queued_between_the_events(fake):
    n = 1 << 20
    host, dev, a, b = fake.PinnedBuffer(n), fake.DeviceBuffer(n), fake.Stream(), fake.Stream()
    start, middle, end = fake.Event(timing=True), fake.Event(timing=True), fake.Event(timing=True)
    start.record(a)
    fake.htod_async(dev.ptr, host.ptr, n, a)
    middle.record(a)
    for _ in range(3):
        fake.dtoh_async(host.ptr, dev.ptr, n, a)
    end.record(a)
    with pytest.raises(cuda.CudaError, match="cudaErrorNotReady"):  # nothing has run yet
        fake.Event.elapsed_ms(start, end)
    end.synchronize()
    one = n / fake_cuda.COPY_BYTES_PER_MS
    assert fake.Event.elapsed_ms(start, middle) == pytest.approx(one)
    assert fake.Event.elapsed_ms(middle, end) == pytest.approx(3 * one)
    # work queued on another stream after the host waited for stream a starts then, not before
    other_start, other_end = fake.Event(timing=True), fake.Event(timing=True)
    other_start.record(b)
    fake.htod_async(dev.ptr, host.ptr, n, b)
    other_end.record(b)
    b.synchronize()
    assert fake.Event.elapsed_ms(other_start, other_end) == pytest.approx(one)
    assert fake.Event.elapsed_ms(start, other_start) == pytest.approx(4 * one)
    plain = fake.Event()
    plain.record(a)
    plain.synchronize()
    with pytest.raises(cuda.CudaError, match="cudaErrorInvalidResourceHandle"):  # an event without timing
        fake.Event.elapsed_ms(start, plain)


def test_two_streams_overlap_on_the_clock(fake):
    n = 1 << 20
    host, dev = fake.PinnedBuffer(n), fake.DeviceBuffer(n)
    streams = [fake.Stream(), fake.Stream()]
    marks = [(fake.Event(timing=True), fake.Event(timing=True)) for _ in streams]
    for stream, (begin, end) in zip(streams, marks):
        begin.record(stream)
        fake.htod_async(dev.ptr, host.ptr, n, stream)
        end.record(stream)
    for stream in streams:
        stream.synchronize()
    (a0, a1), (b0, b1) = marks
    assert fake.Event.elapsed_ms(a0, b0) == pytest.approx(0)  # both began when queued: together
    assert fake.Event.elapsed_ms(a0, a1) == fake.Event.elapsed_ms(b0, b1) > 0


# -- the TensorRT stand-in answers as the bindings do ------------------------------------------------------------
def test_tensorrt_refusals_return_false(fakes):
    stand_ins = fakes[0]
    engine = stand_ins.trt.Runtime(None).deserialize_cuda_engine(fake_trt.PLAN_BYTES)
    context = engine.create_execution_context()
    assert context.set_input_shape("input", (17, *fake_trt.ROW)) is False  # beyond the profile's 16
    assert context.set_input_shape("input", (4, 3, 16, 16)) is False
    assert context.set_input_shape("images", (4, *fake_trt.ROW)) is False
    assert context.set_tensor_address("input", fake_cuda.DEVICE_BASE + 64) is False
    assert context.set_tensor_address("features", fake_cuda.DEVICE_BASE) is False
    assert context.execute_async_v3(0x5001) is False  # no shape, no addresses
    with pytest.raises(RuntimeError, match="Error in set optimization profile async."):
        context.set_optimization_profile_async(1, 0x5001)
    errors = stand_ins.logger.drain_errors()
    assert len(errors) == 7 and all(e.startswith("fake TensorRT error: ") for e in errors)
    assert context.set_input_shape("input", (4, *fake_trt.ROW)) is True


# -- names: only TensorRT's, of the version the stand-in claims ----------------------------------------------------
def _public_names(objects) -> set[str]:
    """Public attribute names of the stand-in objects and of their enum-like member classes,
    less what a stand-in declares as its own state (``_STATE``)."""
    names = set()
    for obj in objects:
        state = getattr(obj, "_STATE", frozenset())
        for name in dir(obj):
            if name.startswith("_") or name in state:
                continue
            names.add(name)
            value = getattr(obj, name)
            if isinstance(value, type) or type(value).__name__ in ("_Enum", "_Flag"):
                names |= {n for n in dir(value) if not n.startswith("_")}
    return names


def _runtime_stand_ins(monkeypatch, version):
    stand_ins = fake_trt.install(monkeypatch, SIMPLE, version=version)
    runtime = stand_ins.trt.Runtime(None)
    engine = runtime.deserialize_cuda_engine(fake_trt.PLAN_BYTES)
    return [stand_ins.trt, runtime, engine, engine.create_execution_context()]


def _build_stand_ins(version):
    trt = tensorrt_build.FakeTensorRT(version)
    builder = trt.Builder(trt.logger)
    network = builder.create_network(0)
    config = builder.create_builder_config()
    parser = trt.OnnxParser(network, trt.logger)
    parser.parse_from_file("model.onnx")
    engine = trt.Runtime(trt.logger).deserialize_cuda_engine(b"plan")
    return [trt, builder, network, network.get_input(0), config, builder.create_optimization_profile(), parser,
            tensorrt_build.FakeParserError(), config.create_timing_cache(b""), trt.Runtime(trt.logger), engine,
            engine.create_engine_inspector(), engine.create_execution_context()]


@pytest.mark.parametrize("major", sorted(fake_trt.TRT_VERSIONS))
@pytest.mark.parametrize("which", ["runtime", "build"])
def test_stand_ins_offer_only_the_names_of_the_tensorrt_they_claim(monkeypatch, major, which):
    api = pytest.importorskip("test_trt_api_names")  # tests/test_trt_api_names.py: the bindings' string tables
    label = f"TensorRT {major}"
    version = fake_trt.TRT_VERSIONS[major]
    assert label in api.WHEELS and api.WHEELS[label][1].split("-")[1].startswith(f"{major}.")
    objects = _runtime_stand_ins(monkeypatch, version) if which == "runtime" else _build_stand_ins(version)
    assert objects[0].__version__ == version
    names = _public_names(objects)
    missing = sorted(n for n in names if not api.present(label, n))
    assert not missing, f"the {which} stand-in claiming TensorRT {version} offers names {label} lacks: {missing}"


def test_the_names_check_has_teeth(monkeypatch):
    api = pytest.importorskip("test_trt_api_names")
    objects = _runtime_stand_ins(monkeypatch, fake_trt.TRT_VERSIONS["11"])
    monkeypatch.setattr(type(objects[3]), "execute_async_v2", lambda self: None, raising=False)
    names = _public_names(objects)
    assert "execute_async_v2" in names and not api.present("TensorRT 11", "execute_async_v2")


# -- the stand-in's CUDA answers are cuda-python's --------------------------------------------------------------
def test_the_cudart_stand_in_uses_cuda_pythons_values():
    runtime = pytest.importorskip("cuda.bindings.runtime")
    for stand_in in (fake_cuda.cudaError_t, fake_cuda.cudaStreamCaptureStatus, fake_cuda.cudaStreamCaptureMode):
        real = getattr(runtime, stand_in.__name__)
        for member in stand_in:
            assert int(getattr(real, member.name)) == int(member), member
    for name in ("cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaStreamIsCapturing", "cudaGraphInstantiate",
                 "cudaGraphLaunch", "cudaGraphDestroy", "cudaGraphExecDestroy", "cudaGetLastError",
                 "cudaPeekAtLastError", "cudaGetErrorString"):
        assert hasattr(runtime, name) and hasattr(fake_cuda.FakeCudart, name), name


def test_device_arrays_through_the_backend_stay_in_device_memory(fakes, plan_artifact):
    fake = fakes[0].cuda
    x = distinct_inputs(20)
    with trtinfer.load(plan_artifact) as model:
        out = FakeDeviceArray(fake, np.zeros((20, 10), np.float32))
        model.infer(FakeDeviceArray(fake, x), out=out)
        assert all(fake.memory.at(e.input, 4, DEVICE) is not None for e in fakes[0].executions())
