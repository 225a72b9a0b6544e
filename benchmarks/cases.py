"""The things ``trtinfer bench`` times: our runtime on each backend, and the peers a user would pick instead.

Every case takes the same preprocessed float32 NCHW batch and returns logits as numpy, so the
harness treats them alike. A case that cannot run here raises :class:`Skip` from ``open`` with
the reason (and the install command where one helps); the bench reports it as a skipped row.

* ours: ``trtinfer.load`` on ``onnxruntime``, ``openvino``, ``tensorrt`` and ``auto`` (whatever
  ``load`` picks), one per artifact precision;
* the mission's CPU baselines: ``torch-eager`` FP32, ``torchscript`` (trace, freeze,
  ``optimize_for_inference``), ``torch-dynamic-quant`` (``quantize_dynamic`` on Linear layers);
* what a user would pick instead: ``torch-compile`` (inductor), ``torch-int8`` (PT2E with the X86
  Inductor quantizer from torchao), bare ONNX Runtime sessions (intra-op spinning on and off); OpenVINO
  as its users run it (``openvino_peers.py``: its own ``benchmark_app``, and NNCF's INT8 IR); on a
  GPU host, the peers in ``gpu_cases.py``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trtinfer.manifest import ONNX_NAME, PLAN_NAME, Manifest
from trtinfer.versions import module_available

from .measure import CallersWorkload, CallWorkload

if TYPE_CHECKING:
    from .openvino_peers import AppWorkload

log = logging.getLogger(__name__)

OURS = ("auto", "onnxruntime", "openvino", "tensorrt")
TORCH_CPU = ("torch-eager", "torchscript", "torch-dynamic-quant", "torch-compile", "torch-int8")
PEERS_CPU = ("onnxruntime-bare", "openvino-nncf", "openvino-benchmark_app")
GPU_PEERS = ("torch-cuda", "torch-tensorrt", "ort-cuda", "ort-tensorrt")
ALL_BACKENDS = OURS + TORCH_CPU + PEERS_CPU + GPU_PEERS
#: What a user installs to get a skipped backend.
INSTALL = {
    "openvino": "pip install 'trtinfer[openvino]'",
    "onnxruntime": "pip install 'trtinfer[onnxruntime]'",
    "onnxruntime-bare": "pip install 'trtinfer[onnxruntime]'",
    "tensorrt": "pip install 'trtinfer[tensorrt]' on a GPU host, then trtinfer build --from-onnx DIR",
    "torch-int8": "pip install torchao",
    "openvino-nncf": "pip install 'trtinfer[bench]' (nncf and openvino)",
    "openvino-benchmark_app": "pip install 'trtinfer[openvino]' (the openvino wheel installs benchmark_app)",
    "torch-tensorrt": "pip install torch-tensorrt",
    "ort-cuda": "pip install onnxruntime-gpu (on a GPU host)",
    "ort-tensorrt": "pip install onnxruntime-gpu and TensorRT (on a GPU host)",
}


class Skip(Exception):
    """This case cannot run here; ``str(exc)`` says why."""


@dataclass
class CaseInfo:
    """What a row of the results is: backend, precision and device, and who it belongs to."""

    backend: str
    precision: str
    device: str = "cpu"
    kind: str = "ours"  # ours | baseline | peer
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def label(self) -> str:
        extra = self.options.get("variant")
        return f"{self.backend}{f' ({extra})' if extra else ''} {self.precision} {self.device}"


class Case:
    """One runnable configuration. ``open`` prepares it (load, trace, compile), ``infer`` runs a
    batch, ``close`` frees it. ``build_seconds`` is what ``open`` (and first-call compiles) cost."""

    def __init__(self, info: CaseInfo) -> None:
        self.info = info
        self.build_seconds = 0.0
        self.extra: dict[str, Any] = {}

    def open(self) -> None:
        raise NotImplementedError

    def infer(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def sync(self) -> None:
        """Wait for device work (GPU cases); timings include it."""

    def workload(self, x: np.ndarray) -> CallWorkload | CallersWorkload | AppWorkload:
        """How the timing runs this case at ``x``'s batch size: calls timed here, or a tool timing itself."""
        return CallWorkload(lambda: self.infer(x), len(x), self.sync if self.info.device == "cuda" else None)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def timed(case: Case) -> Iterator[None]:
    start = time.perf_counter()
    yield
    case.build_seconds += time.perf_counter() - start


# -- ours: the trtinfer runtime --------------------------------------------------------------------

class RuntimeCase(Case):
    """``trtinfer.load(artifact, backend=...)``; for ``auto`` the chosen backend goes into options."""

    def __init__(self, artifact: Path, manifest: Manifest, backend: str, threads: int,
                 load_options: dict[str, Any] | None = None) -> None:
        super().__init__(CaseInfo(backend, manifest.precision, "cuda" if backend == "tensorrt" else "cpu", "ours",
                                  {"threads": threads, "artifact": str(artifact)}))
        self.artifact = artifact
        self.manifest = manifest
        self.load_options = dict(load_options or {})
        self.model: Any = None

    def open(self) -> None:
        import trtinfer
        from trtinfer.errors import BackendUnavailable, TrtInferError

        backend = self.info.backend
        if backend == "tensorrt" and PLAN_NAME not in self.manifest.files:
            raise Skip(f"the {self.manifest.precision} artifact has no {PLAN_NAME} (built without a GPU); "
                       f"{INSTALL['tensorrt']}")
        options = {"threads": self.info.options["threads"], **self.load_options}
        if backend == "tensorrt":
            options.pop("threads")
        try:
            with timed(self):
                self.model = trtinfer.load(self.artifact, backend=backend, **options)
        except BackendUnavailable as exc:
            install = INSTALL.get(backend)
            raise Skip(exc.one_line() + (f"; {install}" if install and install not in exc.one_line() else "")) from exc
        except TrtInferError as exc:
            raise Skip(exc.one_line()) from exc
        if backend == "auto":
            self.info.options["chosen"] = self.model.execution  # e.g. openvino-bf16: the backend and its precision
            if self.model.single_execution:  # one-row calls run on another execution, measured faster there
                self.info.options["single_rows"] = self.model.single_execution
            self.info.device = "cuda" if self.model.backend == "tensorrt" else "cpu"
            self.info.note = self.model.backend_reason
        if self.model.backend == "onnxruntime":
            self.info.options["spin"] = self.model.spin
            self.info.options["spin_reason"] = self.model.spin_reason

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.model.infer(x)

    def close(self) -> None:
        if self.model is not None:
            self.model.close()
            self.model = None


class ConcurrentRuntimeCase(RuntimeCase):
    """``trtinfer.load(artifact, backend="openvino", openvino_streams=N)`` driven by N callers at once, each
    calling ``infer`` on its own batch back to back: the throughput configuration, measured the way
    ``benchmark_app -hint throughput`` measures (N requests in flight, none waiting for another)."""

    def __init__(self, artifact: Path, manifest: Manifest, threads: int, callers: int) -> None:
        super().__init__(artifact, manifest, "openvino", threads, {"openvino_streams": callers})
        self.callers = callers
        self.info.options["variant"] = f"{callers} streams, {callers} callers"
        self.info.options["callers"] = callers
        self.info.note = (f"{callers} callers at once, each running its own batches on OpenVINO's throughput "
                          f"configuration ({callers} streams): what benchmark_app -hint throughput measures")

    def workload(self, x: np.ndarray) -> CallersWorkload:
        batches = [x] + [x.copy() for _ in range(self.callers - 1)]
        infer = self.model.infer
        return CallersWorkload(lambda i: infer(batches[i]), len(x), self.callers)


class BareOrtCase(Case):
    """A bare ``onnxruntime.InferenceSession`` on the FP32 model: the peer our ONNX Runtime rows must
    match. The session comes from trtinfer's ONNX Runtime loader with the options every session
    gets (ONNX Runtime's recommended CPU settings for a fixed thread count), and intra-op spinning
    on or off (its default is on)."""

    def __init__(self, artifact: Path, manifest: Manifest, threads: int, spin: bool) -> None:
        super().__init__(CaseInfo("onnxruntime-bare", manifest.precision, "cpu", "peer",
                                  {"threads": threads, "spin": spin, "variant": "spin" if spin else "no spin"}))
        self.path = artifact / ONNX_NAME
        self.session: Any = None

    def open(self) -> None:
        if not module_available("onnxruntime"):
            raise Skip(f"ONNX Runtime is not installed; {INSTALL['onnxruntime-bare']}")
        from trtinfer.runtime.backends.onnxruntime import loader

        with timed(self):
            self.session = loader.session(self.path, threads=int(self.info.options["threads"]),
                                          spin=bool(self.info.options["spin"]))
        self._input = self.session.get_inputs()[0].name

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: x})[0]

    def close(self) -> None:
        self.session = None


# -- PyTorch on the CPU ---------------------------------------------------------------------------

class TorchCase(Case):
    """A PyTorch module run under ``inference_mode`` with ``threads`` intra-op threads."""

    def __init__(self, backend: str, model_factory: Callable[[], Any], threads: int, precision: str = "fp32",
                 kind: str = "baseline", device: str = "cpu", note: str = "") -> None:
        super().__init__(CaseInfo(backend, precision, device, kind, {"threads": threads}, note))
        self.model_factory = model_factory
        self.module: Any = None

    def _set_threads(self) -> None:
        import torch

        torch.set_num_threads(int(self.info.options["threads"]))

    def prepare(self, model: Any) -> Any:
        """The module to time, made from the FP32 eager model."""
        return model

    def open(self) -> None:
        self._set_threads()
        with timed(self):
            self.module = self.prepare(self.model_factory())

    def infer(self, x: np.ndarray) -> np.ndarray:
        import torch

        self._set_threads()
        with torch.inference_mode():
            return self.module(torch.from_numpy(x)).float().numpy()

    def close(self) -> None:
        self.module = None


class TorchScriptCase(TorchCase):
    def __init__(self, model_factory: Callable[[], Any], threads: int, example: np.ndarray) -> None:
        super().__init__("torchscript", model_factory, threads,
                         note="torch.jit.trace, freeze, optimize_for_inference (conv-bn folding, MKLDNN)")
        self.example = example

    def prepare(self, model: Any) -> Any:
        import torch

        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model.eval(), torch.from_numpy(self.example[:1].copy()))
            frozen = torch.jit.freeze(traced)
            return torch.jit.optimize_for_inference(frozen)

    def infer(self, x: np.ndarray) -> np.ndarray:
        import torch

        self._set_threads()
        with torch.no_grad():  # frozen TorchScript with MKLDNN weights refuses inference tensors
            return self.module(torch.from_numpy(x)).float().numpy()


class TorchDynamicQuantCase(TorchCase):
    """``quantize_dynamic`` on Linear layers: INT8 weights and per-batch activation scales for the
    classifier only; convolutions stay FP32, so a CNN barely changes (that is the point of the row)."""

    NOTE = "quantize_dynamic quantizes Linear layers only; convolutions stay FP32, so a CNN barely changes"

    def __init__(self, model_factory: Callable[[], Any], threads: int) -> None:
        super().__init__("torch-dynamic-quant", model_factory, threads, precision="int8", note=self.NOTE)

    def prepare(self, model: Any) -> Any:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
            try:
                from torch.ao.quantization import quantize_dynamic
            except ImportError:
                pass
            else:
                self.info.options["implementation"] = "torch.ao.quantization.quantize_dynamic"
                return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        if not module_available("torchao"):
            raise Skip("torch.ao.quantization.quantize_dynamic is gone from this torch and torchao is not "
                       f"installed; {INSTALL['torch-int8']}")
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        self.info.options["implementation"] = "torchao Int8DynamicActivationInt8WeightConfig"
        quantize_(model, Int8DynamicActivationInt8WeightConfig(),
                  filter_fn=lambda module, _: isinstance(module, torch.nn.Linear))
        return model


class TorchCompileCase(TorchCase):
    """``torch.compile`` (inductor); each new batch size compiles once, counted as build time."""

    def __init__(self, model_factory: Callable[[], Any], threads: int) -> None:
        super().__init__("torch-compile", model_factory, threads, kind="peer",
                         note="torch.compile (inductor), one compile per batch size")
        self._compiled_sizes: set[int] = set()

    def prepare(self, model: Any) -> Any:
        import torch

        return torch.compile(model, backend="inductor", dynamic=False)

    def infer(self, x: np.ndarray) -> np.ndarray:
        if len(x) not in self._compiled_sizes:
            self._compiled_sizes.add(len(x))
            with timed(self):
                return super().infer(x)
        return super().infer(x)


class TorchInt8Case(TorchCase):
    """PyTorch's own static INT8 for x86: PT2E export, X86InductorQuantizer (torchao), calibration on
    the same images as ours, ``convert_pt2e`` and ``torch.compile``."""

    def __init__(self, model_factory: Callable[[], Any], threads: int, calibration: np.ndarray | None) -> None:
        super().__init__("torch-int8", model_factory, threads, precision="int8", kind="peer",
                         note="PT2E + X86InductorQuantizer (torchao), calibrated on our calibration images")
        self.calibration = calibration

    def prepare(self, model: Any) -> Any:
        if self.calibration is None:
            raise Skip("needs calibration images (--calib-data, or a CIFAR --eval-data folder)")
        if not module_available("torchao"):
            raise Skip(f"torchao is not installed; {INSTALL['torch-int8']}")
        import torch

        try:
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

            example = torch.from_numpy(self.calibration[:2].copy())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exported = torch.export.export(model.eval(), (example,)).module()
                quantizer = xiq.X86InductorQuantizer()
                quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
                prepared = prepare_pt2e(exported, quantizer)
                with torch.no_grad():
                    for start in range(0, min(len(self.calibration), 256), 32):
                        prepared(torch.from_numpy(self.calibration[start:start + 32].copy()))
                converted = convert_pt2e(prepared)
                return torch.compile(converted)
        except Skip:
            raise
        except Exception as exc:  # torchao's PT2E path breaks between torch releases
            import torchao

            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise Skip(f"torchao {torchao.__version__} PT2E INT8 failed with torch {torch.__version__}: "
                       f"{type(exc).__name__}: {first}") from exc

    def infer(self, x: np.ndarray) -> np.ndarray:
        import torch

        self._set_threads()
        with torch.no_grad():
            return self.module(torch.from_numpy(x)).float().numpy()


# -- GPU peers ---------------------------------------------------------------------------------
