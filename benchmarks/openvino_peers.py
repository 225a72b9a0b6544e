"""OpenVINO peers set up the way OpenVINO's users run them, not with our compile config.

* ``openvino-benchmark_app``: OpenVINO's own ``benchmark_app`` on a model file (each artifact's
  ``model.onnx``, and the NNCF IR below), as its users run it: ``-d CPU``, a static shape per batch
  size (``-shape``), the async API, ``-hint throughput`` or ``-hint latency`` (two rows), OpenVINO's
  default inference precision (no ``-infer_precision``: bf16 on CPUs with native BF16), the bench's
  thread count. ``benchmark_app`` refuses ``-nthreads`` beside a hint (a rule of its command line,
  not of OpenVINO), so the threads go in through ``-load_config``. Its input is held to f32 (``-ip
  f32``; it would feed u8 to an image input by default), as every case of the bench takes
  preprocessed float images. The row's throughput and latency are the ones ``benchmark_app``
  reports; its check against eager FP32 runs the same file compiled in this process with the same
  configuration (:func:`peer_config`), because ``benchmark_app`` returns no outputs.
* ``openvino-nncf``: NNCF's post-training INT8 of our FP32 ONNX as an OpenVINO IR (:class:`NncfIR`,
  quantized once and shared with ``benchmark_app`` on its IR), compiled with OpenVINO's defaults and
  the latency hint for per-call timing.

A model OpenVINO cannot compile under its defaults (our INT8 artifact of a standard-stem ResNet-18
under bf16 on AMX CPUs: "No suitable implementations") makes the row ``failed`` with OpenVINO's
message on one line (:func:`one_line`).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer.manifest import ONNX_NAME, Manifest
from trtinfer.runtime.backends.openvino.loader import users_default_precision
from trtinfer.versions import module_available

from .cases import INSTALL, Case, CaseInfo, Skip, timed
from .measure import Window

BENCHMARK_APP = "openvino-benchmark_app"
NNCF = "openvino-nncf"
#: benchmark_app's performance hints timed, one row each.
HINTS = ("throughput", "latency")
#: The fewest iterations one benchmark_app run does (its async loop keeps several requests in flight).
MIN_ITERATIONS = 4
#: A benchmark_app run that takes longer than this is stopped and the row fails.
RUN_TIMEOUT_SECONDS = 600.0
MEASURED_BY = "benchmark_app (its own report)"


class BenchmarkAppFailed(RuntimeError):
    """benchmark_app (or the same compile in this process) failed; ``str(exc)`` is OpenVINO's message on one line."""


def find_benchmark_app() -> str | None:
    """The ``benchmark_app`` console script beside this Python (a virtual environment's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "benchmark_app"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("benchmark_app")


def peer_config(threads: int, hint: str) -> dict[str, Any]:
    """What an OpenVINO user compiles with: OpenVINO's defaults, a performance ``hint`` and the bench's
    thread count; no INFERENCE_PRECISION_HINT (OpenVINO's default precision) and no stream count (the
    hint picks it; said as f32 only where the kernels are held below BF16, see
    :func:`~trtinfer.runtime.backends.openvino.loader.users_default_precision`)."""
    return {"PERFORMANCE_HINT": hint.upper(), "INFERENCE_NUM_THREADS": int(threads), **users_default_precision()}


def one_line(message: str, limit: int = 400) -> str:
    """OpenVINO's multi-line exception text on one line: the "Exception from <file>:<line>:" frames dropped,
    the check that failed and its message kept."""
    lines = [ln.strip() for ln in message.splitlines()]
    kept = [ln for ln in lines if ln and not ln.startswith("Exception from ")]
    text = " ".join(kept) or message.strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


def error_line(output: str) -> str:
    """The error of a failed benchmark_app run, on one line: the ``[ ERROR ]`` block it prints before its
    traceback, else the last line it printed."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("[ ERROR ]"):
            block = [line[len("[ ERROR ]"):]]
            for following in lines[i + 1:]:
                if following.startswith(("Traceback", "[ ")):
                    break
                block.append(following)
            return one_line("\n".join(block))
    tail = [ln.strip() for ln in lines if ln.strip()]
    return one_line(tail[-1]) if tail else "benchmark_app printed nothing"


@dataclass
class AppReport:
    """One benchmark_app run's figures, as it printed them."""

    iterations: int
    duration_ms: float
    throughput: float  # images/s ("FPS": batch x iterations / duration)
    latency_ms: dict[str, float]  # p50 (its median), mean, min, max of each request
    requests: int | None = None  # infer requests in flight
    streams: int | None = None
    inference_precision: str | None = None  # what the compiled model reports, e.g. bf16


_FIGURES = {"iterations": r"Count:\s+(\d+) iterations", "duration": r"Duration:\s+([\d.]+) (ms|us|ns|s)\b",
            "throughput": r"Throughput:\s+([\d.]+) FPS"}
_LATENCY = {"p50": "Median", "mean": "Average", "min": "Min", "max": "Max"}
#: benchmark_app prints a time in the unit that suits it (a tiny model's latencies in us).
_TO_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "ns": 1e-6}


def parse_report(output: str) -> AppReport:
    """The figures of benchmark_app's report (its log on stdout); ValueError where one is missing."""
    found: dict[str, re.Match[str]] = {}
    for key, pattern in _FIGURES.items():
        m = re.search(pattern, output)
        if m is None:
            raise ValueError(f"benchmark_app's output has no {key} line ({pattern!r}): {error_line(output)}")
        found[key] = m
    latency = {}
    for key, name in _LATENCY.items():
        m = re.search(rf"^\[ INFO \]\s+{name}:\s+([\d.]+) (ms|us|ns|s)\b", output, re.MULTILINE)
        if m is not None:
            latency[key] = float(m.group(1)) * _TO_MS[m.group(2)]
    requests = re.search(r"Start inference \w+, (\d+) inference requests", output)
    streams = re.search(r"^\[ INFO \]\s+NUM_STREAMS: (\d+)", output, re.MULTILINE)
    precision = re.search(r"INFERENCE_PRECISION_HINT: <Type: '(\w+)'>", output)
    duration = found["duration"]
    return AppReport(int(found["iterations"].group(1)), float(duration.group(1)) * _TO_MS[duration.group(2)],
                     float(found["throughput"].group(1)), latency,
                     int(requests.group(1)) if requests else None, int(streams.group(1)) if streams else None,
                     _short_type(precision.group(1)) if precision else None)


def _short_type(name: str) -> str:
    return {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}.get(name, name)


def benchmark_app_command(exe: str, model: Path, shape: list[int], hint: str, config: Path, *,
                          iterations: int | None = None, seconds: int | None = None) -> list[str]:
    """The benchmark_app command line of one run: ``iterations`` (``-niter``) or whole ``seconds`` (``-t``)."""
    cmd = [exe, "-m", str(model), "-d", "CPU", "-hint", hint, "-api", "async",
           "-shape", "[" + ",".join(map(str, shape)) + "]", "-ip", "f32", "-load_config", str(config)]
    if iterations is not None:
        cmd += ["-niter", str(iterations)]
    elif seconds is not None:
        cmd += ["-t", str(seconds)]
    return cmd


def run_benchmark_app(cmd: list[str], timeout: float = RUN_TIMEOUT_SECONDS) -> AppReport:
    """Run one benchmark_app command and parse its report; BenchmarkAppFailed with its error on one line."""
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise BenchmarkAppFailed(f"benchmark_app ran past {timeout:g} s: {' '.join(cmd)}") from None
    if done.returncode != 0:
        raise BenchmarkAppFailed(error_line(done.stdout))
    try:
        return parse_report(done.stdout)
    except ValueError as exc:
        raise BenchmarkAppFailed(str(exc)) from None


class AppWorkload:
    """The bench's timing rules with benchmark_app doing the timing: each window is one run, ``-t`` whole
    seconds or ``-niter`` iterations (``calls`` when ``--iterations`` is given, else the rate of one short
    probe run times the window). A window's latencies stay empty: the row takes benchmark_app's own figures
    (:meth:`latency_ms`)."""

    def __init__(self, run: Callable[..., AppReport], batch: int, calls: int | None = None) -> None:
        self.run = run
        self.batch = batch
        self.calls = calls
        self.rate: float | None = None  # iterations per second, from the warm-up run
        self.reports: list[AppReport] = []

    def warmup(self, calls: int, seconds: float) -> None:
        """Nothing to warm here: each run is a process of its own, and benchmark_app leaves its first
        inference out of its figures."""

    def _probe(self) -> None:
        """One short run for the rate that sizes a sub-second window (outside every window)."""
        report = self.run(iterations=MIN_ITERATIONS)
        self.rate = report.iterations / (report.duration_ms / 1e3) if report.duration_ms > 0 else 0.0

    def window_args(self, seconds: float) -> dict[str, int]:
        if self.calls:
            return {"iterations": max(self.calls, 1)}
        if seconds >= 1 and float(seconds).is_integer():
            return {"seconds": int(seconds)}
        if self.rate is None:
            self._probe()
        return {"iterations": max(MIN_ITERATIONS, math.ceil((self.rate or 0.0) * seconds))}

    def window(self, seconds: float) -> Window:
        report = self.run(**self.window_args(seconds))
        self.reports.append(report)
        items = self.batch * report.iterations
        # the window's time from benchmark_app's own rate (its printed duration is rounded to 0.01 ms)
        return Window(items=items, seconds=items / report.throughput if report.throughput > 0 else 0.0,
                      latencies=np.empty(0))

    def latency_ms(self) -> dict[str, float]:
        """Each of benchmark_app's latency figures, the median over this workload's windows."""
        keys = {k for r in self.reports for k in r.latency_ms}
        return {k: float(statistics.median(r.latency_ms[k] for r in self.reports if k in r.latency_ms))
                for k in sorted(keys)}

    def settings(self) -> dict[str, Any]:
        """What benchmark_app chose under the hint, from its last report."""
        last = self.reports[-1] if self.reports else None
        if last is None:
            return {}
        return {k: v for k, v in (("requests", last.requests), ("streams", last.streams),
                                  ("inference_precision", last.inference_precision)) if v is not None}


def compile_error(exc: Exception) -> BenchmarkAppFailed:
    return BenchmarkAppFailed(one_line(str(exc)))


class NncfIR:
    """NNCF's post-training INT8 (its default preset) of an FP32 ONNX, as an OpenVINO model: quantized
    once on first use on the given calibration images, shared by the ``openvino-nncf`` row and
    benchmark_app on its IR (saved to a temporary .xml on first :meth:`xml`)."""

    def __init__(self, onnx: Path, calibration: np.ndarray | None) -> None:
        self.onnx = onnx
        self.calibration = calibration
        self._model: Any = None
        self._failure: Exception | None = None
        self._dir: str | None = None
        self.version = ""

    def model(self) -> Any:
        if self._failure is not None:
            raise Skip(f"NNCF's INT8 model is not there: {self._failure}")
        if self._model is None:
            try:
                self._model = self._quantize()
            except Exception as exc:
                self._failure = exc
                raise
        return self._model

    def _quantize(self) -> Any:
        if self.calibration is None:
            raise Skip("needs calibration images (--calib-data, or a CIFAR --eval-data folder)")
        if not (module_available("nncf") and module_available("openvino")):
            raise Skip(f"NNCF or OpenVINO is not installed; {INSTALL[NNCF]}")
        import nncf
        import openvino as ov

        from trtinfer.builders.precision.nncf_int8 import quiet_nncf

        # quiet_nncf swaps the "nncf" logger's handlers for the call and puts them back; nncf.set_log_level(ERROR)
        # set the level of every handler that logger held, which in the test run included the root logger's and
        # silenced every warning for the rest of the process
        with quiet_nncf([]):
            items = [self.calibration[i:i + 1] for i in range(len(self.calibration))]
            quantized = nncf.quantize(ov.convert_model(str(self.onnx)), nncf.Dataset(items), subset_size=len(items))
        self.version = nncf.__version__
        return quantized

    def xml(self) -> Path:
        model = self.model()
        if self._dir is None or not Path(self._dir).is_dir():
            import openvino as ov

            self._dir = tempfile.mkdtemp(prefix="trtinfer-bench-nncf-")
            # compress_to_fp16=False: the IR holds the float weights NNCF left as they are in memory
            ov.save_model(model, str(Path(self._dir) / "model.xml"), compress_to_fp16=False)
        return Path(self._dir) / "model.xml"

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _inference_precision(compiled: Any) -> str:
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    return value.to_string() if hasattr(value, "to_string") else str(value)


class OpenVINONncfCase(Case):
    """OpenVINO on NNCF's own INT8 model of our FP32 ONNX (:class:`NncfIR`), compiled as OpenVINO's users
    compile it: its default inference precision for the float layers and the latency hint, which suits
    the bench's per-call timing. Its async throughput is benchmark_app's row on the same IR."""

    NOTE = ("NNCF PTQ of our FP32 ONNX as OpenVINO IR, same calibration images; compiled with OpenVINO's defaults "
            "(its default inference precision for float layers, no f32 hint) and the LATENCY hint for per-call "
            "timing; async throughput on this IR: the openvino-benchmark_app (…, NNCF IR) rows")

    def __init__(self, ir: NncfIR, threads: int) -> None:
        super().__init__(CaseInfo(NNCF, "int8", "cpu", "peer", {"threads": threads, "hint": "latency"}, self.NOTE))
        self.ir = ir
        self.request: Any = None

    def open(self) -> None:
        with timed(self):
            model = self.ir.model()
            import openvino as ov

            try:
                compiled = ov.Core().compile_model(model, "CPU", peer_config(self.info.options["threads"], "latency"))
            except RuntimeError as exc:
                raise compile_error(exc) from None
        self.info.options["nncf"] = self.ir.version
        self.info.options["inference_precision"] = _inference_precision(compiled)
        self.request = compiled.create_infer_request()
        self._output = compiled.outputs[0]

    def infer(self, x: np.ndarray) -> np.ndarray:
        return np.array(self.request.infer({0: x}, share_inputs=True)[self._output], copy=True)

    def close(self) -> None:
        self.request = None
        self.ir.close()


class BenchmarkAppCase(Case):
    """benchmark_app with one ``hint`` on one model file (an artifact's ONNX, or the NNCF IR). ``infer`` runs
    the same file compiled in this process with :func:`peer_config` and the same static shape, for the check
    against eager FP32; the timing comes from benchmark_app's report (:meth:`workload`). ``model`` is a file,
    or the :class:`NncfIR` whose temporary .xml it runs."""

    def __init__(self, model: Path | NncfIR, precision: str, threads: int, hint: str,
                 batch_sizes: tuple[int, ...], source: str = "") -> None:
        variant = hint + (f", {source}" if source else "")
        super().__init__(CaseInfo(BENCHMARK_APP, precision, "cpu", "peer",
                                  {"threads": threads, "variant": variant, "hint": hint, "api": "async",
                                   "shape": "static", "measured_by": MEASURED_BY},
                                  f"OpenVINO's benchmark_app, -hint {hint}, async, static shape, OpenVINO's default "
                                  "inference precision; its check runs the same file compiled here the same way"))
        self.model_path = model
        self.batch_sizes = batch_sizes
        self.exe: str | None = None
        self._dir: str | None = None
        self._model: Any = None
        self._compiled: dict[int, tuple[Any, Any]] = {}

    def _path(self) -> Path:
        return self.model_path if isinstance(self.model_path, Path) else self.model_path.xml()

    def open(self) -> None:
        self.exe = find_benchmark_app()
        if self.exe is None or not module_available("openvino"):
            raise Skip(f"OpenVINO's benchmark_app is not installed (not beside {sys.executable} nor on PATH); "
                       f"{INSTALL[BENCHMARK_APP]}")
        import openvino as ov

        path = self._path()
        self.info.options["model"] = str(path)
        self._dir = tempfile.mkdtemp(prefix="trtinfer-bench-app-")
        config = {k: str(v) for k, v in peer_config(self.info.options["threads"], "latency").items()
                  if k != "PERFORMANCE_HINT"}  # the hint goes in as -hint
        (Path(self._dir) / "config.json").write_text(json.dumps({"CPU": config}))
        with timed(self):
            self.core = ov.Core()
            self._model = self.core.read_model(str(path))
            for batch in self.batch_sizes:
                self._request(batch)

    def _request(self, batch: int) -> tuple[Any, Any]:
        """The in-process model compiled for ``batch`` (static shape) with benchmark_app's configuration."""
        if batch not in self._compiled:
            model = self._model.clone()
            shape = list(model.inputs[0].get_partial_shape())
            model.reshape({0: [batch, *(d.get_length() for d in shape[1:])]})
            try:
                compiled = self.core.compile_model(model, "CPU", peer_config(self.info.options["threads"],
                                                                             self.info.options["hint"]))
            except RuntimeError as exc:
                raise compile_error(exc) from None
            self.info.options["inference_precision"] = _inference_precision(compiled)
            self._compiled[batch] = (compiled.create_infer_request(), compiled.outputs[0])
        return self._compiled[batch]

    def infer(self, x: np.ndarray) -> np.ndarray:
        request, output = self._request(len(x))
        return np.array(request.infer({0: x}, share_inputs=True)[output], copy=True)

    def run(self, batch: int, *, iterations: int | None = None, seconds: int | None = None) -> AppReport:
        assert self.exe is not None and self._dir is not None, "open() first"
        shape = [batch, *self._row_shape()]
        return run_benchmark_app(benchmark_app_command(self.exe, self._path(), shape, self.info.options["hint"],
                                                       Path(self._dir) / "config.json", iterations=iterations,
                                                       seconds=seconds))

    def _row_shape(self) -> list[int]:
        return [d.get_length() for d in list(self._model.inputs[0].get_partial_shape())[1:]]

    def workload(self, x: np.ndarray) -> AppWorkload:
        return AppWorkload(functools.partial(self.run, len(x)), len(x))

    def close(self) -> None:
        self._compiled.clear()
        self._model = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        if isinstance(self.model_path, NncfIR):
            self.model_path.close()  # its temporary IR; saved again should a case still need it


def artifact_cases(directory: Path, manifest: Manifest, threads: int, batch_sizes: tuple[int, ...]) -> list[Case]:
    """benchmark_app with each hint on one artifact's model.onnx."""
    return [BenchmarkAppCase(directory / ONNX_NAME, manifest.precision, threads, hint, batch_sizes) for hint in HINTS]


def nncf_cases(directory: Path, threads: int, calibration: np.ndarray | None, batch_sizes: tuple[int, ...],
               nncf_row: bool, app_rows: bool) -> list[Case]:
    """The ``openvino-nncf`` row and benchmark_app on its IR, sharing one quantized model."""
    ir = NncfIR(directory / ONNX_NAME, calibration)
    out: list[Case] = [OpenVINONncfCase(ir, threads)] if nncf_row else []
    if app_rows:
        out += [BenchmarkAppCase(ir, "int8", threads, hint, batch_sizes, "NNCF IR") for hint in HINTS]
    return out
