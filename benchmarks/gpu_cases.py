"""The GPU peers ``trtinfer bench`` times on a GPU host: eager PyTorch on CUDA (FP32/FP16, channels-last),
Torch-TensorRT, and ONNX Runtime's CUDA and TensorRT execution providers. Each skips with its reason where
this machine has no GPU or the library is missing (see ``cases.py`` for what a case is)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer.manifest import ONNX_NAME, Manifest
from trtinfer.versions import module_available

from .cases import INSTALL, Case, CaseInfo, Skip, TorchCase, timed


def cuda_skip_reason() -> str | None:
    """Why no CUDA case can run here (None: torch sees a GPU)."""
    if not module_available("torch"):
        return "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch on this machine"
    return None


class TorchCudaCase(TorchCase):
    """Eager PyTorch on the GPU, channels-last, FP32 or FP16 (autocast-free ``.half()``); host input is
    copied to the device inside the timed call, as a server's would be."""

    def __init__(self, model_factory: Callable[[], Any], precision: str) -> None:
        super().__init__("torch-cuda", model_factory, threads=1, precision=precision, kind="peer", device="cuda",
                         note="eager CUDA, channels-last, host input copied in the timed call")

    def prepare(self, model: Any) -> Any:
        reason = cuda_skip_reason()
        if reason:
            raise Skip(reason)
        import torch

        model = model.to("cuda", memory_format=torch.channels_last)
        return model.half() if self.info.precision == "fp16" else model

    def infer(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(x).to("cuda", non_blocking=False).contiguous(memory_format=torch.channels_last)
            if self.info.precision == "fp16":
                t = t.half()
            return self.module(t).float().cpu().numpy()

    def sync(self) -> None:
        import torch

        torch.cuda.synchronize()


def shape_range(batch_sizes: Sequence[int], row_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """``torch_tensorrt.Input``'s ``min_shape``/``opt_shape``/``max_shape`` for an engine that is timed at
    ``batch_sizes`` (every batch the bench runs it at lies in the range; a static batch-1 engine fails or
    recompiles at the others). OPT, the shape TensorRT tunes its kernels for, is the upper median."""
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch sizes must be positive: {list(batch_sizes)}")
    opt = sizes[len(sizes) // 2]
    return {"min_shape": (sizes[0], *row_shape), "opt_shape": (opt, *row_shape), "max_shape": (sizes[-1], *row_shape)}


class TorchTensorRTCase(TorchCudaCase):
    """Torch-TensorRT (dynamo) compiled over the range of batch sizes the bench times it at."""

    def __init__(self, model_factory: Callable[[], Any], precision: str, example: np.ndarray,
                 batch_sizes: Sequence[int]) -> None:
        super().__init__(model_factory, precision)
        self.info.backend = "torch-tensorrt"
        self.shapes = shape_range(batch_sizes, tuple(example.shape[1:]))
        self.info.note = (f"torch_tensorrt.compile (dynamo), batch {self.shapes['min_shape'][0]}.."
                          f"{self.shapes['max_shape'][0]} (opt {self.shapes['opt_shape'][0]}), host input copied "
                          "in the timed call")

    def prepare(self, model: Any) -> Any:
        if not module_available("torch_tensorrt"):
            raise Skip(f"Torch-TensorRT is not installed; {INSTALL['torch-tensorrt']}")
        model = super().prepare(model)
        import torch
        import torch_tensorrt

        dtype = torch.half if self.info.precision == "fp16" else torch.float
        return compile_torch_tensorrt(torch_tensorrt, model, self.shapes, dtype)


def compile_torch_tensorrt(torch_tensorrt: Any, model: Any, shapes: dict[str, tuple[int, ...]], dtype: Any) -> Any:
    """``torch_tensorrt.compile`` with one dynamic-batch ``Input``. Current releases name the argument
    ``arg_inputs`` (``inputs`` is still accepted); older ones know only ``inputs``."""
    import inspect

    spec = [torch_tensorrt.Input(**shapes, dtype=dtype)]
    key = "arg_inputs" if "arg_inputs" in inspect.signature(torch_tensorrt.compile).parameters else "inputs"
    return torch_tensorrt.compile(model, ir="dynamo", **{key: spec}, enabled_precisions={dtype})


class OrtGpuCase(Case):
    """ONNX Runtime's CUDA or TensorRT execution provider on our ONNX model."""

    PROVIDERS = {"ort-cuda": "CUDAExecutionProvider", "ort-tensorrt": "TensorrtExecutionProvider"}

    def __init__(self, backend: str, artifact: Path, manifest: Manifest) -> None:
        super().__init__(CaseInfo(backend, manifest.precision, "cuda", "peer"))
        self.path = artifact / ONNX_NAME
        self.session: Any = None

    def open(self) -> None:
        reason = cuda_skip_reason() if module_available("torch") else None
        if not module_available("onnxruntime"):
            raise Skip(f"ONNX Runtime is not installed; {INSTALL[self.info.backend]}")
        import onnxruntime as ort

        from trtinfer.runtime.backends.onnxruntime import loader

        provider = self.PROVIDERS[self.info.backend]
        if provider not in ort.get_available_providers():
            raise Skip(f"this ONNX Runtime has no {provider}; {INSTALL[self.info.backend]}")
        if reason:
            raise Skip(reason)
        with timed(self):
            self.session = loader.session(self.path, providers=[provider])
        if self.session.get_providers()[0] != provider:
            raise Skip(f"ONNX Runtime fell back to {self.session.get_providers()[0]} ({provider} failed to start)")
        self._input = self.session.get_inputs()[0].name

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: x})[0]  # run() returns host arrays: synchronous

    def close(self) -> None:
        self.session = None
