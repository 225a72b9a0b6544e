"""The engine section: the batch profiles and what the engine stage recorded about ``model.plan``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .schema import PLAN_NAME, JsonValue, Record


@dataclass(frozen=True, order=True)
class BatchProfile:
    """One optimization profile's batch range; ``opt`` is the size TensorRT tunes its kernels for.

    The one profile type of the build (``--batch MIN:OPT:MAX``), the manifest's engine record and
    the runtime's chunk planning. An invalid range raises ValueError; each caller words it for
    its user (a CLI option, a manifest field, an engine).
    """

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        values = (self.min, self.opt, self.max)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ValueError(f"batch profile {values} must hold integers")
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"batch profile {self} needs 1 <= MIN <= OPT <= MAX")

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"

    def covers(self, batch: int) -> bool:
        return self.min <= batch <= self.max

    def shapes(self, sample_shape: Any) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) full input shapes for a per-sample shape such as (3, 224, 224)."""
        rest = tuple(int(d) for d in sample_shape)
        if any(d < 1 for d in rest):
            raise ValueError(f"input shape {list(rest)} after the batch dimension must be static and positive")
        return (self.min, *rest), (self.opt, *rest), (self.max, *rest)

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    @classmethod
    def from_dict(cls, data: Any) -> BatchProfile:
        """The inverse of :meth:`to_dict`; a record without integer min, opt and max raises ValueError."""
        if not isinstance(data, dict) or not {"min", "opt", "max"} <= data.keys():
            raise ValueError(f"batch profile {data!r} must be a {{min, opt, max}} record")
        return cls(data["min"], data["opt"], data["max"])


@dataclass(frozen=True)
class TimingCacheRecord(Record):
    """``engine.timing_cache``: the TensorRT timing cache the build used, and whether it held timings."""

    path: str
    reused: bool


@dataclass(frozen=True)
class EngineEvaluationRecord(Record):
    """``engine.evaluation``: the engine against its own ONNX model (ONNX Runtime) on the evaluation
    rows, with the accuracy guard's verdict; empty when the engine was not evaluated."""

    checked: bool | None = None
    reference: str | None = None  # what the engine was compared with
    source: str | None = None
    samples: int | None = None
    top1_reference: float | None = None
    top1: float | None = None
    top1_drop_points: float | None = None
    top1_agreement: float | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    finite: bool | None = None
    engine_seconds: float | None = None
    max_drop_points: float | None = None
    passed: bool | None = None
    allowed: bool | None = None


@dataclass
class EngineRecord:
    """What the engine stage recorded about ``model.plan``: where it was built and how.

    A TensorRT engine runs only on the TensorRT version and compute capability it was built
    with; the runtime checks both before deserialising (``check_plan_compatible``).
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    profiles: list[BatchProfile]  # in engine order: index i is TensorRT's profile i
    plan_sha256: str = ""
    plan_bytes: int = 0
    plan: str = PLAN_NAME
    driver: str | None = None
    device: int = 0
    build_seconds: float = 0.0
    layer_precisions: dict[str, int] = field(default_factory=dict)
    compute_layer_precisions: dict[str, int] = field(default_factory=dict)
    timing_cache: TimingCacheRecord | None = None  # written {} when None (schema 1-2 engines)
    opt_level: int | None = None
    workspace_mib: int | None = None
    strongly_typed: bool = True
    built: str = ""
    evaluation: EngineEvaluationRecord = field(default_factory=EngineEvaluationRecord)

    def to_dict(self) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = asdict(self)  # the plain fields in order, copied
        data["profiles"] = [p.to_dict() for p in self.profiles]
        data["timing_cache"] = self.timing_cache.to_dict() if self.timing_cache is not None else {}
        data["evaluation"] = self.evaluation.to_dict()
        return data
