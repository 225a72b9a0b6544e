"""Optimization profiles for the batch dimension: ``--batch MIN:OPT:MAX``, parsed and checked.

Pure Python (no TensorRT): the engine build turns each profile into one TensorRT optimization
profile, the manifest records them (:class:`trtinfer.manifest.BatchProfile`, the one profile
type), and the runtime picks the profile whose range holds a batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from trtinfer.errors import TrtInferError
from trtinfer.manifest import BatchProfile
from trtinfer.runtime.options import MAX_BATCH_LIMIT

DEFAULT_MIN_BATCH = 1
DEFAULT_OPT_BATCH = 32
DEFAULT_MAX_BATCH = 256
DEFAULT_BATCH_SPEC = f"{DEFAULT_MIN_BATCH}:{DEFAULT_OPT_BATCH}:{DEFAULT_MAX_BATCH}"
# MAX_BATCH_LIMIT: a sanity bound, not a TensorRT limit (a typo such as 1:32:25600 should not try to
# plan for it); the runtime's own option bound, so an engine profile never exceeds what load() accepts.
MAX_PROFILES = 8

_FORMAT_HINT = "write --batch MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, e.g. --batch 1:32:256 (or one number for a fixed batch)"


def batch_profile(min_batch: int, opt_batch: int, max_batch: int) -> BatchProfile:
    """A profile from user input: the record's own checks, worded for ``--batch``, and the bound."""
    try:
        profile = BatchProfile(min_batch, opt_batch, max_batch)
    except ValueError as exc:
        raise TrtInferError(f"--batch: {exc}", hint=_FORMAT_HINT) from None
    if profile.max > MAX_BATCH_LIMIT:
        raise TrtInferError(f"batch profile {profile}: MAX {profile.max} is above {MAX_BATCH_LIMIT}",
                            hint="use a smaller MAX; larger batches gain no throughput on one GPU")
    return profile


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
    return batch_profile(*values)


def validate_profiles(profiles: Iterable[BatchProfile]) -> list[BatchProfile]:
    """Sort by MIN and refuse overlaps and duplicates: the runtime picks a profile by batch size."""
    ordered = sorted(batch_profile(p.min, p.opt, p.max) for p in profiles)  # the bound, for Python callers too
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


def select_profile(profiles: Sequence[BatchProfile], batch: int) -> int | None:
    """Index of the profile whose range holds ``batch``; None when no profile does."""
    return next((i for i, p in enumerate(profiles) if p.covers(batch)), None)


def describe_profiles(profiles: Sequence[BatchProfile]) -> str:
    return ", ".join(str(p) for p in profiles)
