"""A TensorRT runtime stand-in (engine, execution context) over the queue CUDA of :mod:`fakes.cuda`.

It checks *our* orchestration (chunks, padding, lanes, profile switches, graphs, device arrays,
freeing) on a CPU host; it says nothing about TensorRT itself. The execution context computes
``logits = flatten(x) @ W`` when its queued kernel runs (``KERNEL_MS_PER_ROW`` of simulated GPU
time per row), from the device addresses and shape bound when it was queued, and answers as the
TensorRT Python bindings do:

* ``set_input_shape`` outside the active profile, ``set_tensor_address`` with an address not
  aligned to 256 bytes, or either with a name the engine lacks: ``False`` (and an error logged);
  ``set_optimization_profile_async`` with a profile the engine lacks raises ``RuntimeError``
  ("Error in set optimization profile async.", the bindings' own words);
* ``execute_async_v3`` returns ``False`` (and logs why) without an input shape or with an I/O
  tensor lacking an address, when a CUDA error is pending on the thread (TensorRT reads CUDA's last
  error around its launches, so an error an earlier call left behind fails this enqueue; a
  modelling assumption), when ``Knobs.fail_execute`` is set, and inside a graph capture when it
  would synchronise its stream: the first enqueue after a profile or shape change (TensorRT
  applies the change in it and documents that it cannot be captured) or any enqueue with
  ``Knobs.uncapturable``. That synchronisation invalidates the capture, as CUDA does; outside a
  capture the stand-in skips it, because running queued work early would hide ordering bugs;
* two threads on one context, and replaying a graph while a profile or shape change is pending
  (the graph would run the old shape), fail the test outright: TensorRT does not report them.

Its public names are only TensorRT's, of the version it claims (``TRT_VERSIONS``: TensorRT 10 or 11,
checked against the real bindings by tests/runtime/test_fakes_strict.py); its state and knobs are
private, read through :class:`StandIns`.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from trtinfer.manifest import PLAN_NAME, BatchProfile, EngineRecord, Manifest

from . import cuda as fake_cuda
from .cuda import FakeCuda, FakeDeviceArray, Op

__all__ = ["FakeCuda", "FakeDeviceArray", "FakeTrt", "StandIns", "install", "make_plan_artifact", "reference"]

PLAN_BYTES = b"FAKE-TENSORRT-PLAN\x00" * 8
#: The versions the stand-in can claim: those of the bindings wheels tests/test_trt_api_names.py reads.
TRT_VERSIONS = {"10": "10.16.1.11", "11": "11.4.0.106"}
TRT_VERSION = TRT_VERSIONS["10"]
GPU = {"name": "Fake GPU", "compute_capability": "9.0", "driver": "12.8", "memory_mib": 81920, "device": 0}
ROW = (3, 32, 32)
CLASSES = 10
KERNEL_MS_PER_ROW = 0.01
WEIGHTS = np.random.default_rng(123).standard_normal((int(np.prod(ROW)), CLASSES)).astype(np.float32) / 50


def reference(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), WEIGHTS.shape[0]) @ WEIGHTS


class Execution(NamedTuple):
    """One kernel that ran: profile, batch rows, input and output addresses, stream."""

    profile: int
    rows: int
    input: int
    output: int
    stream: int


@dataclasses.dataclass
class Knobs:
    """Failures a test switches on (stand-in state, not TensorRT API)."""

    fail_execute: bool = False  # execute_async_v3 returns False
    uncapturable: bool = False  # execute_async_v3 synchronises its stream: fine when run, spoils a capture


class FakeLogger:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def drain_errors(self) -> list[str]:
        out, self.errors = self.errors, []
        return out


# -- simulated TensorRT -------------------------------------------------------------------------------
class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self._engine = engine
        self._profile = 0
        self._shape: tuple | None = None
        self._addresses: dict[str, int] = {}
        self._busy = threading.Lock()
        self._profile_switches = 0
        self._update_pending = False  # TensorRT applies profile/shape changes on the next execute_async_v3
        self._executions: list[Execution] = []  # in the order they ran

    def _refuse(self, why: str) -> bool:
        self._engine._trt._logger.errors.append(f"fake TensorRT error: {why}")
        return False

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        if not 0 <= index < len(self._engine._profiles):
            self._refuse(f"optimization profile {index} does not exist")
            raise RuntimeError("Error in set optimization profile async.")
        self._profile, self._shape = index, None
        self._profile_switches += 1
        self._update_pending = True
        return True

    def set_input_shape(self, name: str, shape: Any) -> bool:
        if name != "input":
            return self._refuse(f"no input tensor named {name!r}")
        profile = self._engine._profiles[self._profile]
        if not profile.covers(int(shape[0])) or tuple(shape[1:]) != ROW:
            return self._refuse(f"shape {tuple(shape)} is outside optimization profile {self._profile} ({profile})")
        if tuple(shape) != self._shape:
            self._update_pending = True
        self._shape = tuple(shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if name not in self._engine._names:
            return self._refuse(f"no tensor named {name!r}")
        if int(ptr) % 256:
            return self._refuse(f"{name} address {int(ptr):#x} is not 256-byte aligned")
        self._addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        if not self._busy.acquire(blocking=False):
            raise AssertionError("two threads used one execution context at once")
        try:
            return self._enqueue(int(stream_handle))
        finally:
            self._busy.release()

    def _enqueue(self, stream: int) -> bool:
        fake, knobs = self._engine._fake, self._engine._trt._knobs
        pending = fake.take_last_error()
        if pending:
            return self._refuse(f"Cuda Runtime ({pending.name}), pending from an earlier CUDA call")
        if knobs.fail_execute:
            return self._refuse("enqueue failed (Knobs.fail_execute)")
        if self._shape is None:
            return self._refuse("the input shape is not set")
        unbound = [n for n in self._engine._names if n not in self._addresses]
        if unbound:
            return self._refuse(f"tensors {unbound} have no address")
        if self._update_pending or knobs.uncapturable:
            try:  # TensorRT's own synchronisation: only its capture rules (see the module docstring)
                fake.stream_synchronize(stream, run=False)
            except fake_cuda.real_cuda.CudaError as exc:
                return self._refuse(f"Cuda Runtime ({exc.name}) in enqueue")
        profile, rows = self._profile, self._shape[0]
        x_ptr, y_ptr = self._addresses["input"], self._addresses["logits"]

        def run() -> None:
            memory = fake.memory
            x = memory.at(x_ptr, rows * int(np.prod(ROW)) * 4, fake_cuda.DEVICE, "the engine's input")
            y = reference(x.view(np.float32).reshape(rows, *ROW))
            memory.at(y_ptr, y.nbytes, fake_cuda.DEVICE, "the engine's output")[:] = y.view(np.uint8).ravel()
            self._executions.append(Execution(profile, rows, x_ptr, y_ptr, stream))

        try:
            fake.enqueue(stream, Op(run, f"execute {rows} rows on profile {profile}", rows * KERNEL_MS_PER_ROW,
                                    context=self), "execute_async_v3")
        except fake_cuda.real_cuda.CudaError as exc:
            return self._refuse(f"Cuda Runtime ({exc.name})")
        self._update_pending = False
        return True

    def _check_replay(self) -> None:
        assert not self._update_pending, ("replayed a CUDA graph while a profile or shape change was pending "
                                          "(TensorRT applies it on the next execute_async_v3)")


class FakeEngine:
    def __init__(self, trt: FakeTrt) -> None:
        self._trt = trt
        self._fake = trt._fake
        self._profiles = list(trt._profiles)
        self._contexts: list[FakeContext] = []
        self._names = ("input", *trt._outputs)

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

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
        p = self._profiles[index]
        return [(p.min, *ROW), (p.opt, *ROW), (p.max, *ROW)]

    def create_execution_context(self) -> FakeContext:
        context = FakeContext(self)
        self._contexts.append(context)
        return context


class FakeRuntime:
    def __init__(self, trt: FakeTrt, logger: Any) -> None:
        self._trt = trt

    def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
        trt = self._trt
        if bytes(data) != PLAN_BYTES:
            trt._logger.errors.append("fake TensorRT error: the plan is not one of the stand-in's")
            return None
        engine = FakeEngine(trt)
        trt._engines.append(engine)
        return engine


class FakeTrt:
    """The ``tensorrt`` module as the runtime uses it."""

    class TensorIOMode:
        INPUT, OUTPUT = "INPUT", "OUTPUT"

    class TensorLocation:
        DEVICE = "DEVICE"

    class TensorFormat:
        LINEAR = "LINEAR"

    class DataType:
        FLOAT, HALF, INT8, INT32, UINT8, BOOL = "FLOAT", "HALF", "INT8", "INT32", "UINT8", "BOOL"

    def __init__(self, fake: FakeCuda, profiles: list[BatchProfile], outputs: tuple[str, ...] = ("logits",),
                 version: str = TRT_VERSION) -> None:
        assert version in TRT_VERSIONS.values(), f"the stand-in claims only {sorted(TRT_VERSIONS.values())}"
        self.__version__ = version
        self._fake = fake
        self._profiles = profiles
        self._outputs = outputs
        self._engines: list[FakeEngine] = []
        self._knobs = Knobs()
        self._logger = FakeLogger()

    def Runtime(self, logger: Any) -> FakeRuntime:  # noqa: N802 -- TensorRT's name
        return FakeRuntime(self, logger)


@dataclasses.dataclass
class StandIns:
    """The installed stand-ins and what a test reads from them."""

    cuda: FakeCuda
    trt: FakeTrt

    @property
    def knobs(self) -> Knobs:
        return self.trt._knobs

    @property
    def logger(self) -> FakeLogger:
        return self.trt._logger

    @property
    def engines(self) -> list[FakeEngine]:
        return self.trt._engines

    def contexts(self) -> list[FakeContext]:
        return [c for e in self.trt._engines for c in e._contexts]

    def executions(self, context: int | None = None) -> list[Execution]:
        """Kernels run, by every context or by the ``context``-th one created."""
        contexts = self.contexts() if context is None else [self.contexts()[context]]
        return [e for c in contexts for e in c._executions]

    def profile_switches(self, context: int = 0) -> int:
        return self.contexts()[context]._profile_switches


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
                                   plan_sha256=manifest.files[PLAN_NAME].sha256,
                                   plan_bytes=manifest.files[PLAN_NAME].bytes, built="2026-11-24T00:00:00+00:00")
    manifest.write(dst)
    return dst


def install(monkeypatch: Any, profiles: list[BatchProfile], outputs: tuple[str, ...] = ("logits",),
            version: str = TRT_VERSION) -> StandIns:
    """Patch the TensorRT backend onto the stand-ins (TensorRT ``version``); returns them for inspection."""
    from trtinfer.runtime import loader
    from trtinfer.runtime.backends.tensorrt import devices, lanes, runner
    from trtinfer.runtime.backends.tensorrt import loader as tensorrt_loader

    fake = fake_cuda.install(monkeypatch)
    trt = FakeTrt(fake, profiles, outputs, version)
    monkeypatch.setattr(devices, "gpu_info", lambda device=0: dict(GPU, device=device))
    monkeypatch.setattr(devices, "set_device", lambda device: None)
    for module in (runner, lanes):  # the CUDA layer the backend runs on
        monkeypatch.setattr(module, "cuda", fake)
    monkeypatch.setattr(tensorrt_loader, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(tensorrt_loader, "trt_logger", lambda: trt._logger)
    monkeypatch.setattr(loader, "_tensorrt_usable",
                        lambda manifest, directory, options: (PLAN_NAME in manifest.files, "fake TensorRT on Fake GPU"))
    return StandIns(cuda=fake, trt=trt)
