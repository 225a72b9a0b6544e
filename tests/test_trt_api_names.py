"""Our TensorRT code uses only names that exist in BOTH TensorRT 10 and TensorRT 11, and none of
the APIs TensorRT 11 removed.

TensorRT cannot be imported on a CPU host, but its Python bindings wheels can be downloaded:
``tensorrt.so`` in ``tensorrt-cu12-bindings<11`` (TensorRT 10) and ``tensorrt-cu13-bindings>=11``
(TensorRT 11) holds, as NUL-terminated strings, every class, enum member, method and property name
the bindings register. We collect from our modules, with ``ast``, every ``trt.<Name>`` chain and
every attribute used on a TensorRT object, and look each one up in both string tables.

The linker merges string tails (``num_errors`` is stored inside ``get_num_errors``), so a name
counts as present when a stored string equals it or ends with it. The wheels are downloaded once
with ``pip download --no-deps`` into ``$XDG_CACHE_HOME/trtinfer-test/wheels`` (or
``$TRTINFER_TRT_WHEELS``); without network access those tests skip and say so. The static test of
removed APIs needs nothing and always runs.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_MODULES = sorted((REPO / "builders" / "engine").glob("*.py"))  # the engine build stage
TRT_BACKEND = REPO / "trtinfer" / "runtime" / "backends" / "tensorrt"
TRT_MODULES = [*BUILD_MODULES, *(TRT_BACKEND / name for name in ("loader.py", "runner.py", "lanes.py", "engine_io.py")),
               REPO / "scripts" / "gpu_inspector_dump.py"]

# Names that hold the tensorrt module in our code.
TRT_MODULE_NAMES = {"trt", "tensorrt"}
# Variable (or ``self._x`` attribute) names that hold TensorRT objects in our TensorRT modules.
# test_tensorrt_objects_are_bound_to_checked_names makes sure nothing escapes this list.
TRT_OBJECT_NAMES = {
    "builder", "network", "parser", "config", "profile", "cache", "timing_cache", "blob", "plan", "serialized",
    "runtime", "engine", "inspector", "context", "contexts", "execution_context", "tensor", "inputs", "outputs",
    "error", "severity", "dims", "host_memory",
}

# Removed in TensorRT 11 (or never to be used by trtinfer: engine host code), as attribute names.
REMOVED_ATTRIBUTES = {
    "execute_async_v2", "execute_v2", "execute_async", "build_engine", "build_cuda_engine", "max_workspace_size",
    "int8_calibrator", "num_bindings", "binding_is_input", "platform_has_fast_fp16", "platform_has_fast_int8",
    "platform_has_tf32", "EXPLICIT_BATCH", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
    "create_execution_context_without_device_memory", "device_memory_size", "set_calibration_profile",
    "get_calibration_profile", "algorithm_selector", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME",
    "engine_host_code_allowed", "max_batch_size",
}
REMOVED_PREFIXES = ("get_binding_", "IInt8", "IAlgorithm")
REMOVED_BUILDER_FLAGS = {"FP16", "INT8", "BF16", "FP8", "INT4", "FP4", "DIRECT_IO"}
# The list, checked as plain text too (comments and docstrings included).
REMOVED_TEXT = ["execute_async_v2", "execute_v2", ".build_engine(", "max_workspace_size", "BuilderFlag.FP16",
                "BuilderFlag.INT8", "int8_calibrator", "IInt8", "get_binding_", "binding_is_input", "num_bindings"]

WHEELS = {
    "TensorRT 10": ("tensorrt-cu12-bindings>=10,<11", "tensorrt_cu12_bindings-10.*.whl"),
    "TensorRT 11": ("tensorrt-cu13-bindings>=11,<12", "tensorrt_cu13_bindings-11.*.whl"),
}


def _modules() -> list[Path]:
    return [p for p in TRT_MODULES if p.is_file()]


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# -- collecting what our code uses ---------------------------------------------------------------------
def _root(node: ast.AST) -> ast.AST:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node


def _receiver_name(node: ast.AST) -> str | None:
    """``engine`` for ``engine``; ``context`` for ``self._context``; else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr.lstrip("_")
    return None


def _is_trt_object(node: ast.AST) -> bool:
    name = _receiver_name(node)
    return name in TRT_OBJECT_NAMES or name in TRT_MODULE_NAMES


def used_names(path: Path) -> dict[str, int]:
    """TensorRT names our module uses -> first line: ``trt.A.B`` chains, attributes of TensorRT objects,
    and ``getattr``-style string lookups on them. Dunders live in tensorrt/__init__.py, not the .so."""
    found: dict[str, int] = {}

    def add(name: str, node: ast.AST) -> None:
        if not (name.startswith("__") and name.endswith("__")):
            found.setdefault(name, node.lineno)

    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Attribute):
            chain, inner = [], node
            while isinstance(inner, ast.Attribute):
                chain.append(inner)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in TRT_MODULE_NAMES:
                for part in chain:
                    add(part.attr, part)
            elif _is_trt_object(node.value) and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                add(node.attr, node)
        elif isinstance(node, ast.Call) and len(node.args) >= 2 and _is_trt_object(node.args[0]):
            if isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                if isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr", "_call"):
                    add(node.args[1].value, node)
    return found


def _produces_trt_object(value: ast.AST) -> bool:
    """A call or subscript on the tensorrt module or a TensorRT object, or ``trt.A.B`` itself."""
    if isinstance(value, (ast.ListComp, ast.GeneratorExp)):
        value = value.elt
    if isinstance(value, ast.Attribute):
        return isinstance(_root(value), ast.Name) and _root(value).id in TRT_MODULE_NAMES
    if isinstance(value, (ast.Call, ast.Subscript)):
        inner = value.func if isinstance(value, ast.Call) else value.value
        if isinstance(inner, ast.Attribute):
            return _is_trt_object(inner.value) or (
                isinstance(_root(inner), ast.Name) and _root(inner).id in TRT_MODULE_NAMES)
        return _is_trt_object(inner)
    return False


def unchecked_bindings(path: Path) -> list[str]:
    """Places where a TensorRT object is bound to a name the collector would not follow."""
    problems = []
    for node in ast.walk(_tree(path)):
        pairs: list[tuple[ast.AST, ast.AST]] = []
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs.extend(zip(target.elts, node.value.elts))
                else:
                    pairs.append((target, node.value))
        elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            pairs.append((node.target, node.value))
        elif isinstance(node, (ast.For, ast.comprehension)) and _is_trt_object(node.iter):
            pairs.append((node.target, ast.Call(func=node.iter, args=[], keywords=[])))
        for target, value in pairs:
            if not _produces_trt_object(value):
                continue
            names = [target] if not isinstance(target, ast.Tuple) else list(target.elts)
            for t in names:
                name = _receiver_name(t)
                if name is not None and name not in TRT_OBJECT_NAMES and name not in TRT_MODULE_NAMES:
                    line = getattr(node, "lineno", getattr(t, "lineno", 0))
                    problems.append(f"{path.name}:{line}: TensorRT object bound to {ast.unparse(t)!r}")
    return problems


# -- the bindings' string tables -------------------------------------------------------------------------------
def _wheel_dir() -> Path:
    if os.environ.get("TRTINFER_TRT_WHEELS"):
        return Path(os.environ["TRTINFER_TRT_WHEELS"])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "trtinfer-test" / "wheels"


_DOWNLOAD_FAILED: dict[str, str] = {}  # one failed download per run, not one per test


def _wheel(label: str) -> Path:
    requirement, pattern = WHEELS[label]
    folder = _wheel_dir()
    found = sorted(folder.glob(pattern))
    if found:
        return found[-1]
    if label not in _DOWNLOAD_FAILED:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                                     "--disable-pip-version-check", "--timeout", "30", "--retries", "1", "-q",
                                     "-d", str(folder), requirement], capture_output=True, text=True, timeout=300)
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        except (OSError, subprocess.TimeoutExpired) as exc:
            last = str(exc)
        found = sorted(folder.glob(pattern))
        if found:
            return found[-1]
        _DOWNLOAD_FAILED[label] = last
    pytest.skip(f"cannot download {requirement} from the package index ({_DOWNLOAD_FAILED[label]}); "
                f"put the wheel in {folder} (or $TRTINFER_TRT_WHEELS) to run this check offline")


@lru_cache(maxsize=None)
def binding_strings(label: str) -> frozenset[str]:
    wheel = _wheel(label)
    with zipfile.ZipFile(wheel) as archive:
        members = [n for n in archive.namelist() if re.search(r"(^|/)tensorrt[^/]*\.so$", n)]
        assert members, f"{wheel.name} holds no tensorrt*.so: {archive.namelist()}"
        data = b"".join(archive.read(n) for n in members)
    return frozenset(m.group(1).decode("ascii") for m in re.finditer(rb"([\x20-\x7e]{2,})\x00", data))


@lru_cache(maxsize=None)
def _tails(label: str) -> frozenset[str]:
    """Every identifier-like suffix of every stored string (tail merging), for fast lookups."""
    out = set()
    for s in binding_strings(label):
        if len(s) <= 80:
            for i in range(len(s)):
                out.add(s[i:])
    return frozenset(out)


def present(label: str, name: str) -> bool:
    return name in _tails(label)


def _exact(label: str, name: str) -> bool:
    return name in binding_strings(label)


# -- tests ------------------------------------------------------------------------------------------------------------
def test_collector_sees_our_tensorrt_calls():
    names = {name for path in BUILD_MODULES for name in used_names(path)}
    for expected in ("Builder", "OnnxParser", "Runtime", "create_network", "NetworkDefinitionCreationFlag",
                     "STRONGLY_TYPED", "parse_from_file", "num_errors", "get_error", "node_name", "node_operator",
                     "desc", "create_builder_config", "set_memory_pool_limit", "MemoryPoolType", "WORKSPACE",
                     "builder_optimization_level", "profiling_verbosity", "ProfilingVerbosity", "DETAILED",
                     "create_optimization_profile", "set_shape", "add_optimization_profile", "create_timing_cache",
                     "set_timing_cache", "get_timing_cache", "serialize", "build_serialized_network",
                     "deserialize_cuda_engine", "create_engine_inspector", "get_engine_information",
                     "LayerInformationFormat", "JSON", "num_inputs", "get_input", "dtype", "shape", "name",
                     "create_execution_context", "set_input_shape", "execution_context"):  # the inspector's context
        assert expected in names, f"{expected} not collected from builders/engine/"
    support = used_names(TRT_BACKEND / "loader.py")
    for expected in ("ILogger", "Severity", "INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"):
        assert expected in support
    backend = {name for file in ("runner.py", "lanes.py", "engine_io.py") for name in used_names(TRT_BACKEND / file)}
    for expected in ("create_execution_context", "set_optimization_profile_async", "set_input_shape",
                     "set_tensor_address", "execute_async_v3", "num_io_tensors", "get_tensor_profile_shape"):
        assert expected in backend, f"{expected} not collected from the TensorRT backend"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_tensorrt_objects_are_bound_to_checked_names(path):
    assert unchecked_bindings(path) == [], "rename these variables or add them to TRT_OBJECT_NAMES"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_no_removed_api(path):
    source = path.read_text(encoding="utf-8")
    text_hits = [token for token in REMOVED_TEXT if token in source]
    assert not text_hits, f"{path.name} mentions removed TensorRT APIs: {text_hits}"
    hits = []
    for node in ast.walk(_tree(path)):
        names = []
        if isinstance(node, ast.Attribute):
            names.append(node.attr)
            if node.attr in REMOVED_BUILDER_FLAGS and isinstance(node.value, ast.Attribute) \
                    and node.value.attr == "BuilderFlag":
                hits.append(f"line {node.lineno}: BuilderFlag.{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"\w+", node.value):
            names.append(node.value)
        for name in names:
            if name in REMOVED_ATTRIBUTES or name.startswith(REMOVED_PREFIXES):
                hits.append(f"line {node.lineno}: {name}")
    assert not hits, f"{path.name} uses APIs TensorRT 11 removed (or engine host code): {hits}"


def test_removed_api_check_has_teeth(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(trt, config, context):\n"
                   "    config.set_flag(trt.BuilderFlag.FP16)\n"
                   "    context.execute_async_v2([], 0)\n")
    with pytest.raises(AssertionError, match="BuilderFlag.FP16"):
        test_no_removed_api(bad)
    escaped = tmp_path / "escaped.py"
    escaped.write_text("def f(trt, logger):\n    b = trt.Builder(logger)\n    return b.build_serialized_network\n")
    assert unchecked_bindings(escaped) == ["escaped.py:2: TensorRT object bound to 'b'"]


@pytest.mark.parametrize("label", sorted(WHEELS))
@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_every_name_exists_in_the_bindings(label, path):
    missing = {name: line for name, line in used_names(path).items() if not present(label, name)}
    assert not missing, (f"{path.name} uses names that {label}'s Python bindings do not have: "
                         + ", ".join(f"{n} (line {line})" for n, line in sorted(missing.items())))


def test_string_tables_know_what_tensorrt_11_removed():
    """The check can tell 10 from 11: names removed in 11 are in 10's table and not in 11's."""
    for name in ("EXPLICIT_BATCH", "int8_calibrator", "IInt8EntropyCalibrator2", "platform_has_fast_fp16",
                 "create_execution_context_without_device_memory", "OBEY_PRECISION_CONSTRAINTS"):
        assert _exact("TensorRT 10", name), f"{name} should be in TensorRT 10"
        assert not present("TensorRT 11", name), f"{name} should be gone from TensorRT 11"
    assert _exact("TensorRT 10", "FP16") and not _exact("TensorRT 11", "FP16")  # BuilderFlag.FP16
    for label in WHEELS:  # removed before 10 already
        for name in ("build_engine", "max_workspace_size", "num_bindings", "get_binding_index", "execute_async_v2"):
            assert not present(label, name), f"{name} in {label}"
        # ... and what we rely on is in both.
        for name in ("STRONGLY_TYPED", "build_serialized_network", "execute_async_v3", "set_tensor_address",
                     "device_memory_size_v2", "create_engine_inspector"):
            assert _exact(label, name), f"{name} missing from {label}"
