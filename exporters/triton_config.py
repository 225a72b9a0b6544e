"""What Triton Inference Server is told about an exported model: one ``config.pbtxt`` per model folder.

Each config is built as the JSON form of Triton's ``ModelConfig`` protobuf and written through
that protobuf (``tritonclient.grpc.model_config_pb2`` with ``google.protobuf``'s ``json_format`` and
``text_format``), so a misspelt field or enum value fails the export, not Triton's model load.

Decisions, each read against Triton's documentation (docs/scale-out.md cites the pages):

* where the model runs (:func:`choose_format`): an engine goes to ``tensorrt_plan`` on GPU nodes; ONNX
  on GPU nodes goes to ``onnxruntime_onnx`` with the TensorRT execution accelerator at the artifact's
  precision, its engines cached per ONNX file (:func:`engine_cache_path`); on CPU nodes
  (``--cpu-backend``, :data:`CPU_BACKENDS`) every precision goes to ``onnxruntime_onnx`` by default,
  FP16/INT8 through ONNX Runtime's OpenVINO execution accelerator, because ONNX Runtime's CPU provider
  runs our Q/DQ graph slower than FP32 (0.66x measured) while OpenVINO runs it in INT8. The x86-64
  release containers build the onnxruntime backend with that accelerator (server ``build.py``
  ``onnxruntime_cmake_args``, lines 695-712 at e1db8a603: ``TRITON_ENABLE_ONNXRUNTIME_OPENVINO`` on
  unless aarch64 or RHEL; onnxruntime_backend ``src/onnxruntime.cc`` line 926 at 00fd3e8 appends it for
  ``cpu_execution_accelerator`` ``openvino``). Triton's OpenVINO *backend* is used only when asked for
  (``--cpu-backend openvino``): with ``ENABLE_BATCH_PADDING`` it keeps the pad size computed for an
  earlier request of the batch and never resets it when the batch is full (openvino_backend
  ``src/openvino.cc`` lines 1063-1083 and 1384-1393 at db19304; the fix, PR openvino_backend#115, was
  closed unmerged), so a batch assembled from several requests fails ("failed to split the output
  tensor"), the batch-8 warm-up among them. ``--cpu-backend python`` serves the classifier through the
  Python backend (``exporters/triton_classifier/model.py``) with ONNX Runtime's or OpenVINO's Python API;
* an INT8 graph goes only to the nodes it was built for (:func:`check_int8_target`): NNCF's CPU Q/DQ
  uses uint8 zero points, which TensorRT's signed-INT8 explicit quantization cannot run
  (onnx-tensorrt#884), and ModelOpt's GPU placement runs slower on OpenVINO's CPU kernels;
* a plan's ``instance_group`` lists every optimization profile: without ``profile`` the TensorRT
  backend makes a context for profile 0 only (tensorrt_backend ``src/instance_state.cc``
  ``InitOptimizationProfiles``, lines 2139-2151 at e2ef6d7; ``src/model_state.cc`` line 780 reads the
  list), and the profiles must take every batch from 1 to ``max_batch_size`` (:func:`plan_profiles`);
* the batch dimension is left out of ``dims`` and expressed by ``max_batch_size``: for an engine the
  smallest of its plans' largest profile maximum (every GPU kind must take any batch Triton forms),
  for ONNX Runtime ``--max-batch-size`` (default 32, trtinfer's own CPU batch);
* OpenVINO-backend models (``--cpu-backend openvino`` only) default to ``max_batch_size`` 8 with ``ENABLE_BATCH_PADDING``: Triton's OpenVINO
  backend fixes a batching model's batch at ``max_batch_size`` (``ov::set_batch``) and refuses smaller
  batches unless padding is on, so every batch costs a full one. Measured here (OpenVINO, CIFAR
  ResNet-18 INT8): batch 8 gives 0.93x batch 32's throughput while a lone image costs 7x its own
  work instead of 26x. Unbatched (``max_batch_size: 0``) would avoid padding, but Triton's
  classification extension then ranks a whole request's logits as one row;
* ``dynamic_batching`` prefers the engine profiles' OPT sizes (the sizes TensorRT tuned kernels for)
  or, for ONNX Runtime, full batches; ``max_queue_delay_microseconds`` is trtinfer's own batcher delay;
* the output carries ``label_filename`` so Triton's classification extension returns class names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trtinfer.errors import TrtInferError
from trtinfer.manifest import ONNX_NAME as ONNX_FILE
from trtinfer.manifest import Manifest
from trtinfer.runtime.options import DEFAULT_CPU_MAX_BATCH, DEFAULT_MAX_DELAY_MS

KINDS = ("cpu", "gpu")
#: Model file formats of an exported classifier, by Triton platform/backend.
PLAN, ONNX, OPENVINO, PYTHON = "tensorrt_plan", "onnxruntime_onnx", "openvino", "python"
#: How CPU nodes run the classifier (``--cpu-backend``): ``auto`` is ONNX Runtime, FP16/INT8 through its
#: OpenVINO execution accelerator; ``onnxruntime`` the plain CPU provider (aarch64 containers lack the
#: accelerator); ``onnxruntime-openvino`` the accelerator for every precision; ``openvino`` Triton's OpenVINO
#: backend, whose batch padding breaks batches of several requests (module docstring); ``python`` the Python
#: backend running the ONNX with ``--python-runtime``.
CPU_BACKENDS = ("auto", "onnxruntime", "onnxruntime-openvino", "openvino", "python")
#: The Python APIs the Python-backend classifier runs the ONNX with (its config parameter ``runtime``).
PYTHON_RUNTIMES = ("onnxruntime", "openvino")
LABELS_FILE = "labels.txt"
IMAGE_INPUT = "image"  # the same input ``trtinfer serve``'s ``<name>_image`` twin takes
IMAGE_SUFFIX = "_image"
PREPROCESS_SUFFIX = "_preprocess"
VERSION = "1"
#: The file that keeps an ensemble's empty version folder through S3/GCS syncs, which drop empty folders
#: (Triton then refuses the ensemble: "at least one version must be available").
ENSEMBLE_PLACEHOLDER = "placeholder.txt"
#: ONNX Runtime's TensorRT execution accelerator precision for each artifact precision.
TRT_EP_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
#: Where ONNX Runtime's TensorRT provider keeps the engines it builds, inside the Triton container
#: (``--engine-cache-dir``): without a cache every model load rebuilds them (minutes for a ResNet-50). Each
#: model gets its own folder under it keyed by its ONNX file's sha256 (:func:`engine_cache_path`), since ONNX
#: Runtime names a cached engine from the graph's file name, tensor names and versions, not its weights.
#: The default is a top-level path no image has, so it is plainly a volume to mount (docs/scale-out.md):
#: ``/tmp`` and the container's own layers are gone on every restart, which defeats the cache.
DEFAULT_ENGINE_CACHE_DIR = "/trt-engine-cache"
#: OpenVINO models' default max_batch_size: the backend pads every batch to it (module docstring).
OPENVINO_MAX_BATCH = 8
_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,150}")  # fullmatch only: "$" matches before a final newline


@dataclass(frozen=True)
class TritonOptions:
    """``trtinfer export triton``'s options, said once: the CLI parses into this, the writer reads it."""

    kind: str | None = None  # "cpu" | "gpu"; None: gpu for an artifact with a plan, else cpu
    max_batch_size: int | None = None  # ONNX Runtime: 32; OpenVINO: 8 (padded); a plan: its profiles
    instances: int = 1
    max_queue_delay_us: int = int(DEFAULT_MAX_DELAY_MS * 1000)
    with_preprocess: bool = False
    preprocess_instances: int = 2
    python_env: str | None = None  # a conda-pack archive with numpy and Pillow, copied in (EXECUTION_ENV_PATH)
    cpu_backend: str = "auto"  # CPU_BACKENDS
    python_runtime: str = "onnxruntime"  # PYTHON_RUNTIMES, for --cpu-backend python
    python_path: str | None = None  # a site-packages folder in the container, appended to the Python models' sys.path
    engine_cache_dir: str = DEFAULT_ENGINE_CACHE_DIR  # in the container; a volume that persists
    force: bool = False

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise TrtInferError(f"--kind {self.kind} is not one of {', '.join(KINDS)}", hint="use --kind cpu or gpu")
        for flag, choice, choices in (("--cpu-backend", self.cpu_backend, CPU_BACKENDS),
                                     ("--python-runtime", self.python_runtime, PYTHON_RUNTIMES)):
            if choice not in choices:
                raise TrtInferError(f"{flag} {choice} is not one of {', '.join(choices)}",
                                    hint=f"pass {flag} {choices[0]}")
        if self.python_runtime != "onnxruntime" and self.cpu_backend != PYTHON:
            raise TrtInferError(f"--python-runtime {self.python_runtime} applies to the Python-backend classifier "
                                "only", hint="add --cpu-backend python, or leave --python-runtime out")
        for flag, path in (("--python-path", self.python_path), ("--engine-cache-dir", self.engine_cache_dir)):
            if path is not None and (not path.startswith("/") or "\n" in path or "\r" in path):
                raise TrtInferError(f"{flag} {path!r} is not an absolute path (it names a folder inside the "
                                    "Triton container)", hint=f"pass {flag} as an absolute path, e.g. {flag} /opt/x")
        for flag, value in (("--max-batch-size", 1 if self.max_batch_size is None else self.max_batch_size),
                            ("--instances", self.instances), ("--preprocess-instances", self.preprocess_instances)):
            if not isinstance(value, int) or value < 1:
                raise TrtInferError(f"{flag} {value} must be a positive integer")
        if self.python_env is not None:
            from pathlib import Path

            problem = "not found" if not Path(self.python_env).is_file() else \
                "not a .tar.gz file" if not self.python_env.endswith(".tar.gz") else ""
            if problem:
                raise TrtInferError(f"--python-env {self.python_env}: {problem}",
                                    hint="pass a conda-pack archive holding numpy and Pillow (docs/scale-out.md)")
        if self.max_queue_delay_us < 0:
            raise TrtInferError(f"--max-queue-delay-us {self.max_queue_delay_us} must be 0 or more")


def is_model_name(name: str) -> bool:
    """A plain folder name: letters, digits, '_', '.', '-', no leading dot, the whole string."""
    return _NAME.fullmatch(name) is not None


def check_model_name(name: str) -> str:
    """Triton model names become folder names and ensemble references: plain ones only."""
    if not is_model_name(name):
        raise TrtInferError(f"model name {name!r} is not a plain folder name (letters, digits, '_', '.', '-')",
                            hint="rebuild the artifact with a plain --name")
    return name


def choose_format(manifest: Manifest, options: TritonOptions) -> tuple[str, str]:
    """(node kind, Triton platform/backend) for one artifact; see the module docstring."""
    has_plan = manifest.engine is not None
    kind = options.kind or ("gpu" if has_plan else "cpu")
    check_int8_target(manifest, kind)
    if kind == "gpu":
        return kind, PLAN if has_plan else ONNX
    return kind, {"openvino": OPENVINO, "python": PYTHON}.get(options.cpu_backend, ONNX)


def check_int8_target(manifest: Manifest, kind: str) -> None:
    """An INT8 graph runs where its build's ``--target`` placed its Q/DQ (``target`` "" : not recorded, not judged)."""
    target = manifest.target
    if manifest.precision != "int8" or target not in KINDS or target == kind:
        return
    why = ("NNCF's Q/DQ with uint8 zero points, which TensorRT's signed-INT8 quantization cannot run "
           "(onnx-tensorrt#884)" if target == "cpu" else "ModelOpt's Q/DQ placed for TensorRT, which OpenVINO's "
           "CPU kernels run slower")
    raise TrtInferError(f"{manifest.name} is an INT8 artifact built for --target {target} ({why}); --kind {kind} "
                        f"needs one built for {kind.upper()} nodes",
                        hint=f"rebuild it with trtinfer build --int8 --target {kind}, or export it with --kind {target}")


def cpu_accelerators(manifest: Manifest, options: TritonOptions) -> list[dict[str, Any]]:
    """An ONNX Runtime CPU model's ``cpu_execution_accelerator`` list (module docstring)."""
    openvino = options.cpu_backend == "onnxruntime-openvino" or (options.cpu_backend == "auto"
                                                                  and manifest.precision != "fp32")
    return [{"name": "openvino"}] if openvino else []


def _dtype(manifest: Manifest, which: str) -> str:
    spec = getattr(manifest, which)
    if spec.dtype not in _DTYPES:
        raise TrtInferError(f"{manifest.name}'s {which} tensor is {spec.dtype}; Triton export takes "
                            f"{', '.join(_DTYPES)}", hint="rebuild the artifact with this trtinfer")
    return _DTYPES[spec.dtype]


def plan_max_batch(manifests: Sequence[Manifest]) -> int:
    """The largest batch every plan takes: each plan's largest profile maximum, the smallest of those."""
    return min(max(p.max for p in m.engine.profiles) for m in manifests if m.engine is not None)


def plan_profiles(manifests: Sequence[Manifest]) -> list[str]:
    """The ``instance_group.profile`` names (TensorRT profile indices) that give every profile a context,
    after checking that the plans' profiles take every batch from 1 up (Triton's batcher forms any size up to
    ``max_batch_size``, and warms up at batch 1) and that the plans of one model have the same count (a name
    is an index into each plan)."""
    counts = set()
    for m in manifests:
        if m.engine is None:
            continue
        counts.add(len(m.engine.profiles))
        ordered = sorted(m.engine.profiles, key=lambda p: (p.min, p.max))
        if ordered[0].min > 1:
            raise TrtInferError(f"{m.name}'s plan has no batch profile for batch 1 (its first is {ordered[0]}); "
                                "Triton sends batch 1 for its warm-up and for lone requests",
                                hint=f"rebuild with a first --batch from 1, e.g. --batch 1:{ordered[0].opt}:{ordered[0].max}")
        reach = ordered[0].max
        for profile in ordered[1:]:
            if profile.min > reach + 1:
                raise TrtInferError(f"{m.name}'s plan has no batch profile for batches {reach + 1}..{profile.min - 1} "
                                    f"(profiles {', '.join(map(str, m.engine.profiles))}); Triton's dynamic batcher "
                                    "forms every size up to max_batch_size",
                                    hint=f"rebuild with --batch ranges that meet, e.g. --batch {reach + 1}:"
                                         f"{max(profile.opt, reach + 1)}:{profile.max} for the second")
            reach = max(reach, profile.max)
    if len(counts) > 1:
        raise TrtInferError(f"the plans of {manifests[0].name} have {' and '.join(map(str, sorted(counts)))} batch "
                            "profiles; Triton names profiles by index, the same for every plan of a model",
                            hint="rebuild them with the same --batch values")
    return [str(i) for i in range(counts.pop())] if counts else []


def max_batch_size(manifests: Sequence[Manifest], platform: str, options: TritonOptions) -> int:
    """Triton's ``max_batch_size`` (0: Triton does not batch; the batch dimension is in ``dims``)."""
    if platform == PLAN:
        return plan_max_batch(manifests)
    if options.max_batch_size is not None:
        return options.max_batch_size
    return OPENVINO_MAX_BATCH if platform == OPENVINO else DEFAULT_CPU_MAX_BATCH


def dims(shape: Sequence[int]) -> list[int]:
    """A tensor's ``dims``: its shape without the batch dimension (Triton adds it: ``max_batch_size``)."""
    return [int(d) for d in shape[1:]]


def preferred_sizes(manifests: Sequence[Manifest], platform: str, max_batch_size: int) -> list[int]:
    if platform == PLAN:
        opts = {p.opt for m in manifests if m.engine is not None for p in m.engine.profiles}
        return sorted(size for size in opts if size <= max_batch_size) or [max_batch_size]
    return [max_batch_size]


def classifier_config(name: str, manifests: Sequence[Manifest], kind: str, platform: str,
                      options: TritonOptions, plan_files: dict[str, str] | None = None) -> dict[str, Any]:
    """The classifier's ModelConfig (JSON form). ``plan_files``: compute capability -> plan file name,
    when several plans of one model are exported together."""
    m = manifests[0]
    max_batch = max_batch_size(manifests, platform, options)
    instance_group: dict[str, Any] = {"count": options.instances, "kind": "KIND_GPU" if kind == "gpu" else "KIND_CPU"}
    if platform == PLAN:
        instance_group["profile"] = plan_profiles(manifests)
    config: dict[str, Any] = {
        "name": name,
        "max_batch_size": max_batch,
        "input": [{"name": m.input.name, "data_type": _dtype(m, "input"), "dims": dims(m.input.shape)}],
        "output": [{"name": m.output.name, "data_type": _dtype(m, "output"), "dims": dims(m.output.shape),
                    "label_filename": LABELS_FILE}],
        "dynamic_batching": {"preferred_batch_size": preferred_sizes(manifests, platform, max_batch),
                             "max_queue_delay_microseconds": options.max_queue_delay_us},
        "instance_group": [instance_group],
        "model_warmup": [{"name": f"zeros-batch-{size}", "batch_size": size,
                          "inputs": {m.input.name: {"data_type": _dtype(m, "input"), "dims": dims(m.input.shape),
                                                    "zero_data": True}}}
                         for size in sorted({1, max_batch})],
        "parameters": {"precision": {"string_value": m.precision}, "arch": {"string_value": m.arch},
                       "trtinfer_version": {"string_value": m.trtinfer_version}},
    }
    if platform == OPENVINO:
        config["backend"] = "openvino"
        config["parameters"].update(openvino_parameters(options.instances))
    elif platform == PYTHON:
        config["backend"] = "python"
        config["parameters"].update({"runtime": {"string_value": options.python_runtime},
                                     "model_file": {"string_value": ONNX_FILE}, **python_path_parameter(options)})
    else:
        config["platform"] = platform
    if platform == ONNX and kind == "cpu" and cpu_accelerators(m, options):
        config["optimization"] = {"execution_accelerators": {"cpu_execution_accelerator": cpu_accelerators(m, options)}}
    if platform == PLAN and plan_files:
        config["cc_model_filenames"] = dict(plan_files)
    if platform == ONNX and kind == "gpu":
        config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [{
            "name": "tensorrt",
            "parameters": {"precision_mode": TRT_EP_PRECISION[m.precision],
                           "max_workspace_size_bytes": str(1 << 30),
                           "trt_engine_cache_enable": "1",
                           "trt_engine_cache_path": engine_cache_path(m, max_batch, options),
                           # one profile over every batch Triton forms: no engine rebuild when a new size arrives.
                           # These keys are parsed from release 24.04 on (onnxruntime_backend src/onnxruntime.cc
                           # lines 664-675 at 00fd3e8; r24.03 refuses them as "unknown parameter", r24.04 has them)
                           **{f"trt_profile_{k}_shapes": _profile_shape(m, size)
                              for k, size in (("min", 1), ("opt", max_batch), ("max", max_batch))}}}]}}
    return config


def engine_cache_path(manifest: Manifest, max_batch: int, options: TritonOptions) -> str:
    """This model's own engine cache folder: keyed by its ONNX file's sha256 (the weights; ONNX Runtime's
    cache names are not) and the batch range its one profile covers."""
    return f"{options.engine_cache_dir.rstrip('/')}/{manifest.files[ONNX_FILE].sha256}-b{max_batch}"


def python_path_parameter(options: TritonOptions) -> dict[str, dict[str, str]]:
    """``python_path``: the site-packages folder the Python-backend models append to ``sys.path``."""
    return {"python_path": {"string_value": options.python_path}} if options.python_path else {}


def _profile_shape(manifest: Manifest, batch: int) -> str:
    """ONNX Runtime's TensorRT profile shape syntax: ``input:8x3x32x32``."""
    return f"{manifest.input.name}:" + "x".join(str(d) for d in (batch, *dims(manifest.input.shape)))


def openvino_parameters(instances: int) -> dict[str, dict[str, str]]:
    """The OpenVINO backend's parameters (its README's "Parameters" and latency/throughput examples):
    one instance runs one batch at a time on every core (LATENCY, one stream); several instances
    each get a stream. Batches smaller than max_batch_size need ENABLE_BATCH_PADDING (module docstring)."""
    parameters = {"NUM_STREAMS": {"string_value": str(instances)}, "ENABLE_BATCH_PADDING": {"string_value": "YES"}}
    if instances == 1:
        parameters["PERFORMANCE_HINT"] = {"string_value": "LATENCY"}
    return parameters


def preprocess_config(name: str, manifest: Manifest, max_batch: int, options: TritonOptions) -> dict[str, Any]:
    """The Python-backend model decoding image bytes into the classifier's input."""
    m = manifest
    parameters: dict[str, Any] = {"preprocess": {"string_value": json.dumps(_spec_record(m), sort_keys=True)}}
    parameters.update(python_path_parameter(options))
    if options.python_env:  # copied into the model folder; the backend refuses paths that leave it
        parameters["EXECUTION_ENV_PATH"] = {"string_value": f"$$TRITON_MODEL_DIRECTORY/{python_env_name(options)}"}
    return {
        "name": name + PREPROCESS_SUFFIX,
        "backend": "python",
        "max_batch_size": max_batch,
        "input": [{"name": IMAGE_INPUT, "data_type": "TYPE_STRING", "dims": [1]}],
        "output": [{"name": m.input.name, "data_type": _dtype(m, "input"), "dims": dims(m.input.shape)}],
        "dynamic_batching": {"max_queue_delay_microseconds": options.max_queue_delay_us},
        "instance_group": [{"count": options.preprocess_instances, "kind": "KIND_CPU"}],
        "parameters": parameters,
    }


def python_env_name(options: TritonOptions) -> str:
    from pathlib import Path

    return Path(options.python_env or "").name


def _spec_record(manifest: Manifest) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(manifest.preprocess)


def ensemble_config(name: str, manifest: Manifest, max_batch: int) -> dict[str, Any]:
    """``<name>_image``: one BYTES input ``image`` -> ``<name>_preprocess`` -> ``<name>``."""
    m = manifest
    tensor = "preprocessed_" + m.input.name
    return {
        "name": name + IMAGE_SUFFIX,
        "platform": "ensemble",
        "max_batch_size": max_batch,
        "input": [{"name": IMAGE_INPUT, "data_type": "TYPE_STRING", "dims": [1]}],
        "output": [{"name": m.output.name, "data_type": _dtype(m, "output"), "dims": dims(m.output.shape),
                    "label_filename": LABELS_FILE}],
        "ensemble_scheduling": {"step": [
            {"model_name": name + PREPROCESS_SUFFIX, "model_version": -1,
             "input_map": {IMAGE_INPUT: IMAGE_INPUT}, "output_map": {m.input.name: tensor}},
            {"model_name": name, "model_version": -1,
             "input_map": {m.input.name: tensor}, "output_map": {m.output.name: m.output.name}},
        ]},
    }


def to_pbtxt(config: dict[str, Any]) -> str:
    """The config as Triton's protobuf text format, checked field by field against ``ModelConfig``."""
    try:
        from google.protobuf import json_format, text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise TrtInferError(f"writing Triton configs needs tritonclient's protobuf definitions ({exc})",
                            hint='pip install "trtinfer[triton]"') from exc
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return text_format.MessageToString(message)


def parse_pbtxt(text: str) -> Any:
    """A ``config.pbtxt``'s text -> ``ModelConfig`` (what Triton's model loader does first)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())
