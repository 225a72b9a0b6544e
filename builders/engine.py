"""The engine stage: a validated ONNX artifact -> ``model.plan``, built by TensorRT on this GPU.

Thin on purpose. The TensorRT calls are the ones TensorRT 10 and 11 both document (checked
against both Python bindings by ``tests/test_trt_api_names.py``); every decision that needs no
GPU (profiles, layer-precision counting, the precision rule, the manifest record, the timing
cache location) is a plain function tested on any host.

Precision comes from the ONNX graph alone: the network is strongly typed (TensorRT 11 has no
other kind; on 10 the flag is set), so no precision builder flag or calibrator exists here.
The engine that comes out is then read back through the engine inspector, and an FP16 or INT8
build whose layers hold no FP16 or INT8 work fails instead of shipping an FP32 engine.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trtinfer import trt_support
from trtinfer.atomic import StagedDirectories, atomic_file
from trtinfer.cache import cache_root
from trtinfer.errors import ArtifactError, BackendUnavailable, TrtInferError
from trtinfer.hashing import sha256_file
from trtinfer.runtime import cuda
from trtinfer.manifest import ONNX_NAME, PLAN_NAME, BatchProfile, EngineRecord, Manifest

from .profiles import DEFAULT_PROFILE, describe_profiles, validate_profiles

log = logging.getLogger(__name__)

DEFAULT_OPT_LEVEL = 3  # TensorRT's own default
MIN_OPT_LEVEL, MAX_OPT_LEVEL = 0, 5
TIMING_CACHE_DIR = "timing-cache"
Progress = Any  # a callable taking one message, or a Reporter (its ``info`` is used)


class EngineBuildError(TrtInferError):
    """TensorRT refused the model or produced an engine that does not do what was asked."""


# -- settings ----------------------------------------------------------------------------------
@dataclass
class EngineBuildSettings:
    profiles: list[BatchProfile] = field(default_factory=lambda: [DEFAULT_PROFILE])
    opt_level: int = DEFAULT_OPT_LEVEL
    workspace_mib: int | None = None  # None: TensorRT's default (the whole device memory)
    device: int = 0
    timing_cache: Path | None = None  # None: default_timing_cache_path() for this TensorRT and GPU

    def __post_init__(self) -> None:
        self.profiles = validate_profiles(self.profiles)
        if not MIN_OPT_LEVEL <= int(self.opt_level) <= MAX_OPT_LEVEL:
            raise TrtInferError(f"--opt-level {self.opt_level} is outside {MIN_OPT_LEVEL}..{MAX_OPT_LEVEL}",
                                hint=f"{DEFAULT_OPT_LEVEL} is TensorRT's default; 5 searches longest")
        if self.workspace_mib is not None and int(self.workspace_mib) < 1:
            raise TrtInferError(f"--workspace {self.workspace_mib} MiB must be at least 1",
                                hint="leave it out to let TensorRT use the device memory it needs")
        if int(self.device) < 0:
            raise TrtInferError(f"--device {self.device} must be a GPU index (0, 1, ...)")
        if self.timing_cache is not None:
            self.timing_cache = Path(self.timing_cache).expanduser()


# -- pure decisions -------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "gpu"


def default_timing_cache_path(tensorrt_version: str, gpu_name: str, compute_capability: str) -> Path:
    """One cache per TensorRT version and GPU model: TensorRT rejects a cache from another device."""
    name = f"trt-{_slug(tensorrt_version)}-{_slug(gpu_name)}-sm{compute_capability.replace('.', '')}.cache"
    return cache_root() / TIMING_CACHE_DIR / name


def network_creation_flags(trt: Any) -> int:
    """TensorRT 11 networks are always strongly typed (the flag is deprecated, 0 is right);
    TensorRT 10 needs the STRONGLY_TYPED flag or it would build a weakly typed network."""
    if trt_support.tensorrt_major(trt.__version__) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


# Words in the inspector's type descriptions -> precision classes. TensorRT 10 writes
# "Format/Datatype": "Row major linear FP16 format" (or "Half" for kgen layers). TensorRT 11 split that
# field (its 10.x-to-11.x migration guide, IEngineInspector JSON Output): its "I/O Tensors" say "DataType",
# while NVIDIA's TensorRT 11.1 trt-perf-analysis tooling reads layer tensors' "Datatype" beside "Format".
# No host here can print one, so any key whose letters, lowercased, hold "datatype" or are "format" is
# read, the data type first: see _tensor_type.
_TYPE_WORDS = {
    "int4": "int4", "fp4": "fp4", "int8": "int8", "fp8": "fp8", "e4m3": "fp8",
    "half": "fp16", "fp16": "fp16", "bf16": "bf16", "bfloat16": "bf16", "float": "fp32", "fp32": "fp32",
    "float32": "fp32", "int32": "int32", "int64": "int64", "bool": "bool", "uint8": "uint8",
}
# Lowest precision first: a layer reading INT8 and writing FP16 is an INT8 layer.
_FLOAT_ORDER = ("int4", "fp4", "int8", "fp8", "fp16", "bf16", "fp32")
_COMPUTE_LAYER = re.compile(r"conv|matrixmultiply|gemm|fullyconnected|matmul", re.IGNORECASE)
# The floor each requested precision must show in the engine that came out.
REQUIRED_LAYER_PRECISION = {"fp16": "fp16", "int8": "int8"}


def tensor_precision(description: Any) -> str | None:
    """``"Row major linear FP16 format"`` -> ``"fp16"``; ``"Half"`` -> ``"fp16"``; unknown -> None."""
    for word in re.findall(r"[a-z0-9]+", str(description or "").lower()):
        if word in _TYPE_WORDS:
            return _TYPE_WORDS[word]
    return None


def _letters(key: Any) -> str:
    return re.sub(r"[^a-z]", "", str(key).lower())


def _type_key(key: Any) -> bool:
    """``Format/Datatype``, ``Datatype``, ``DataType``, ``data_type``, ``Format``: keys that hold a tensor's type."""
    letters = _letters(key)
    return "datatype" in letters or letters in ("format", "type", "dtype")


def _tensor_type(record: Any) -> str | None:
    """A tensor's precision from whichever type key the inspector used; None when it says none
    (``"N/A due to dynamic shapes"`` without an execution context). A key naming the data type is
    read before a format key, whose layout text may also name a type."""
    if not isinstance(record, dict):
        return None
    keys = sorted((k for k in record if _type_key(k)), key=lambda k: "datatype" not in _letters(k))
    for key in keys:
        found = tensor_precision(record[key])
        if found:
            return found
    return None


def layer_precision(layer: Any) -> str:
    """The precision a layer computes in, from its tensors' types (``"unknown"`` without detail)."""
    if not isinstance(layer, dict):
        return "unknown"
    types = {_tensor_type(t) for key in ("Inputs", "Outputs") for t in (layer.get(key) or [])}
    weights = layer.get("Weights")
    if isinstance(weights, dict):
        types.add(tensor_precision(weights.get("Type")))
    types.discard(None)
    for precision in _FLOAT_ORDER:
        if precision in types:
            return precision
    return "other" if types else "unknown"


def is_compute_layer(layer: Any) -> bool:
    if not isinstance(layer, dict):
        return False
    kind = f"{layer.get('LayerType', '')} {layer.get('ParameterType', '')}"
    return bool(_COMPUTE_LAYER.search(kind))


@dataclass
class LayerSummary:
    total: int
    precisions: dict[str, int]
    compute_precisions: dict[str, int]

    def to_manifest(self) -> dict[str, Any]:
        return {"total": self.total, **self.precisions}


def summarize_layers(engine_information: str | dict | list) -> LayerSummary:
    """Count layers per precision from ``IEngineInspector.get_engine_information(JSON)``.

    Accepts TensorRT 10's and 11's JSON (11 replaced "Bindings" with "I/O Tensors" and split
    "Format/Datatype"; "Layers" is in both).
    """
    data = engine_information
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise EngineBuildError(f"the engine inspector's output is not JSON ({exc})",
                                   hint="report this with `trtinfer doctor --json`") from exc
    layers = data.get("Layers", []) if isinstance(data, dict) else data
    if not isinstance(layers, list):
        raise EngineBuildError("the engine inspector's output has no layer list",
                               hint="report this with `trtinfer doctor --json`")
    counts: collections.Counter[str] = collections.Counter()
    compute: collections.Counter[str] = collections.Counter()
    for layer in layers:
        precision = layer_precision(layer)
        counts[precision] += 1
        if is_compute_layer(layer):
            compute[precision] += 1
    return LayerSummary(total=len(layers), precisions=dict(sorted(counts.items())),
                        compute_precisions=dict(sorted(compute.items())))


def check_engine_precision(requested: str, summary: LayerSummary) -> None:
    """An FP16 (INT8) build must contain FP16 (INT8) work; check what was built, not what was asked.

    Where the inspector shows convolution/matrix layers, those are what must run in the requested
    precision; otherwise any layer will do.
    """
    want = REQUIRED_LAYER_PRECISION.get(requested)
    if want is None:
        return
    known = summary.total - summary.precisions.get("unknown", 0)
    if summary.total == 0 or known == 0:
        raise EngineBuildError(f"cannot verify the {requested.upper()} engine: the engine inspector reported no "
                               "per-layer types", hint="report this with `trtinfer doctor --json`")
    pool = summary.compute_precisions if sum(summary.compute_precisions.values()) else summary.precisions
    if pool.get(want, 0) == 0:
        seen = ", ".join(f"{n} {p}" for p, n in sorted(pool.items())) or "none"
        raise EngineBuildError(
            f"the {requested.upper()} build produced an engine with no {want.upper()} layers ({seen}); "
            f"it would be an FP32 engine labelled {requested.upper()}",
            hint=f"check that model.onnx really holds {want.upper()} tensors (`trtinfer inspect`) and rebuild "
                 "the artifact with `trtinfer build`")


def _call(obj: Any, name: str) -> Any:
    try:
        value = getattr(obj, name)
        return value() if callable(value) else value
    except Exception:
        return None


def format_parser_error(error: Any) -> str:
    """One ONNX parser error as ``node 12 'conv1' (Conv): <description>``."""
    index = _call(error, "node")
    name = _call(error, "node_name")
    operator = _call(error, "node_operator")
    desc = " ".join(str(_call(error, "desc") or error).split())
    where = []
    if isinstance(index, int) and index >= 0:
        where.append(f"node {index}")
    if name:
        where.append(repr(str(name)))
    if operator:
        where.append(f"({operator})")
    return f"{' '.join(where)}: {desc}" if where else desc


def parser_failure(onnx_path: Path, errors: Sequence[str]) -> EngineBuildError:
    first = errors[0] if errors else "no error was reported"
    more = f" (+{len(errors) - 1} more, see -v)" if len(errors) > 1 else ""
    return EngineBuildError(f"TensorRT's ONNX parser rejected {onnx_path.name} at {first}{more}",
                            hint="the operator or its attributes are not supported by this TensorRT; "
                                 "try a newer TensorRT or re-export with another opset")


_TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
               "INT64": "int64", "BOOL": "bool", "UINT8": "uint8", "FP8": "float8"}


def trt_dtype_name(dtype: Any) -> str:
    name = getattr(dtype, "name", None) or str(dtype).rsplit(".", 1)[-1]
    return _TRT_DTYPES.get(str(name).upper(), str(name).lower())


def engine_record(*, tensorrt_version: str, gpu: dict[str, Any], settings: EngineBuildSettings, plan_sha256: str,
                  plan_bytes: int, build_seconds: float, summary: LayerSummary, timing_cache: Path,
                  timing_cache_reused: bool) -> EngineRecord:
    return EngineRecord(
        tensorrt_version=tensorrt_version, gpu_name=gpu["name"], compute_capability=gpu["compute_capability"],
        driver=gpu.get("driver"), device=settings.device, profiles=list(settings.profiles), plan=PLAN_NAME,
        plan_sha256=plan_sha256, plan_bytes=plan_bytes, build_seconds=round(build_seconds, 3),
        layer_precisions=summary.to_manifest(), compute_layer_precisions=summary.compute_precisions,
        timing_cache={"path": str(timing_cache), "reused": timing_cache_reused}, opt_level=settings.opt_level,
        workspace_mib=settings.workspace_mib, strongly_typed=True,
        built=datetime.now(timezone.utc).isoformat(timespec="seconds"))


# -- artifact checks (no TensorRT needed) ---------------------------------------------------------
def read_artifact_for_engine(artifact_dir: str | Path) -> Manifest:
    """The manifest of an artifact that can become an engine; everything checkable without a GPU."""
    artifact_dir = Path(artifact_dir)
    manifest = Manifest.read(artifact_dir)
    if ONNX_NAME not in manifest.files:
        raise ArtifactError(f"{artifact_dir} lists no {ONNX_NAME}",
                            hint="pass an artifact directory written by `trtinfer build`")
    manifest.verify_files(artifact_dir, [ONNX_NAME])
    shape = list(manifest.input.shape)
    if len(shape) < 2 or shape[0] != -1 or any(int(d) < 1 for d in shape[1:]):
        raise ArtifactError(f"{artifact_dir}: input {manifest.input.name!r} has shape {shape}; the engine stage "
                            "needs a dynamic batch (-1) and static other dimensions",
                            hint="rebuild the artifact with `trtinfer build`")
    return manifest


def engine_stage_available(device: int = 0) -> tuple[bool, str]:
    """Whether ``build_engine_into_artifact`` can run on this host, and why (not)."""
    return trt_support.tensorrt_available(device)


# -- the TensorRT build ------------------------------------------------------------------------------
@dataclass
class EngineBuild:
    plan: Any  # IHostMemory
    tensorrt_version: str
    gpu: dict[str, Any]
    summary: LayerSummary
    build_seconds: float
    timing_cache: Path
    timing_cache_reused: bool


def _say(progress: Progress | None, message: str) -> None:
    log.info("%s", message)
    if progress is not None:
        emit = getattr(progress, "info", None)
        (emit if callable(emit) else progress)(message)


def _create_network(trt: Any, builder: Any) -> Any:
    network = builder.create_network(network_creation_flags(trt))
    if network is None:
        raise EngineBuildError("TensorRT could not create a network definition",
                               hint="run `trtinfer doctor`; the TensorRT installation may be broken")
    return network


def _parse_onnx(trt: Any, network: Any, onnx_path: Path) -> Any:
    parser = trt.OnnxParser(network, trt_support.trt_logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = [format_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        for message in errors:
            log.error("ONNX parser: %s", message)
        raise parser_failure(onnx_path, errors)
    return parser  # keep alive with the network: it owns the parsed weights


def _check_network_input(network: Any, manifest: Manifest) -> None:
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    names = [tensor.name for tensor in inputs]
    if manifest.input.name not in names:
        raise EngineBuildError(f"model.onnx has inputs {names}, the manifest says {manifest.input.name!r}",
                               hint="rebuild the artifact with `trtinfer build`")
    tensor = inputs[names.index(manifest.input.name)]
    dtype = trt_dtype_name(tensor.dtype)
    if dtype != manifest.input.dtype:
        raise EngineBuildError(f"input {tensor.name!r} is {dtype} in the network, {manifest.input.dtype} in the manifest",
                               hint="rebuild the artifact with `trtinfer build`")
    dims = list(tensor.shape)
    if len(dims) != len(manifest.input.shape) or dims[0] != -1:
        raise EngineBuildError(f"input {tensor.name!r} has shape {dims}; expected {manifest.input.shape} with a dynamic batch",
                               hint="rebuild the artifact with `trtinfer build`")


def _configure(trt: Any, builder: Any, manifest: Manifest, settings: EngineBuildSettings) -> Any:
    config = builder.create_builder_config()
    config.builder_optimization_level = int(settings.opt_level)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector must see layer types
    if settings.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_mib) << 20)
    for profile_spec in settings.profiles:
        profile = builder.create_optimization_profile()
        profile.set_shape(manifest.input.name, *profile_spec.shapes(manifest.batch_shape))
        if config.add_optimization_profile(profile) < 0:
            raise EngineBuildError(f"TensorRT rejected batch profile {profile_spec}",
                                   hint="check --batch; see the TensorRT messages with -v")
    # Never VERSION_COMPATIBLE / engine host code: the plan stays data, loaded without trusting code.
    return config


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
    runtime = trt.Runtime(trt_support.trt_logger())
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineBuildError("TensorRT built a plan it cannot load back: "
                               + ("; ".join(trt_support.trt_logger().drain_errors()) or "no reason given"),
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
    ready, reason = trt_support.tensorrt_available(settings.device)
    if not ready:
        raise BackendUnavailable(f"the TensorRT engine stage cannot run here: {reason}",
                                 hint=f"run `trtinfer doctor`; on a GPU host with TensorRT run "
                                      f"`trtinfer build --from-onnx {artifact_dir}`")
    trt = trt_support.import_tensorrt()
    gpu = cuda.gpu_info(settings.device)
    cuda.set_device(settings.device)
    version = str(trt.__version__)
    logger = trt_support.trt_logger()
    logger.drain_errors()
    cache_path = settings.timing_cache or default_timing_cache_path(version, gpu["name"], gpu["compute_capability"])

    _say(progress, f"engine: TensorRT {version} on {gpu['name']} (sm {gpu['compute_capability']}), "
                   f"{manifest.precision.upper()}, batch {describe_profiles(settings.profiles)}")
    builder = trt.Builder(logger)
    network = _create_network(trt, builder)
    parser = _parse_onnx(trt, network, artifact_dir / ONNX_NAME)
    _check_network_input(network, manifest)
    config = _configure(trt, builder, manifest, settings)
    _cache, reused = _load_timing_cache(config, cache_path)
    _say(progress, f"engine: timing cache {cache_path} ({'reused' if reused else 'new'})")

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
    _say(progress, f"engine: built in {seconds:.1f} s, {summary.total} layers "
                   f"({', '.join(f'{n} {p}' for p, n in summary.precisions.items())})")
    return EngineBuild(plan=plan, tensorrt_version=version, gpu=gpu, summary=summary, build_seconds=seconds,
                       timing_cache=cache_path, timing_cache_reused=reused)


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
    from .evaluate import FP16_MAX_DROP

    return FP16_MAX_DROP


def evaluate_engine(directory: Path, manifest: Manifest, evaluation: EngineEvaluation, device: int = 0,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Run the staged engine through the runtime and its ONNX model through ONNX Runtime on the same
    images; the accuracy guard applies to the engine's top-1 against the ONNX model's."""
    import numpy as np

    from trtinfer.runtime.loader import open_tensorrt

    from .evaluate import AccuracyGuard, compare, run_onnx

    x = np.ascontiguousarray(evaluation.x, dtype=np.float32)
    _say(progress, f"engine: evaluating on {len(x)} images ({evaluation.source or 'evaluation set'})")
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
    _say(progress, f"engine: top-1 {100 * result['top1']:.2f}% vs ONNX Runtime {100 * result['top1_reference']:.2f}%, "
                   f"agreement {100 * result['top1_agreement']:.2f}%, max |diff| {result['max_abs_diff']:.3g}")
    return result


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
    manifest.record_file(directory, PLAN_NAME)
    record = engine_record(
        tensorrt_version=built.tensorrt_version, gpu=built.gpu, settings=settings,
        plan_sha256=manifest.files[PLAN_NAME]["sha256"], plan_bytes=manifest.files[PLAN_NAME]["bytes"],
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
    _say(progress, f"engine: wrote {artifact_dir / PLAN_NAME} ({record.plan_bytes / 2**20:.1f} MiB)")
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
    return entry is not None and path.is_file() and sha256_file(path) == entry.get("sha256")


def describe_engine(record: EngineRecord) -> Iterable[str]:
    """Human lines for a manifest's engine record (for `inspect` and build output)."""
    yield f"TensorRT {record.tensorrt_version} on {record.gpu_name} (compute capability {record.compute_capability})"
    yield "batch profiles: " + describe_profiles(record.profiles)
    yield "layers: " + ", ".join(f"{n} {p}" for p, n in record.layer_precisions.items())
    timing = record.timing_cache
    yield f"timing cache: {timing.get('path')} ({'reused' if timing.get('reused') else 'new'})"
