"""An engine into an artifact: ``model.plan`` built, evaluated against the artifact's own ONNX model,
recorded in the manifest and written with it; ``--from-onnx`` finishes a committed artifact atomically.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trtinfer.atomic import StagedDirectories
from trtinfer.defaults import FP16_MAX_DROP
from trtinfer.hashing import sha256_file
from trtinfer.manifest import ONNX_NAME, PLAN_NAME, EngineEvaluationRecord, EngineRecord, Manifest, TimingCacheRecord

from ..checks.accuracy_guard import AccuracyGuard
from ..logits import compare, run_onnx
from .layer_precisions import LayerSummary
from .profiles import describe_profiles
from .settings import EngineBuildSettings, Progress, read_artifact_for_engine, say
from .tensorrt_build import build_engine


def engine_record(*, tensorrt_version: str, gpu: dict[str, Any], settings: EngineBuildSettings, plan_sha256: str,
                  plan_bytes: int, build_seconds: float, summary: LayerSummary, timing_cache: Path,
                  timing_cache_reused: bool) -> EngineRecord:
    return EngineRecord(
        tensorrt_version=tensorrt_version, gpu_name=gpu["name"], compute_capability=gpu["compute_capability"],
        driver=gpu.get("driver"), device=settings.device, profiles=list(settings.profiles), plan=PLAN_NAME,
        plan_sha256=plan_sha256, plan_bytes=plan_bytes, build_seconds=round(build_seconds, 3),
        layer_precisions=summary.to_manifest(), compute_layer_precisions=summary.compute_precisions,
        timing_cache=TimingCacheRecord(path=str(timing_cache), reused=timing_cache_reused), opt_level=settings.opt_level,
        workspace_mib=settings.workspace_mib, strongly_typed=True,
        built=datetime.now(timezone.utc).isoformat(timespec="seconds"))


@dataclass
class EngineEvaluation:
    """Preprocessed evaluation images to run the new engine on, and the accuracy-guard settings."""

    x: Any  # float32 N x C x H x W, preprocessed with the artifact's preprocessing
    labels: Any  # int N
    source: str = ""
    max_drop: float | None = None  # top-1 points the engine may lose against its own ONNX model
    allow: bool = False  # keep an engine that fails the guard (recorded as allowed)


def _engine_drop_limit(precision: str, max_drop: float | None) -> float | None:
    """The guard's allowance; an FP32 engine may use TF32 tensor cores (TensorRT's default), so it is
    held to the FP16 allowance rather than to an exact match."""
    if max_drop is not None or precision != "fp32":
        return max_drop
    return FP16_MAX_DROP


def evaluate_engine(directory: Path, manifest: Manifest, evaluation: EngineEvaluation, device: int = 0,
                    progress: Progress | None = None) -> EngineEvaluationRecord:
    """Run the staged engine through the runtime and its ONNX model through ONNX Runtime on the same
    images; the accuracy guard applies to the engine's top-1 against the ONNX model's (its verdict is
    in the record returned, ``engine.evaluation``)."""
    import numpy as np

    from trtinfer.runtime.loader import open_tensorrt

    x = np.ascontiguousarray(evaluation.x, dtype=np.float32)
    say(progress, f"engine: evaluating on {len(x)} images ({evaluation.source or 'evaluation set'})")
    reference = run_onnx(directory / ONNX_NAME, x)
    started = time.perf_counter()
    with open_tensorrt(directory, manifest, device=device) as model:
        logits = np.asarray(model.infer(x), dtype=np.float32)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {"checked": True, "reference": "onnxruntime (same artifact)",
                              "source": evaluation.source, **compare(reference, logits, evaluation.labels),
                              "engine_seconds": round(seconds, 3)}
    AccuracyGuard().check(result, manifest.precision, _engine_drop_limit(manifest.precision, evaluation.max_drop),
                          evaluation.allow)
    say(progress, f"engine: top-1 {100 * result['top1']:.2f}% vs ONNX Runtime {100 * result['top1_reference']:.2f}%, "
                   f"agreement {100 * result['top1_agreement']:.2f}%, max |diff| {result['max_abs_diff']:.3g}")
    return EngineEvaluationRecord(**result)


def add_engine(directory: Path, manifest: Manifest, settings: EngineBuildSettings, progress: Progress | None = None,
               evaluation: EngineEvaluation | None = None) -> EngineRecord:
    """The engine stage inside a staged artifact directory: build ``model.plan`` from its ``model.onnx``,
    record it on ``manifest`` (the caller's, in hand), evaluate it when asked, write the manifest once.

    The caller owns the staging (a build's or ``--from-onnx``'s), so a failed build or accuracy guard
    leaves nothing behind when the staging is dropped.
    """
    built = build_engine(directory, settings, progress=progress, manifest=manifest)
    with open(directory / PLAN_NAME, "wb") as f:
        f.write(memoryview(built.plan))
        f.flush()
        os.fsync(f.fileno())
    plan_file = manifest.record_file(directory, PLAN_NAME)
    record = engine_record(
        tensorrt_version=built.tensorrt_version, gpu=built.gpu, settings=settings,
        plan_sha256=plan_file.sha256, plan_bytes=plan_file.bytes,
        build_seconds=built.build_seconds, summary=built.summary, timing_cache=built.timing_cache,
        timing_cache_reused=built.timing_cache_reused)
    manifest.engine = record
    manifest.versions["tensorrt"] = built.tensorrt_version
    if evaluation is not None:
        record.evaluation = evaluate_engine(directory, manifest, evaluation, settings.device, progress)
    manifest.write(directory)
    return record


def build_engine_into_artifact(artifact_dir: Path, settings: EngineBuildSettings, progress: Progress | None = None,
                               evaluation: EngineEvaluation | None = None,
                               manifest: Manifest | None = None) -> EngineRecord:
    """Build ``model.plan`` into a committed artifact directory (``--from-onnx``), atomically.

    The directory is replaced as a whole (old plan and manifest, or new ones, never a mix); the
    manifest (``manifest``, when the caller has read it already) keeps its precision and gains its
    engine record and a sha256 for ``model.plan``.
    """
    artifact_dir = Path(artifact_dir)
    manifest = manifest or read_artifact_for_engine(artifact_dir)
    with StagedDirectories() as staging:
        staged = staging.stage(artifact_dir, copy_from=artifact_dir)
        record = add_engine(staged, manifest, settings, progress, evaluation)
        staging.commit()
    say(progress, f"engine: wrote {artifact_dir / PLAN_NAME} ({record.plan_bytes / 2**20:.1f} MiB)")
    return record


def load_eval_set(path: str | Path, manifest: Manifest, limit: int | None = None) -> EngineEvaluation:
    """Labelled test images (CIFAR folder, image folder, .npz ...) preprocessed the artifact's way."""
    from trtinfer.calibration.calibset import make_eval_set

    data = make_eval_set(path, manifest.preprocess, labels=manifest.labels, limit=limit)
    return EngineEvaluation(x=data.x, labels=data.labels, source=data.source)


def finish_from_onnx(artifact_dir: str | Path, settings: EngineBuildSettings | None = None, *,
                     eval_data: str | Path | None = None, eval_samples: int | None = None,
                     max_accuracy_drop: float | None = None, allow_accuracy_drop: bool = False,
                     progress: Progress | None = None) -> EngineRecord:
    """``trtinfer build --from-onnx DIR``: finish on a GPU host what a CPU host started.

    Everything checkable without a GPU (the artifact, its files, the evaluation data) is checked
    first; then the engine is built, evaluated when ``eval_data`` is given, and committed.
    """
    artifact_dir = Path(artifact_dir)
    settings = settings or EngineBuildSettings()
    manifest = read_artifact_for_engine(artifact_dir)
    evaluation = None
    if eval_data is not None:
        evaluation = load_eval_set(eval_data, manifest, eval_samples)
        evaluation.max_drop, evaluation.allow = max_accuracy_drop, allow_accuracy_drop
    return build_engine_into_artifact(artifact_dir, settings, progress=progress, evaluation=evaluation,
                                      manifest=manifest)


def plan_matches_manifest(artifact_dir: str | Path) -> bool:
    """Whether ``model.plan`` is the one the manifest records (cheap re-check for callers)."""
    artifact_dir = Path(artifact_dir)
    manifest = Manifest.read(artifact_dir)
    entry = manifest.files.get(PLAN_NAME)
    path = artifact_dir / PLAN_NAME
    return entry is not None and path.is_file() and sha256_file(path) == entry.sha256


def describe_engine(record: EngineRecord) -> Iterable[str]:
    """Human lines for a manifest's engine record (for `inspect` and build output)."""
    yield f"TensorRT {record.tensorrt_version} on {record.gpu_name} (compute capability {record.compute_capability})"
    yield "batch profiles: " + describe_profiles(record.profiles)
    yield "layers: " + ", ".join(f"{n} {p}" for p, n in record.layer_precisions.items())
    timing = record.timing_cache
    yield (f"timing cache: {timing.path if timing else None} "
           f"({'reused' if timing is not None and timing.reused else 'new'})")
