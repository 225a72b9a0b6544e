"""Optimization profiles for the batch dimension: ``--batch MIN:OPT:MAX``, parsed and checked.

Pure Python (no TensorRT): the engine build turns each profile into one TensorRT optimization
profile, the manifest records them, and the runtime picks the profile whose range holds a batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from trtinfer.errors import ArtifactError, TrtInferError
from trtinfer.runtime.options import MAX_BATCH_LIMIT

DEFAULT_MIN_BATCH = 1
DEFAULT_OPT_BATCH = 32
DEFAULT_MAX_BATCH = 256
DEFAULT_BATCH_SPEC = f"{DEFAULT_MIN_BATCH}:{DEFAULT_OPT_BATCH}:{DEFAULT_MAX_BATCH}"
# MAX_BATCH_LIMIT: a sanity bound, not a TensorRT limit (a typo such as 1:32:25600 should not try to
# plan for it); the runtime's own option bound, so an engine profile never exceeds what load() accepts.
MAX_PROFILES = 8

_FORMAT_HINT = "write --batch MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, e.g. --batch 1:32:256 (or one number for a fixed batch)"


@dataclass(frozen=True, order=True)
class BatchProfile:
    """One batch range; ``opt`` is the size TensorRT tunes its kernels for."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        values = (self.min, self.opt, self.max)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise TrtInferError(f"batch profile {values} must hold integers", hint=_FORMAT_HINT)
        if self.min < 1:
            raise TrtInferError(f"batch profile {self}: MIN must be at least 1", hint=_FORMAT_HINT)
        if not self.min <= self.opt <= self.max:
            raise TrtInferError(f"batch profile {self}: needs MIN <= OPT <= MAX", hint=_FORMAT_HINT)
        if self.max > MAX_BATCH_LIMIT:
            raise TrtInferError(f"batch profile {self}: MAX {self.max} is above {MAX_BATCH_LIMIT}",
                                hint="use a smaller MAX; larger batches gain no throughput on one GPU")

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"

    def contains(self, batch: int) -> bool:
        return self.min <= batch <= self.max

    def shapes(self, sample_shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) full input shapes for a per-sample shape such as (3, 224, 224)."""
        rest = tuple(int(d) for d in sample_shape)
        if any(d < 1 for d in rest):
            raise TrtInferError(f"input shape {list(rest)} after the batch dimension must be static and positive",
                                hint="export the model with only the batch dimension dynamic")
        return (self.min, *rest), (self.opt, *rest), (self.max, *rest)

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    @classmethod
    def from_dict(cls, data: Any) -> BatchProfile:
        if not isinstance(data, dict) or not {"min", "opt", "max"} <= set(data):
            raise ArtifactError(f"engine profile {data!r} is not a {{min, opt, max}} record",
                                hint="rebuild the engine with `trtinfer build --from-onnx DIR`")
        try:
            return cls(int(data["min"]), int(data["opt"]), int(data["max"]))
        except (TypeError, ValueError, TrtInferError) as exc:
            raise ArtifactError(f"engine profile {data!r} is invalid: {exc}",
                                hint="rebuild the engine with `trtinfer build --from-onnx DIR`") from exc


DEFAULT_PROFILE = BatchProfile(DEFAULT_MIN_BATCH, DEFAULT_OPT_BATCH, DEFAULT_MAX_BATCH)


def parse_batch_profile(text: str) -> BatchProfile:
    """``"1:32:256"`` -> BatchProfile(1, 32, 256); ``"8"`` -> BatchProfile(8, 8, 8)."""
    raw = str(text).strip()
    parts = [p.strip() for p in raw.split(":")]
    if len(parts) not in (1, 3) or not all(parts):
        raise TrtInferError(f"--batch {raw!r} is not MIN:OPT:MAX", hint=_FORMAT_HINT)
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise TrtInferError(f"--batch {raw!r} holds a value that is not a whole number", hint=_FORMAT_HINT) from None
    if len(values) == 1:
        values *= 3
    return BatchProfile(*values)


def validate_profiles(profiles: Iterable[BatchProfile]) -> list[BatchProfile]:
    """Sort by MIN and refuse overlaps and duplicates: the runtime picks a profile by batch size."""
    ordered = sorted(profiles)
    if not ordered:
        raise TrtInferError("no batch profile given", hint=_FORMAT_HINT)
    if len(ordered) > MAX_PROFILES:
        raise TrtInferError(f"{len(ordered)} batch profiles given; at most {MAX_PROFILES} are supported",
                            hint="each profile adds build time and engine size; merge neighbouring ranges")
    for a, b in zip(ordered, ordered[1:]):
        if b.min <= a.max:
            raise TrtInferError(
                f"batch profiles {a} and {b} overlap (batch {b.min}..{min(a.max, b.max)} is in both)",
                hint="give non-overlapping ranges, e.g. --batch 1:1:8 --batch 16:64:256")
    return ordered


def parse_batch_profiles(texts: Iterable[str] | None) -> list[BatchProfile]:
    """Every ``--batch`` value, validated together; none given means the default 1:32:256."""
    texts = list(texts or [])
    if not texts:
        return [DEFAULT_PROFILE]
    return validate_profiles(parse_batch_profile(t) for t in texts)


def profiles_to_manifest(profiles: Sequence[BatchProfile]) -> list[dict[str, int]]:
    return [p.to_dict() for p in profiles]


def profiles_from_manifest(records: Any) -> list[BatchProfile]:
    """Profiles of a built engine, in engine order (index i is TensorRT's profile i)."""
    if not isinstance(records, list) or not records:
        raise ArtifactError("the manifest's engine section lists no batch profiles",
                            hint="rebuild the engine with `trtinfer build --from-onnx DIR`")
    profiles = [BatchProfile.from_dict(r) for r in records]
    try:
        ordered = validate_profiles(profiles)
    except TrtInferError as exc:
        raise ArtifactError(f"the manifest's engine profiles are invalid: {exc.message}",
                            hint="rebuild the engine with `trtinfer build --from-onnx DIR`") from exc
    if ordered != profiles:
        raise ArtifactError("the manifest's engine profiles are not in ascending order",
                            hint="rebuild the engine with `trtinfer build --from-onnx DIR`")
    return profiles


def select_profile(profiles: Sequence[BatchProfile], batch: int) -> int | None:
    """Index of the profile whose range holds ``batch``; None when no profile does."""
    for index, profile in enumerate(profiles):
        if profile.contains(batch):
            return index
    return None


def describe_profiles(profiles: Sequence[BatchProfile]) -> str:
    return ", ".join(str(p) for p in profiles)
