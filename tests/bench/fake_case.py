"""A case that runs a fixed linear map in NumPy, and a manifest to plan from: the bench's planning, checks,
timing and report exercised without a model, a build or a backend."""

from __future__ import annotations

import numpy as np

from trtinfer.benchmarks.cases import Case, CaseInfo
from trtinfer.manifest import BatchProfile, EngineRecord, Manifest, PreprocessSpec, TensorSpec

CLASSES = 10
WEIGHTS = np.random.default_rng(1).standard_normal((3 * 4 * 4, CLASSES)).astype(np.float32)


class FakeCase(Case):
    """Logits ``x @ WEIGHTS`` plus ``shift``, with ``swap`` swapping two classes' logits (another network);
    ``fail_at`` batch sizes raise. Records the batch sizes it saw."""

    def __init__(self, backend: str = "onnxruntime", precision: str = "fp32", kind: str = "ours", shift: float = 0.0,
                 swap: bool = False, fail_at: tuple[int, ...] = ()) -> None:
        super().__init__(CaseInfo(backend, precision, "cpu", kind, {"threads": 1}))
        self.shift, self.swap, self.fail_at = shift, swap, fail_at
        self.seen: list[int] = []

    def open(self) -> None:
        pass

    def infer(self, x: np.ndarray) -> np.ndarray:
        self.seen.append(len(x))
        if len(x) in self.fail_at:
            raise RuntimeError(f"no batch {len(x)} here")
        logits = x.reshape(len(x), -1) @ WEIGHTS + self.shift
        return logits[:, ::-1] if self.swap else logits


def images(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 3, 4, 4)).astype(np.float32)


def manifest(precision: str = "fp32", engine: EngineRecord | None = None) -> Manifest:
    return Manifest(name="m", arch="resnet18", num_classes=CLASSES, labels=[str(i) for i in range(CLASSES)],
                    precision=precision, input=TensorSpec("input", [-1, 3, 4, 4]),
                    output=TensorSpec("logits", [-1, CLASSES]), preprocess=PreprocessSpec(4, 4, [0.5] * 3, [0.5] * 3),
                    engine=engine)


def engine(*profiles: tuple[int, int, int]) -> EngineRecord:
    return EngineRecord("10.9", "GPU", "9.0", [BatchProfile(*p) for p in profiles])
