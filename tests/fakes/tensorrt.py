"""A TensorRT runtime stand-in (engine, execution context) over the queue CUDA of :mod:`fakes.cuda`.

It checks *our* orchestration (chunks, padding, lanes, profile switches, graphs, device arrays,
freeing) on a CPU host; it says nothing about TensorRT itself. The execution context computes
``logits = flatten(x) @ W`` when its queued kernel runs, from the addresses and shape bound when
it was queued, and refuses what TensorRT's documentation forbids: a shape outside the active
profile, two threads on one context, an output left without an address, an I/O address not
aligned to 256 bytes, capturing the first launch after a profile or shape change, and replaying a
graph while such a change is still pending.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from trtinfer.manifest import PLAN_NAME, BatchProfile, EngineRecord, Manifest

from .cuda import FakeCuda, FakeDeviceArray, Op

__all__ = ["FakeCuda", "FakeDeviceArray", "FakeTrt", "install", "make_plan_artifact", "reference"]

PLAN_BYTES = b"FAKE-TENSORRT-PLAN\x00" * 8
TRT_VERSION = "10.9.0.34"
GPU = {"name": "Fake GPU", "compute_capability": "9.0", "driver": "12.8", "memory_mib": 81920, "device": 0}
ROW = (3, 32, 32)
CLASSES = 10
WEIGHTS = np.random.default_rng(123).standard_normal((int(np.prod(ROW)), CLASSES)).astype(np.float32) / 50


def reference(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), WEIGHTS.shape[0]) @ WEIGHTS


# -- simulated TensorRT -------------------------------------------------------------------------------
class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.profile = 0
        self.shape: tuple | None = None
        self.addresses: dict[str, int] = {}
        self.busy = threading.Lock()
        self.profile_switches = 0
        self.update_pending = False  # TensorRT applies profile/shape changes on the next execute_async_v3
        self.executions: list[tuple[int, int, int, int]] = []  # (profile, rows, in, out), when run

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        if not 0 <= index < len(self.engine.profiles):
            raise RuntimeError("Error in set optimization profile async.")
        self.profile, self.shape = index, None
        self.profile_switches += 1
        self.update_pending = True
        return True

    def set_input_shape(self, name: str, shape) -> bool:
        assert name == "input"
        if not self.engine.profiles[self.profile].covers(int(shape[0])) or tuple(shape[1:]) != ROW:
            return False
        if tuple(shape) != self.shape:
            self.update_pending = True
        self.shape = tuple(shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        assert name in self.engine.names, name
        assert int(ptr) % 256 == 0, f"{name} address {int(ptr):#x} is not 256-byte aligned (TensorRT requires it)"
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        if not self.busy.acquire(blocking=False):
            raise AssertionError("two threads used one execution context at once")
        try:
            assert self.shape is not None, "input shape not set"
            unbound = [n for n in self.engine.names if n not in self.addresses]
            assert not unbound, f"execute_async_v3 with tensors {unbound} lacking an address"
            fake = self.engine.fake
            if fake.queue(stream).capture is not None:
                assert not self.update_pending, ("captured the first execute_async_v3 after a profile or shape "
                                                 "change (TensorRT applies the change in it: run it before capturing)")
            self.update_pending = False
            profile, rows, x_ptr, y_ptr = self.profile, self.shape[0], self.addresses["input"], self.addresses["logits"]

            def run() -> None:
                memory = fake.memory
                x = memory.at(x_ptr, rows * int(np.prod(ROW)) * 4).view(np.float32).reshape(rows, *ROW)
                y = reference(x)
                memory.at(y_ptr, y.nbytes)[:] = y.view(np.uint8).ravel()
                self.executions.append((profile, rows, x_ptr, y_ptr))

            fake.enqueue(stream, Op(run, f"execute {rows} rows on profile {profile}", context=self))
            return True
        finally:
            self.busy.release()

    def check_replay(self) -> None:
        assert not self.update_pending, ("replayed a CUDA graph while a profile or shape change was pending "
                                         "(TensorRT applies it on the next execute_async_v3)")


class FakeEngine:
    def __init__(self, fake: FakeCuda, profiles: list[BatchProfile], outputs: tuple[str, ...] = ("logits",)) -> None:
        self.fake = fake
        self.profiles = profiles
        self.contexts: list[FakeContext] = []
        self.names = ("input", *outputs)
        self.num_io_tensors = len(self.names)
        self.num_optimization_profiles = len(profiles)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> str:
        return FakeTrt.TensorIOMode.INPUT if name == "input" else FakeTrt.TensorIOMode.OUTPUT

    def get_tensor_location(self, name: str) -> str:
        return FakeTrt.TensorLocation.DEVICE

    def get_tensor_format(self, name: str) -> str:
        return FakeTrt.TensorFormat.LINEAR

    def get_tensor_dtype(self, name: str) -> str:
        return FakeTrt.DataType.FLOAT

    def get_tensor_shape(self, name: str) -> tuple:
        return (-1, *ROW) if name == "input" else (-1, CLASSES)

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple]:
        p = self.profiles[index]
        return [(p.min, *ROW), (p.opt, *ROW), (p.max, *ROW)]

    def create_execution_context(self) -> FakeContext:
        context = FakeContext(self)
        self.contexts.append(context)
        return context


class FakeTrt:
    __version__ = TRT_VERSION

    class TensorIOMode:
        INPUT, OUTPUT = "INPUT", "OUTPUT"

    class TensorLocation:
        DEVICE = "DEVICE"

    class TensorFormat:
        LINEAR = "LINEAR"

    class DataType:
        FLOAT, HALF, INT8, INT32, UINT8, BOOL = "FLOAT", "HALF", "INT8", "INT32", "UINT8", "BOOL"

    def __init__(self, fake: FakeCuda, profiles: list[BatchProfile], outputs: tuple[str, ...] = ("logits",)) -> None:
        self.fake = fake
        self.profiles = profiles
        self.outputs = outputs
        self.engines: list[FakeEngine] = []
        outer = self

        class Runtime:
            def __init__(self, logger) -> None:
                self.logger = logger

            def deserialize_cuda_engine(self, data: bytes):
                if bytes(data) != PLAN_BYTES:
                    return None
                engine = FakeEngine(outer.fake, outer.profiles, outer.outputs)
                outer.engines.append(engine)
                return engine

        self.Runtime = Runtime


def make_plan_artifact(src: Path, dst: Path, profiles: list[BatchProfile], trt_version: str = TRT_VERSION,
                       compute_capability: str = "9.0", plan: bytes = PLAN_BYTES) -> Path:
    """A copy of an ONNX artifact with a (fake) model.plan and its engine record."""
    import shutil

    shutil.copytree(src, dst)
    (dst / PLAN_NAME).write_bytes(plan)
    manifest = Manifest.read(dst)
    manifest.record_file(dst, PLAN_NAME)
    manifest.engine = EngineRecord(tensorrt_version=trt_version, gpu_name=GPU["name"],
                                   compute_capability=compute_capability, profiles=list(profiles),
                                   plan_sha256=manifest.files[PLAN_NAME]["sha256"],
                                   plan_bytes=manifest.files[PLAN_NAME]["bytes"], built="2026-11-24T00:00:00+00:00")
    manifest.write(dst)
    return dst


def install(monkeypatch, profiles: list[BatchProfile], outputs: tuple[str, ...] = ("logits",)) -> SimpleNamespace:
    """Patch the TensorRT backend onto the stand-ins; returns them for inspection."""
    from trtinfer import trt_support
    from trtinfer.runtime import loader, tensorrt_backend

    fake = FakeCuda()
    fake.gpu_info = lambda device=0: dict(GPU, device=device)
    trt = FakeTrt(fake, profiles, outputs)
    logger = SimpleNamespace(drain_errors=lambda: ["fake TensorRT error"])
    monkeypatch.setattr(tensorrt_backend, "cuda", fake)
    monkeypatch.setattr(trt_support, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(trt_support, "trt_logger", lambda: logger)
    monkeypatch.setattr(loader, "_tensorrt_usable",
                        lambda manifest, directory, options: (PLAN_NAME in manifest.files, "fake TensorRT on Fake GPU"))
    return SimpleNamespace(cuda=fake, trt=trt)
