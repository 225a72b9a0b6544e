"""Artifacts ``trtinfer bench`` builds for itself, cached by checkpoint sha256 and build options.

Given only a checkpoint, the bench builds the precisions it needs with ``trtinfer build``'s own
pipeline (export, validation, FP16/INT8, accuracy guard) into
``~/.cache/trtinfer/bench/<checkpoint sha256>-<options hash>/``; a second run with the same
checkpoint and options reuses them (verified against their manifests). Each precision is built
on its own, so an INT8 build that fails its accuracy guard does not cost the FP32 and FP16 rows;
the failure is remembered (same inputs, same verdict) until ``--rebuild``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtinfer._version import __version__
from trtinfer.atomic import atomic_file
from trtinfer.cache import cache_root
from trtinfer.errors import ArtifactError, TrtInferError
from trtinfer.manifest import SCHEMA_VERSION, Manifest

log = logging.getLogger(__name__)

BENCH_CACHE_DIR = "bench"
FAILED_SUFFIX = ".failed.json"
#: BuildOptions fields that change what an artifact holds (the cache key); everything else
#: (output directory, name, quiet) does not.
KEY_FIELDS = ("arch", "input_size", "resize", "normalize", "mean", "std", "labels", "eval_data", "eval_samples",
              "calib_data", "calib_samples", "calib_method", "seed", "quantizer", "target", "fallback",
              "max_accuracy_drop", "atol", "rtol", "opset", "fp16_exclude")


@dataclass
class CachedArtifacts:
    """Artifact directories by precision, and why the others are missing."""

    directory: Path
    artifacts: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    built: list[str] = field(default_factory=list)  # built in this run (cold)
    build_seconds: dict[str, float] = field(default_factory=dict)


def options_key(checkpoint_sha: str, options: dict[str, Any]) -> str:
    """``<sha16>-<opts12>``: the checkpoint and every option that changes an artifact."""
    relevant = {k: (str(options[k]) if isinstance(options.get(k), Path) else options.get(k)) for k in KEY_FIELDS}
    for k in ("eval_data", "calib_data"):  # the same data by another spelling is the same data
        data = relevant[k]
        if data:
            relevant[k] = str(Path(data).expanduser().resolve())
    relevant["trtinfer"] = __version__
    relevant["schema_version"] = SCHEMA_VERSION
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()
    return f"{checkpoint_sha[:16]}-{digest[:12]}"


def bench_cache_dir() -> Path:
    return cache_root() / BENCH_CACHE_DIR


def _usable(directory: Path, checkpoint_sha: str) -> bool:
    try:
        manifest = Manifest.read(directory)
        manifest.verify_files(directory)
    except (ArtifactError, TrtInferError) as exc:
        log.info("cached artifact %s is not usable (%s); rebuilding", directory, exc)
        return False
    return manifest.source.checkpoint_sha256 == checkpoint_sha


def cached_artifacts(checkpoint: Path, precisions: tuple[str, ...], options: dict[str, Any], *,
                     root: Path | None = None, rebuild: bool = False, reporter: Any = None,
                     say: Any = None) -> CachedArtifacts:
    """Reuse or build one artifact per precision; ``options`` are BuildOptions fields."""
    import time

    from trtinfer.builders.options import BuildOptions
    from trtinfer.builders.pipeline import Builder
    from trtinfer.builders.source.checkpoint import checkpoint_sha256

    say = say or (lambda message: None)
    sha = checkpoint_sha256(checkpoint)  # a Hugging Face directory hashes its config and weights
    directory = (root or bench_cache_dir()) / options_key(sha, options)
    result = CachedArtifacts(directory)
    for precision in precisions:
        final = directory / f"model-{precision}"
        failed = directory / f"model-{precision}{FAILED_SUFFIX}"
        if not rebuild and final.is_dir() and _usable(final, sha):
            result.artifacts[precision] = final
            continue
        if not rebuild and failed.is_file():
            try:
                result.failed[precision] = json.loads(failed.read_text(encoding="utf-8"))["reason"]
                continue
            except (OSError, ValueError, KeyError, TypeError):
                pass
        say(f"building the {precision} artifact into the bench cache {directory}")
        opts = BuildOptions(checkpoint=checkpoint, precisions=(precision,), out_dir=directory, name="model",
                            force=True, **{k: v for k, v in options.items() if k in BuildOptions.__dataclass_fields__})
        start = time.perf_counter()
        try:
            Builder(opts, reporter).run()
        except TrtInferError as exc:
            result.failed[precision] = f"the {precision} build failed: {exc.one_line()}"
            with atomic_file(failed, "w") as f:
                json.dump({"reason": result.failed[precision]}, f)
            continue
        result.artifacts[precision] = final
        result.built.append(precision)
        result.build_seconds[precision] = round(time.perf_counter() - start, 1)
        failed.unlink(missing_ok=True)
    return result
