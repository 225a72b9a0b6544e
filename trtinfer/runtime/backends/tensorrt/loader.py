"""TensorRT for the engine build and the runtime: the import guard, the one logger bridge, whether
TensorRT can run here, plan compatibility, and engines deserialized in one place (CUDA itself is
:mod:`.cuda` and :mod:`.devices`).

Everything here imports TensorRT and cuda-python lazily, so ``import trtinfer`` and
``trtinfer --help`` work on hosts without either. Failures become :class:`BackendUnavailable`
with one line saying what is missing and how to get it.
"""

from __future__ import annotations

import collections
import logging
import threading
from pathlib import Path
from typing import Any

from ....errors import ArtifactError, BackendUnavailable, TrtInferError
from ....manifest import PLAN_NAME, Manifest
from . import devices
from .cuda import INSTALL_HINT

log = logging.getLogger(__name__)

MIN_TENSORRT_MAJOR = 10
REBUILD_HINT = "rebuild with `trtinfer build --from-onnx {dir}`"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- TensorRT ------------------------------------------------------------------------------
def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or BackendUnavailable saying why it cannot be used here."""
    try:
        import tensorrt
    except ImportError as exc:
        missing = getattr(exc, "name", None) in ("tensorrt", "tensorrt_bindings")
        what = "TensorRT is not installed" if missing else f"TensorRT cannot be imported ({_one_line(exc)})"
        raise BackendUnavailable(what, hint=INSTALL_HINT) from exc
    except Exception as exc:  # the bindings exist but libnvinfer cannot be loaded
        raise BackendUnavailable(f"TensorRT is installed but its libraries cannot be loaded ({_one_line(exc)})",
                                 hint="install the TensorRT libraries matching the Python bindings "
                                      "(pip install 'trtinfer[tensorrt]')") from exc
    version = str(getattr(tensorrt, "__version__", "0"))
    if tensorrt_major(version) < MIN_TENSORRT_MAJOR:
        raise BackendUnavailable(f"TensorRT {version} is too old; trtinfer needs TensorRT {MIN_TENSORRT_MAJOR} or newer",
                                 hint="pip install -U 'trtinfer[tensorrt]'")
    return tensorrt


def tensorrt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def trt_version() -> str:
    return str(import_tensorrt().__version__)


_LOGGER_LOCK = threading.Lock()
_LOGGER: Any = None
_RECENT_ERRORS = 20
_MAX_REMEMBERED_WARNINGS = 2048


def trt_logger() -> Any:
    """The one TensorRT ILogger of this process, bridged to Python ``logging``.

    It never raises into TensorRT, reports each distinct warning once, and remembers the last
    errors so a failed build can say why (``trt_logger().drain_errors()``).
    """
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:
            _LOGGER = _make_logger(import_tensorrt())
        return _LOGGER


def _make_logger(trt: Any) -> Any:
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.DEBUG,  # TensorRT's INFO is build chatter
        severity.VERBOSE: logging.DEBUG,
    }
    trt_log = logging.getLogger("trtinfer.tensorrt")

    class LoggingBridge(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self._lock = threading.Lock()
            self._warned: set[str] = set()
            self._errors: collections.deque[str] = collections.deque(maxlen=_RECENT_ERRORS)

        def log(self, sev: Any, msg: str) -> None:  # called by TensorRT, from any thread
            try:
                level = levels.get(sev, logging.DEBUG)
                text = str(msg)
                with self._lock:
                    if level >= logging.ERROR:
                        self._errors.append(text)
                    elif level == logging.WARNING:
                        if text in self._warned:
                            return
                        if len(self._warned) < _MAX_REMEMBERED_WARNINGS:
                            self._warned.add(text)
                if trt_log.isEnabledFor(level):
                    trt_log.log(level, "%s", text)
            except Exception:  # never raise into TensorRT
                pass

        def drain_errors(self) -> list[str]:
            with self._lock:
                errors = list(self._errors)
                self._errors.clear()
            return errors

    return LoggingBridge()


def logged_error() -> str:
    """``": <TensorRT's last logged error>"`` to end a message with, or ``""`` (diagnostics only)."""
    try:
        errors = trt_logger().drain_errors()
    except Exception:  # noqa: BLE001 -- diagnostics only
        return ""
    return f": {errors[-1]}" if errors else ""


# -- availability and compatibility ------------------------------------------------------------
def tensorrt_available(device: int = 0) -> tuple[bool, str]:
    """Whether TensorRT can build and run engines here, and why (not)."""
    problems = []
    gpu = None
    try:
        gpu = devices.gpu_info(device)
    except TrtInferError as exc:  # no GPU, or CUDA unusable (a driver older than the CUDA libraries)
        problems.append(exc.message)
    except Exception as exc:
        problems.append(f"GPU probe failed ({_one_line(exc)})")
    version = None
    try:
        version = trt_version()
    except BackendUnavailable as exc:
        problems.append(exc.message)
    except Exception as exc:
        problems.append(f"TensorRT probe failed ({_one_line(exc)})")
    if problems or gpu is None:
        return False, "; ".join(problems)
    return True, f"TensorRT {version} on {gpu['name']} (compute capability {gpu['compute_capability']})"


def check_plan_compatible(manifest: Manifest, trt_version: str, gpu_name: str, compute_capability: str,
                          artifact_dir: str | Path | None = None) -> None:
    """Refuse a plan built for another TensorRT version or GPU architecture, in one line.

    Engines are tied to the exact TensorRT version and the compute capability they were built on
    (trtinfer never builds version- or hardware-compatible engines: they embed host code). A
    different GPU model of the same compute capability loads, with a warning.
    """
    where = str(artifact_dir) if artifact_dir is not None else "DIR"
    hint = REBUILD_HINT.format(dir=where)
    record = manifest.engine
    if record is None:
        raise ArtifactError(f"the manifest of {manifest.name!r} has no engine record, so its {PLAN_NAME} "
                            "cannot be checked against this host", hint=hint)
    built_trt, built_cc, built_gpu = record.tensorrt_version, record.compute_capability, record.gpu_name
    mismatches = []
    if str(built_trt) != str(trt_version):
        mismatches.append(f"TensorRT {built_trt} (this host has TensorRT {trt_version})")
    if str(built_cc) != str(compute_capability):
        mismatches.append(f"compute capability {built_cc}, {built_gpu} (this host's GPU is "
                          f"compute capability {compute_capability}, {gpu_name})")
    if mismatches:
        raise ArtifactError(f"{PLAN_NAME} of {manifest.name!r} was built for " + " and ".join(mismatches)
                            + "; a TensorRT engine only runs where it was built", hint=hint)
    if built_gpu != gpu_name:
        log.warning("%s of %r was built on %s and is loaded on %s (same compute capability %s); it runs, "
                    "but its kernels were timed on the other GPU: %s for best speed",
                    PLAN_NAME, manifest.name, built_gpu, gpu_name, compute_capability, hint)


# -- loading a plan --------------------------------------------------------------------------------
class PlanIncompatibleError(ArtifactError):
    """The plan was built for another TensorRT version or GPU, or TensorRT cannot deserialize it."""


def check_plan_for_gpu(manifest: Manifest, device: int, artifact_dir: str | Path) -> dict[str, Any]:
    """GPU ``device``'s :func:`~.devices.gpu_info`, once the plan is known to be built for it and for
    this TensorRT (else :class:`PlanIncompatibleError`, which ``load(backend="auto")`` falls back from)."""
    trt = import_tensorrt()
    info = devices.gpu_info(device)
    try:
        check_plan_compatible(manifest, str(trt.__version__), info["name"], info["compute_capability"], artifact_dir)
    except ArtifactError as exc:
        raise PlanIncompatibleError(exc.message, hint=exc.hint) from exc
    return info


def deserialize_engine(plan: bytes, artifact_dir: str | Path) -> tuple[Any, Any]:
    """``(runtime, engine)`` from the plan's bytes. The caller keeps both and drops the engine first
    (TensorRT's ownership order); a None from TensorRT is :class:`PlanIncompatibleError` with its reason."""
    trt = import_tensorrt()
    runtime = trt.Runtime(trt_logger())
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise PlanIncompatibleError(f"TensorRT {trt.__version__} could not deserialize "
                                    f"{Path(artifact_dir) / PLAN_NAME}{logged_error()}",
                                    hint=REBUILD_HINT.format(dir=artifact_dir))
    return runtime, engine
