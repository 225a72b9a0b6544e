"""The benchmark's records and files: ``results.json`` (versioned), ``results.csv``, and ``--compare``.

One :class:`CaseResult` per backend x precision x batch size x scenario (x concurrency for the
server scenario). ``results.json`` holds ``schema``, ``schema_version``, ``environment``,
``settings`` and ``cases``; a change to a record's fields bumps :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from trtinfer.atomic import atomic_file
from trtinfer.errors import DataError
from trtinfer.files import read_bounded

SCHEMA = "trtinfer-bench"
SCHEMA_VERSION = 1
MAX_RESULTS_BYTES = 64 << 20  # a results.json is tens of kB; refused above this unread
STATUSES = ("ok", "unstable", "failed", "skipped")
#: A ratio between two runs counts as a change only beyond this, or beyond the cases' own noise.
MIN_NOISE = 0.10


@dataclass
class CaseResult:
    backend: str
    precision: str
    device: str
    batch_size: int | None
    scenario: str  # single-stream (batch 1, one caller), offline (a larger batch, one caller), server
    status: str = "ok"
    reason: str = ""
    kind: str = "ours"  # ours | baseline | peer
    concurrency: int | None = None  # server scenario: concurrent clients
    throughput: float | None = None  # images per second (median over windows)
    latency_ms: dict[str, float] = field(default_factory=dict)  # min/mean/p50/p90/p95/p99/max/std
    speedup_vs_eager: float | None = None  # throughput / torch-eager FP32 at the same batch size
    accuracy: float | None = None  # top-1 on the eval images (fraction), None without --eval-data
    accuracy_drop_points: float | None = None  # eager FP32 top-1 minus this, in points
    top1_agreement: float | None = None  # with eager FP32 on the eval images
    correctness: dict[str, Any] = field(default_factory=dict)  # the check against eager FP32
    windows: list[float] = field(default_factory=list)  # throughput of each timed window
    spread: float | None = None  # max/min - 1 over the last three windows
    build_seconds: float | None = None  # load / trace / compile time (first-call compiles included)
    rss_growth_mb: float | None = None  # RSS growth of this process while the case loaded and first ran
    gpu: dict[str, Any] = field(default_factory=dict)  # GPU memory; H2D / compute / D2H split
    options: dict[str, Any] = field(default_factory=dict)  # threads, spin, the backend auto chose, ...
    note: str = ""

    @property
    def key(self) -> tuple:
        variant = self.options.get("variant")
        return (self.backend, variant, self.precision, self.device, self.scenario, self.batch_size, self.concurrency)

    @property
    def label(self) -> str:
        variant = self.options.get("variant")
        chosen = self.options.get("chosen")
        name = self.backend + (f" ({variant})" if variant else "") + (f" -> {chosen}" if chosen else "")
        return name

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _finite(value: Any) -> Any:
    """Strict JSON: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@dataclass
class BenchResults:
    environment: dict[str, Any]
    settings: dict[str, Any]
    cases: list[CaseResult]
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "environment": _finite(self.environment),
                "settings": _finite(self.settings), "summary": _finite(self.summary),
                "cases": [c.to_dict() for c in self.cases]}

    def write_json(self, path: Path) -> Path:
        with atomic_file(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, allow_nan=False, default=str)  # paths as strings
            f.write("\n")
        return path

    def write_csv(self, path: Path) -> Path:
        columns = ["backend", "variant", "chosen", "precision", "device", "kind", "scenario", "batch_size",
                   "concurrency", "status", "throughput", *(f"latency_{k}_ms" for k in
                                                            ("min", "mean", "p50", "p90", "p95", "p99", "max", "std")),
                   "speedup_vs_eager", "accuracy", "accuracy_drop_points", "top1_agreement", "spread",
                   "build_seconds", "rss_growth_mb", "threads", "reason"]
        with atomic_file(path, "w") as f:
            writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            for c in self.cases:
                row = {k: getattr(c, k, None) for k in columns if hasattr(c, k)}
                row.update({f"latency_{k}_ms": v for k, v in c.latency_ms.items()})
                row["variant"] = c.options.get("variant")
                row["chosen"] = c.options.get("chosen")
                row["threads"] = c.options.get("threads")
                writer.writerow(_finite(row))
        return path

    @classmethod
    def read(cls, path: Path) -> BenchResults:
        raw = read_bounded(path, MAX_RESULTS_BYTES, "bench results", DataError,
                           hint="pass a results.json written by `trtinfer bench --out DIR`")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise DataError(f"cannot read {path}: {exc}", hint="pass a results.json written by `trtinfer bench`") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise DataError(f"{path} is not a trtinfer bench results file",
                            hint="pass a results.json written by `trtinfer bench --out DIR`")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise DataError(f"{path} has results schema_version {data.get('schema_version')!r}; this trtinfer "
                            f"reads {SCHEMA_VERSION}", hint="run the older benchmark again with this trtinfer")
        cases = data.get("cases")
        if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
            raise DataError(f"{path}: 'cases' is not a list of records", hint="write it again with trtinfer bench")
        try:
            records = [CaseResult.from_dict(c) for c in cases]
        except TypeError as exc:
            raise DataError(f"{path}: a case record is malformed ({exc})", hint="write it again with trtinfer bench") from None
        return cls(environment=data.get("environment") or {}, settings=data.get("settings") or {},
                   cases=records, summary=data.get("summary") or {})


# -- comparing two runs -------------------------------------------------------------------------

@dataclass
class Change:
    key: tuple
    label: str
    old: float
    new: float
    noise: float
    p99_old: float | None = None
    p99_new: float | None = None

    @property
    def ratio(self) -> float:
        return self.new / self.old if self.old else math.inf

    @property
    def verdict(self) -> str:
        if self.ratio < 1.0 - self.noise:
            return "regression"
        if self.ratio > 1.0 + self.noise:
            return "improvement"
        return "within noise"


def compare(old: BenchResults, new: BenchResults) -> tuple[list[Change], list[str]]:
    """Throughput ratios new/old for cases measured in both runs; and notes on what did not match.

    The noise allowance of a pair is the larger of :data:`MIN_NOISE` and twice the larger window
    spread of its two measurements: a change inside it is not called a regression.
    """
    notes = []
    old_cases = {c.key: (c, c.throughput) for c in old.cases if c.throughput}  # each timed row, with its rate
    changes = []
    for c in new.cases:
        if not c.throughput:
            continue
        found = old_cases.pop(c.key, None)
        if found is None:
            notes.append(f"only in the new run: {c.label} {c.precision} {c.device} {c.scenario} "
                         f"batch {c.batch_size}" + (f" x{c.concurrency}" if c.concurrency else ""))
            continue
        before, old_rate = found
        noise = max(MIN_NOISE, 2 * max(before.spread or 0.0, c.spread or 0.0))
        label = f"{c.label} {c.precision} {c.device} " + (
            f"server x{c.concurrency}" if c.scenario == "server" else f"batch {c.batch_size}")
        changes.append(Change(c.key, label, old_rate, c.throughput, noise,
                              before.latency_ms.get("p99"), c.latency_ms.get("p99")))
    for c, _ in old_cases.values():
        notes.append(f"only in the old run: {c.label} {c.precision} {c.device} {c.scenario} batch {c.batch_size}")
    old_cpu = (old.environment.get("cpu") or {}).get("model")
    new_cpu = (new.environment.get("cpu") or {}).get("model")
    if old_cpu and new_cpu and old_cpu != new_cpu:
        notes.append(f"the runs are from different CPUs ({old_cpu} vs {new_cpu}): compare ratios within a run instead")
    return changes, notes
