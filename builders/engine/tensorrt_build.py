"""The TensorRT build of an artifact: network and configuration, the timing cache reused and saved, the
plan built and read back through the engine inspector to check its layers' precision.

Thin on purpose. The TensorRT calls are the ones TensorRT 10 and 11 both document (checked
against both Python bindings by ``tests/test_trt_api_names.py``); every decision that needs no
GPU (profiles, layer-precision counting, the precision rule, the manifest record, the timing
cache location) is a plain function tested on any host.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtinfer.atomic import atomic_file
from trtinfer.errors import BackendUnavailable
from trtinfer.manifest import ONNX_NAME, BatchProfile, Manifest
from trtinfer.runtime.backends.tensorrt import devices
from trtinfer.runtime.backends.tensorrt import loader as tensorrt_loader

from .layer_precisions import LayerSummary, check_engine_precision, summarize_layers
from .network import check_network_input, configure, create_network, parse_onnx
from .profiles import describe_profiles
from .settings import (EngineBuildError, EngineBuildSettings, Progress, default_timing_cache_path,
                       read_artifact_for_engine, say)

log = logging.getLogger(__name__)


@dataclass
class EngineBuild:
    plan: Any  # IHostMemory
    tensorrt_version: str
    gpu: dict[str, Any]
    summary: LayerSummary
    build_seconds: float
    timing_cache: Path
    timing_cache_reused: bool


def _load_timing_cache(config: Any, path: Path) -> tuple[Any, bool]:
    data = b""
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("cannot read timing cache %s (%s); starting a new one", path, exc)
    try:
        cache = config.create_timing_cache(data)
    except Exception as exc:  # a corrupt file may raise rather than return None
        log.debug("create_timing_cache: %s", exc)
        cache = None
    if cache is None and data:
        log.warning("timing cache %s is unreadable; starting a new one", path)
        data, cache = b"", config.create_timing_cache(b"")
    if cache is None:
        raise EngineBuildError("TensorRT could not create a timing cache", hint="run `trtinfer doctor`")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        if not data:
            raise EngineBuildError("TensorRT refused a new timing cache", hint="run `trtinfer doctor`")
        log.warning("timing cache %s was made by another TensorRT or GPU; starting a new one (it will be "
                    "replaced)", path)
        data, cache = b"", config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise EngineBuildError("TensorRT refused a new timing cache", hint="run `trtinfer doctor`")
    return cache, bool(data)


def _save_timing_cache(config: Any, path: Path) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        log.warning("TensorRT returned no timing cache; %s not updated", path)
        return
    blob = cache.serialize()
    try:
        with atomic_file(path) as f:
            f.write(memoryview(blob))
    except OSError as exc:  # a cache is an optimisation: never fail a good build over it
        log.warning("cannot save timing cache %s (%s)", path, exc)


def _inspect(trt: Any, plan: Any, manifest: Manifest, profile: BatchProfile) -> LayerSummary:
    """Per-layer precisions of the built engine, read through the engine inspector.

    With dynamic shapes the inspector prints ``"N/A due to dynamic shapes"`` for every tensor's
    type unless an execution context with all input shapes set is attached to it
    (``IEngineInspector::setExecutionContext``): one is attached at profile 0's OPT shape (a new
    context starts on profile 0, so no stream is needed to select it; the precisions of a strongly
    typed network are the same in every profile). Where that fails, the summary rests on the
    weights' types of the compute layers, as before.
    """
    runtime = trt.Runtime(tensorrt_loader.trt_logger())
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineBuildError("TensorRT built a plan it cannot load back: "
                               + ("; ".join(tensorrt_loader.trt_logger().drain_errors()) or "no reason given"),
                               hint="run `trtinfer doctor`; see the TensorRT messages with -v")
    inspector = engine.create_engine_inspector()
    context = engine.create_execution_context()
    shape = profile.shapes(manifest.batch_shape)[1]
    if context is not None and context.set_input_shape(manifest.input.name, shape):
        inspector.execution_context = context
    else:
        log.warning("cannot attach an execution context at shape %s to the engine inspector; the precision "
                    "check reads the layers' weight types only", shape)
    return summarize_layers(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def build_engine(artifact_dir: str | Path, settings: EngineBuildSettings, progress: Progress | None = None,
                 manifest: Manifest | None = None) -> EngineBuild:
    """Build (but do not write) the engine of an artifact on the settings' GPU."""
    artifact_dir = Path(artifact_dir)
    manifest = manifest or read_artifact_for_engine(artifact_dir)
    ready, reason = tensorrt_loader.tensorrt_available(settings.device)
    if not ready:
        raise BackendUnavailable(f"the TensorRT engine stage cannot run here: {reason}",
                                 hint=f"run `trtinfer doctor`; on a GPU host with TensorRT run "
                                      f"`trtinfer build --from-onnx {artifact_dir}`")
    trt = tensorrt_loader.import_tensorrt()
    gpu = devices.gpu_info(settings.device)
    devices.set_device(settings.device)
    version = str(trt.__version__)
    logger = tensorrt_loader.trt_logger()
    logger.drain_errors()
    cache_path = settings.timing_cache or default_timing_cache_path(version, gpu["name"], gpu["compute_capability"])

    say(progress, f"engine: TensorRT {version} on {gpu['name']} (sm {gpu['compute_capability']}), "
                   f"{manifest.precision.upper()}, batch {describe_profiles(settings.profiles)}")
    builder = trt.Builder(logger)
    network = create_network(trt, builder)
    parser = parse_onnx(trt, network, artifact_dir / ONNX_NAME)
    check_network_input(network, manifest)
    config = configure(trt, builder, manifest, settings)
    _cache, reused = _load_timing_cache(config, cache_path)
    say(progress, f"engine: timing cache {cache_path} ({'reused' if reused else 'new'})")

    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if plan is None:
        reasons = "; ".join(logger.drain_errors()) or "TensorRT gave no reason"
        raise EngineBuildError(f"TensorRT could not build the engine: {reasons}",
                               hint="see the TensorRT messages with -v; try a larger --workspace or a smaller --batch MAX")
    _save_timing_cache(config, cache_path)
    del parser
    summary = _inspect(trt, plan, manifest, settings.profiles[0])
    check_engine_precision(manifest.precision, summary)
    say(progress, f"engine: built in {seconds:.1f} s, {summary.total} layers "
                   f"({', '.join(f'{n} {p}' for p, n in summary.precisions.items())})")
    return EngineBuild(plan=plan, tensorrt_version=version, gpu=gpu, summary=summary, build_seconds=seconds,
                       timing_cache=cache_path, timing_cache_reused=reused)


