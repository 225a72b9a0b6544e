"""The TensorRT network and builder configuration of an artifact: the network parsed from ``model.onnx``,
its input checked against the manifest, one optimization profile per batch profile.

Precision comes from the ONNX graph alone: the network is strongly typed (TensorRT 11 has no other
kind; on 10 the flag is set), so no precision builder flag or calibrator exists here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trtinfer.manifest import Manifest
from trtinfer.runtime.backends.tensorrt import loader as tensorrt_loader

from .settings import EngineBuildError, EngineBuildSettings

log = logging.getLogger(__name__)


def network_creation_flags(trt: Any) -> int:
    """TensorRT 11 networks are always strongly typed (the flag is deprecated, 0 is right);
    TensorRT 10 needs the STRONGLY_TYPED flag or it would build a weakly typed network."""
    if tensorrt_loader.tensorrt_major(trt.__version__) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


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


def create_network(trt: Any, builder: Any) -> Any:
    network = builder.create_network(network_creation_flags(trt))
    if network is None:
        raise EngineBuildError("TensorRT could not create a network definition",
                               hint="run `trtinfer doctor`; the TensorRT installation may be broken")
    return network


def parse_onnx(trt: Any, network: Any, onnx_path: Path) -> Any:
    parser = trt.OnnxParser(network, tensorrt_loader.trt_logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = [format_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        for message in errors:
            log.error("ONNX parser: %s", message)
        raise parser_failure(onnx_path, errors)
    return parser  # keep alive with the network: it owns the parsed weights


def check_network_input(network: Any, manifest: Manifest) -> None:
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


def configure(trt: Any, builder: Any, manifest: Manifest, settings: EngineBuildSettings) -> Any:
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
