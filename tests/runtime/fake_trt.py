"""Stand-ins for TensorRT and the CUDA layer, so the TensorRT backend's orchestration (chunks,
padding, lanes, profile switches, graphs, device arrays, freeing) runs on a CPU host.

Device memory is simulated with numpy blocks at fake addresses; copies happen at once; the fake
execution context computes ``logits = flatten(x) @ W`` from the addresses bound to it and checks
what real TensorRT would refuse (a shape outside the active profile, two threads on one context).
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from trtinfer.manifest import PLAN_NAME, Manifest
from trtinfer.runtime import cuda as real_cuda
from trtinfer.runtime.planning import Profile

PLAN_BYTES = b"FAKE-TENSORRT-PLAN\x00" * 8
TRT_VERSION = "10.9.0.34"
GPU = {"name": "Fake GPU", "compute_capability": "9.0", "driver": "12.8", "memory_mib": 81920, "device": 0}
ROW = (3, 32, 32)
CLASSES = 10
WEIGHTS = np.random.default_rng(123).standard_normal((int(np.prod(ROW)), CLASSES)).astype(np.float32) / 50


def reference(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), WEIGHTS.shape[0]) @ WEIGHTS


# -- simulated CUDA --------------------------------------------------------------------------------
class Memory:
    """Blocks of bytes at fake, far-apart addresses."""

    def __init__(self) -> None:
        self.blocks: dict[int, np.ndarray] = {}
        self._next = 1 << 32
        self._lock = threading.Lock()

    def alloc(self, nbytes: int) -> int:
        with self._lock:
            base = self._next
            self._next += nbytes + (1 << 24)
            self.blocks[base] = np.zeros(nbytes, np.uint8)
        return base

    def free(self, base: int) -> None:
        with self._lock:
            del self.blocks[base]  # a double free raises KeyError

    def at(self, ptr: int, nbytes: int) -> np.ndarray:
        for base, block in self.blocks.items():
            if base <= ptr and ptr + nbytes <= base + len(block):
                return block[ptr - base: ptr - base + nbytes]
        raise AssertionError(f"access of {nbytes} bytes at {ptr:#x} is outside every allocation")


class FakeCuda:
    """Module-like object with the names tensorrt_backend uses from trtinfer.runtime.cuda."""

    CudaError = real_cuda.CudaError
    DeviceArray = real_cuda.DeviceArray
    device_array = staticmethod(real_cuda.device_array)
    stream_handle = staticmethod(real_cuda.stream_handle)

    def __init__(self) -> None:
        self.memory = Memory()
        self.counts = {"stream_sync": 0, "event_sync": 0, "graph_capture": 0, "graph_launch": 0, "streams": 0,
                       "events": 0}
        self.live: set[Any] = set()
        fake = self

        class _Owner:
            def close(self) -> None:
                if self._handle:
                    handle, self._handle = self._handle, 0
                    self._free(handle)
                    fake.live.discard(self)

            def _free(self, handle: int) -> None:
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.close()

        class PinnedBuffer(_Owner):
            def __init__(self, nbytes: int) -> None:
                self.nbytes = nbytes
                self._handle = fake.memory.alloc(nbytes)
                fake.live.add(self)

            @property
            def ptr(self) -> int:
                return self._handle

            def view(self, dtype, shape):
                dtype = np.dtype(dtype)
                count = int(np.prod(shape))
                return fake.memory.at(self._handle, count * dtype.itemsize).view(dtype).reshape(shape)

            def _free(self, handle: int) -> None:
                fake.memory.free(handle)

        class DeviceBuffer(PinnedBuffer):
            pass

        class Stream(_Owner):
            def __init__(self) -> None:
                fake.counts["streams"] += 1
                self._handle = 0x5000 + fake.counts["streams"]
                fake.live.add(self)

            @property
            def handle(self) -> int:
                return self._handle

            def synchronize(self) -> None:
                fake.counts["stream_sync"] += 1

            def wait(self, event) -> None:
                pass

        class Event(_Owner):
            def __init__(self, timing: bool = False) -> None:
                fake.counts["events"] += 1
                self._handle = 0x9000 + fake.counts["events"]
                fake.live.add(self)

            @property
            def handle(self) -> int:
                return self._handle

            def record(self, stream) -> None:
                pass

            def synchronize(self) -> None:
                fake.counts["event_sync"] += 1

            @staticmethod
            def elapsed_ms(start, end) -> float:
                return 1.0

        class CudaGraph(_Owner):
            def __init__(self, stream, record) -> None:
                fake.counts["graph_capture"] += 1
                self._handle = 0xC000 + fake.counts["graph_capture"]
                self._record = record  # replay = run what was recorded (addresses are in the key)
                fake.live.add(self)

            def launch(self, stream) -> None:
                fake.counts["graph_launch"] += 1
                self._record()

        self.PinnedBuffer, self.DeviceBuffer, self.Stream, self.Event, self.CudaGraph = (
            PinnedBuffer, DeviceBuffer, Stream, Event, CudaGraph)

    def _copy(self, dst: int, src: int, nbytes: int, stream: Any = None) -> None:
        if nbytes:
            self.memory.at(dst, nbytes)[:] = self.memory.at(src, nbytes)

    htod_async = dtoh_async = dtod_async = _copy

    def memset_async(self, dst: int, value: int, nbytes: int, stream: Any = None) -> None:
        if nbytes:
            self.memory.at(dst, nbytes)[:] = value

    def stream_wait(self, stream: Any, event: Any) -> None:
        pass

    def set_device(self, device: int) -> None:
        pass


class FakeDeviceArray:
    """A device array in simulated memory, seen through ``__cuda_array_interface__``."""

    def __init__(self, fake: FakeCuda, host: np.ndarray, stream: int | None = None) -> None:
        self.fake = fake
        self.shape, self.dtype = host.shape, host.dtype
        self.ptr = fake.memory.alloc(max(1, host.nbytes))
        fake.memory.at(self.ptr, host.nbytes)[:] = np.ascontiguousarray(host).view(np.uint8).ravel()
        self.__cuda_array_interface__ = {"shape": host.shape, "typestr": host.dtype.str, "data": (self.ptr, False),
                                         "version": 3, "strides": None, "stream": stream}

    def host(self) -> np.ndarray:
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        return self.fake.memory.at(self.ptr, nbytes).view(self.dtype).reshape(self.shape).copy()


# -- simulated TensorRT -------------------------------------------------------------------------------
class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.profile = 0
        self.shape: tuple | None = None
        self.addresses: dict[str, int] = {}
        self.busy = threading.Lock()
        self.profile_switches = 0
        self.executions: list[tuple[int, int, int, int]] = []  # (profile, rows, in, out)

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        if not 0 <= index < len(self.engine.profiles):
            raise RuntimeError("Error in set optimization profile async.")
        self.profile, self.shape = index, None
        self.profile_switches += 1
        return True

    def set_input_shape(self, name: str, shape) -> bool:
        assert name == "input"
        if not self.engine.profiles[self.profile].covers(int(shape[0])) or tuple(shape[1:]) != ROW:
            return False
        self.shape = tuple(shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        if not self.busy.acquire(blocking=False):
            raise AssertionError("two threads used one execution context at once")
        try:
            assert self.shape is not None, "input shape not set"
            rows = self.shape[0]
            memory = self.engine.fake.memory
            x = memory.at(self.addresses["input"], rows * int(np.prod(ROW)) * 4).view(np.float32).reshape(rows, *ROW)
            y = reference(x)
            memory.at(self.addresses["logits"], y.nbytes)[:] = y.view(np.uint8).ravel()
            self.executions.append((self.profile, rows, self.addresses["input"], self.addresses["logits"]))
            return True
        finally:
            self.busy.release()


class FakeEngine:
    def __init__(self, fake: FakeCuda, profiles: list[Profile]) -> None:
        self.fake = fake
        self.profiles = profiles
        self.contexts: list[FakeContext] = []
        self.num_io_tensors = 2
        self.num_optimization_profiles = len(profiles)

    def get_tensor_name(self, index: int) -> str:
        return ["input", "logits"][index]

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

    def __init__(self, fake: FakeCuda, profiles: list[Profile]) -> None:
        self.fake = fake
        self.profiles = profiles
        self.engines: list[FakeEngine] = []
        outer = self

        class Runtime:
            def __init__(self, logger) -> None:
                self.logger = logger

            def deserialize_cuda_engine(self, data: bytes):
                if bytes(data) != PLAN_BYTES:
                    return None
                engine = FakeEngine(outer.fake, outer.profiles)
                outer.engines.append(engine)
                return engine

        self.Runtime = Runtime


def make_plan_artifact(src: Path, dst: Path, profiles: list[Profile], trt_version: str = TRT_VERSION,
                       compute_capability: str = "9.0", plan: bytes = PLAN_BYTES) -> Path:
    """A copy of an ONNX artifact with a (fake) model.plan and its engine record."""
    import shutil

    shutil.copytree(src, dst)
    (dst / PLAN_NAME).write_bytes(plan)
    manifest = Manifest.read(dst)
    manifest.record_file(dst, PLAN_NAME)
    manifest.engine = {"profiles": [{"min": p.min, "opt": p.opt, "max": p.max} for p in profiles],
                       "tensorrt_version": trt_version, "gpu_name": GPU["name"],
                       "compute_capability": compute_capability}
    manifest.write(dst)
    return dst


def install(monkeypatch, profiles: list[Profile]) -> SimpleNamespace:
    """Patch the TensorRT backend onto the fakes; returns them for inspection."""
    from trtinfer import trt_support
    from trtinfer.runtime import loader, tensorrt_backend

    fake = FakeCuda()
    trt = FakeTrt(fake, profiles)
    logger = SimpleNamespace(drain_errors=lambda: ["fake TensorRT error"])
    monkeypatch.setattr(tensorrt_backend, "cuda", fake)
    monkeypatch.setattr(trt_support, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(trt_support, "gpu_info", lambda device=0: dict(GPU, device=device))
    monkeypatch.setattr(trt_support, "trt_logger", lambda: logger)
    monkeypatch.setattr(loader, "_tensorrt_usable",
                        lambda manifest, directory, options: (PLAN_NAME in manifest.files, "fake TensorRT on Fake GPU"))
    return SimpleNamespace(cuda=fake, trt=trt)
