"""What one ``trtinfer bench`` run will time: the artifacts, the images every case sees, and the cases.

Artifacts are the ones given, checked to come from the benchmarked checkpoint, or built and cached
(:mod:`.artifact_cache`); the cases are ours on each artifact, the eager FP32 baseline and every peer
that applies to the asked backends, precisions and devices. Nothing here opens or times a case.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer import defaults
from trtinfer.errors import ArtifactError, DataError, TrtInferError
from trtinfer.manifest import PRECISIONS, Manifest

from . import cases as C
from . import gpu_cases as G
from . import openvino_peers as OV
from .options import BenchSettings
from .results import CaseResult

Say = Callable[[str], None]
#: Images every case is checked on against eager FP32 before it is timed (the first eval images when given).
CHECK_ROWS = 64
#: Calibration images of the PyTorch INT8 peer.
TORCH_CALIBRATION_ROWS = 256


@dataclass
class Artifacts:
    """The artifact directory and manifest of each precision, what building them cost, and why the
    others are missing."""

    found: dict[str, tuple[Path, Manifest]] = field(default_factory=dict)
    build_seconds: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class Inputs:
    """The images every case sees: the check rows, the timed batches, the labelled eval set."""

    check: np.ndarray
    check_source: str
    eval_x: np.ndarray | None = None
    eval_y: np.ndarray | None = None
    eval_source: str = ""
    calibration: np.ndarray | None = None

    def batch(self, size: int) -> np.ndarray:
        rows = self.eval_x if self.eval_x is not None and len(self.eval_x) else self.check
        reps = -(-size // len(rows))
        return np.ascontiguousarray(np.concatenate([rows] * reps)[:size])


# -- artifacts ---------------------------------------------------------------------------------

def find_artifacts(s: BenchSettings, sha: str, notes: list[str], say: Say, reporter: Any = None) -> Artifacts:
    """The artifacts given on the command line, or else the cached ones (built where missing)."""
    if s.artifact_dirs:
        return Artifacts(given_artifacts(s, sha))
    from .artifact_cache import cached_artifacts

    options = dict(s.build)
    if "int8" in s.precisions and not options.get("calib_data") and options.get("eval_data"):
        from trtinfer.calibration.sources import source_kind

        if source_kind(options["eval_data"]).startswith("cifar"):
            options["calib_data"] = options["eval_data"]
            notes.append(f"INT8 calibration images drawn from the train split of {options['eval_data']} "
                         "(no --calib-data given); the eval rows are its test split")
            say(notes[-1])
    cache = cached_artifacts(s.checkpoint, tuple(s.precisions), options, root=s.cache_root, rebuild=s.rebuild,
                             reporter=reporter, say=say)
    if not cache.built:
        say(f"reusing cached artifacts in {cache.directory}")
    return Artifacts({p: (d, Manifest.read(d)) for p, d in cache.artifacts.items()}, dict(cache.build_seconds),
                     dict(cache.failed))


def given_artifacts(s: BenchSettings, sha: str) -> dict[str, tuple[Path, Manifest]]:
    """``s.artifact_dirs`` by precision, each verified and built from the checkpoint of sha256 ``sha``."""
    found: dict[str, tuple[Path, Manifest]] = {}
    for directory in s.artifact_dirs:
        manifest = Manifest.read(directory)
        manifest.verify_files(directory)
        theirs = manifest.source.checkpoint_sha256
        if theirs != sha:
            raise ArtifactError(
                f"{directory} was built from checkpoint sha256 {str(theirs)[:16]}..., not from "
                f"{s.checkpoint} ({sha[:16]}...)",
                hint="pass the checkpoint the artifact was built from, or leave the artifact out and "
                     "let bench build its own")
        if manifest.precision in found:
            raise TrtInferError(f"two {manifest.precision} artifacts given ({found[manifest.precision][0]} "
                                f"and {directory})", hint="pass one artifact per precision")
        if manifest.precision in s.precisions:
            found[manifest.precision] = (Path(directory), manifest)
    return found


def skipped_precision(s: BenchSettings, precision: str, reason: str) -> list[CaseResult]:
    """One skipped row per backend of ours for a precision whose artifact could not be built."""
    return [CaseResult(backend, precision, "cpu", None, "offline", status="skipped", reason=reason)
            for backend in C.OURS if s.wants(backend)]


def check_same_input(artifacts: dict[str, tuple[Path, Manifest]]) -> None:
    shapes = {p: (tuple(m.input.shape), m.preprocess.input_size, tuple(m.preprocess.mean), tuple(m.preprocess.std))
              for p, (_, m) in artifacts.items()}
    if len(set(shapes.values())) > 1:
        raise ArtifactError(f"the artifacts expect different inputs: {shapes}",
                            hint="benchmark artifacts built with the same --input-size and normalisation")


# -- inputs ------------------------------------------------------------------------------------

def make_inputs(s: BenchSettings, manifest: Manifest, notes: list[str], say: Say) -> Inputs:
    """The eval set (with ``--eval-data``), calibration rows for the PyTorch INT8 peer, and the check rows:
    eval images, else calibration images, else seeded random inputs."""
    from trtinfer.calibration.calibset import make_calibration_set, make_eval_set

    b = s.build
    seed = b.get("seed") or defaults.SEED
    spec = manifest.preprocess
    eval_x = eval_y = None
    eval_source = ""
    if b.get("eval_data"):
        eval_set = make_eval_set(b["eval_data"], spec, labels=manifest.labels, limit=b.get("eval_samples"), seed=seed)
        eval_x, eval_y, eval_source = eval_set.x, eval_set.labels, eval_set.source
    else:
        notes.append("no accuracy ran: pass --eval-data (labelled test images) for the accuracy column")
        say(notes[-1])
    calib_source = b.get("calib_data") or b.get("eval_data")
    calibration = None
    if calib_source:
        try:
            calibration = make_calibration_set(calib_source, spec, samples=TORCH_CALIBRATION_ROWS, seed=seed).x
        except DataError as exc:
            notes.append(f"no calibration images for the PyTorch INT8 peer: {exc.one_line()}")
    if eval_x is not None:
        check, source = eval_x[:CHECK_ROWS], f"the first {min(CHECK_ROWS, len(eval_x))} eval images"
    elif calibration is not None:
        check, source = calibration[:CHECK_ROWS], "calibration images"
    else:
        shape = (CHECK_ROWS, *manifest.input.shape[1:])
        check, source = np.random.default_rng(0).standard_normal(shape, dtype=np.float32), "random inputs"
    return Inputs(np.ascontiguousarray(check), source, eval_x, eval_y, eval_source, calibration)


# -- cases -------------------------------------------------------------------------------------

def plan_cases(s: BenchSettings, threads: int, model: Any, artifacts: dict[str, tuple[Path, Manifest]],
               inputs: Inputs) -> list[C.Case]:
    """Every case the settings ask for, in the order they are opened and reported; none opened yet."""

    def factory() -> Any:
        return copy.deepcopy(model).eval()

    out: list[C.Case] = []
    cpu, cuda = s.wants_device("cpu"), s.wants_device("cuda")
    if cpu:  # the eager FP32 baseline always runs: every speed-up is against it
        out.append(C.TorchCase("torch-eager", factory, threads, note="eager PyTorch FP32, the reference"))
    for precision in PRECISIONS:
        if precision in artifacts:
            directory, manifest = artifacts[precision]
            out += _artifact_cases(s, threads, precision, directory, manifest, inputs)
    if cpu:
        out += _torch_cpu_cases(s, threads, factory, inputs)
    if cuda:
        for precision in ("fp32", "fp16"):
            if precision in s.precisions:
                if s.wants("torch-cuda"):
                    out.append(G.TorchCudaCase(factory, precision))
                if s.wants("torch-tensorrt"):
                    out.append(G.TorchTensorRTCase(factory, precision, inputs.check[:1], s.batch_sizes))
    return out


def _artifact_cases(s: BenchSettings, threads: int, precision: str, directory: Path, manifest: Manifest,
                    inputs: Inputs) -> list[C.Case]:
    """Ours on one artifact, and the peers that run the same ONNX file."""
    out: list[C.Case] = []
    cpu, cuda = s.wants_device("cpu"), s.wants_device("cuda")
    for backend in C.OURS:
        device = "cuda" if backend == "tensorrt" else "cpu"
        if s.wants(backend) and (backend == "auto" or s.wants_device(device)):
            out.append(C.RuntimeCase(directory, manifest, backend, threads))
    if cpu and s.wants("openvino") and threads >= 2:  # the throughput configuration, as benchmark_app's hint runs
        out.append(C.ConcurrentRuntimeCase(directory, manifest, threads, callers=min(threads, 2)))
    if cpu and precision == "fp32" and s.wants("onnxruntime-bare"):
        out += [C.BareOrtCase(directory, manifest, threads, spin) for spin in (True, False)]
    if cpu and precision in ("fp32", "int8") and s.wants(OV.BENCHMARK_APP):
        out += OV.artifact_cases(directory, manifest, threads, s.batch_sizes)
    nncf_row, app_rows = s.wants(OV.NNCF), s.wants(OV.BENCHMARK_APP)
    if cpu and precision == "fp32" and "int8" in s.precisions and (nncf_row or app_rows):
        out += OV.nncf_cases(directory, threads, inputs.calibration, s.batch_sizes, nncf_row, app_rows)
    if cuda:
        out += [G.OrtGpuCase(b, directory, manifest) for b in ("ort-cuda", "ort-tensorrt") if s.wants(b)]
    return out


def _torch_cpu_cases(s: BenchSettings, threads: int, factory: Callable[[], Any], inputs: Inputs) -> list[C.Case]:
    out: list[C.Case] = []
    if s.wants("torchscript") and "fp32" in s.precisions:
        out.append(C.TorchScriptCase(factory, threads, inputs.check))
    if s.wants("torch-compile") and "fp32" in s.precisions:
        out.append(C.TorchCompileCase(factory, threads))
    if s.wants("torch-dynamic-quant") and "int8" in s.precisions:
        out.append(C.TorchDynamicQuantCase(factory, threads))
    if s.wants("torch-int8") and "int8" in s.precisions:
        out.append(C.TorchInt8Case(factory, threads, inputs.calibration))
    return out


def case_ids(cases: list[C.Case]) -> list[str]:
    """One name per case, its label, numbered where two share one (the two bare ONNX Runtime sessions)."""
    seen: dict[str, int] = {}
    out = []
    for case in cases:
        base = f"{case.info.label}"
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base} #{seen[base]}")
    return out
