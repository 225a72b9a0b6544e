"""``trtinfer bench``: our runtime against eager PyTorch and the peers, on the same weights and images.

The order of work, and why:

1. the checkpoint is loaded the way ``trtinfer build`` loads it, giving the eager FP32 reference;
2. artifacts are the ones given, checked to come from that checkpoint, or built and cached;
3. every case is opened and checked against eager FP32 **before** it is timed (correctness
   before speed): a case computing something else is reported as failed and never timed; with
   ``--eval-data`` every case's top-1 on the same labelled images comes with its speed;
4. cases are timed per batch size in interleaved rounds (:mod:`.measure`), then the server
   scenario runs N clients through the runtime's dynamic batcher (:mod:`.server`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer.cpu_info import usable_cores
from trtinfer.errors import ArtifactError, DataError, TrtInferError
from trtinfer.execution import CPU_EXECUTIONS
from trtinfer.manifest import PRECISIONS, Manifest

from . import cases as C
from .environment import collect_environment
from .measure import (DEFAULT_MAX_WINDOWS, CallWorkload, resident_mb, DEFAULT_WARMUP_CALLS, DEFAULT_WARMUP_SECONDS, DEFAULT_WINDOW_SECONDS,
                      Measured, interleave)
from .results import BenchResults, CaseResult
from .server import DEFAULT_CONCURRENCY, DEFAULT_LATENCY_BOUND_MS, ServerWorkload, best_under_bound

log = logging.getLogger(__name__)
LOSSY_EXECUTIONS = {e.name for e in CPU_EXECUTIONS if e.lossy}  # judged by the FP16 allowance, not export tolerance

DEFAULT_BATCH_SIZES = (1, 8, 32, 128)
DEVICES = ("cpu", "cuda", "all")
CHECK_ROWS = 64
TORCH_CALIBRATION_ROWS = 256
#: Without labelled data, a reduced-precision case must still agree with eager FP32 on this share
#: of the check rows: a sanity floor that catches a backend computing something else, not an
#: accuracy figure (that needs --eval-data, and then the build's guard allowance applies).
SANITY_AGREEMENT = 0.90
#: The done-when figures of the bench issue, reported in the summary.
HEADLINE_BATCH = 32
HEADLINE_MAX_DROP = 0.5


@dataclass
class BenchSettings:
    checkpoint: Path
    artifact_dirs: list[Path] = field(default_factory=list)
    backends: tuple[str, ...] | None = None  # None: every backend that applies
    precisions: tuple[str, ...] = PRECISIONS
    device: str = "all"
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    threads: int | None = None
    seconds: float = DEFAULT_WINDOW_SECONDS
    iterations: int | None = None
    warmup: int = DEFAULT_WARMUP_CALLS
    warmup_seconds: float = DEFAULT_WARMUP_SECONDS
    max_windows: int = DEFAULT_MAX_WINDOWS
    scenarios: tuple[str, ...] = ("single-stream", "offline", "server")
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    latency_bound_ms: float = DEFAULT_LATENCY_BOUND_MS
    build: dict[str, Any] = field(default_factory=dict)  # BuildOptions fields: model and data options
    rebuild: bool = False
    cache_root: Path | None = None

    def check(self) -> None:
        unknown = [b for b in (self.backends or ()) if b not in C.ALL_BACKENDS]
        if unknown:
            raise TrtInferError(f"unknown backend(s) {', '.join(unknown)}",
                                hint=f"known backends: {', '.join(C.ALL_BACKENDS)}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise TrtInferError(f"unknown precision(s) {', '.join(bad) or '(none)'}", hint=f"use {', '.join(PRECISIONS)}")
        if self.device not in DEVICES:
            raise TrtInferError(f"--device {self.device!r} is not one of {', '.join(DEVICES)}")
        if not self.batch_sizes or any(b < 1 or b > 4096 for b in self.batch_sizes):
            raise TrtInferError(f"--batch-sizes {','.join(map(str, self.batch_sizes))}: each must be 1..4096")
        if not self.concurrency or any(c < 1 or c > 1024 for c in self.concurrency):
            raise TrtInferError(f"--concurrency {','.join(map(str, self.concurrency))}: each must be 1..1024")
        if self.threads is not None and not 1 <= self.threads <= 4 * usable_cores():
            raise TrtInferError(f"--threads {self.threads} must be 1..{4 * usable_cores()} (4x the usable cores)")
        if not (math.isfinite(self.seconds) and 0 < self.seconds <= 600):
            raise TrtInferError(f"--seconds {self.seconds} must be a number of seconds in (0, 600]")
        if self.iterations is not None and not 1 <= self.iterations <= 10**6:
            raise TrtInferError(f"--iterations {self.iterations} must be 1..1000000")
        if not (math.isfinite(self.latency_bound_ms) and self.latency_bound_ms > 0):
            raise TrtInferError(f"--latency-bound-ms {self.latency_bound_ms} must be a positive number")
        if self.max_windows < 3:
            raise TrtInferError(f"--max-windows {self.max_windows} must be at least 3 (three windows must agree)")

    def wants(self, backend: str) -> bool:
        return self.backends is None or backend in self.backends

    def wants_device(self, device: str) -> bool:
        return self.device in ("all", device)


def sampling_noise_points(disagreement: float, rows: int) -> float:
    """Twice the standard error, in points, of the top-1 difference between two models that disagree
    on a share ``disagreement`` of ``rows`` paired images (at least one image's worth): a drop
    within it may be the draw of images, not the backend."""
    if rows <= 0:
        return math.inf
    share = max(disagreement, 1.0 / rows)
    return 200.0 * math.sqrt(share / rows)


def profile_note(manifest: Manifest, batch: int) -> str | None:
    """A batch size outside every optimization profile of the artifact's engine, said plainly (the
    TensorRT runtime then splits or pads it across profiles); None when a profile holds it."""
    if manifest.engine is None:
        return None
    profiles = manifest.engine.profiles
    if any(p.covers(batch) for p in profiles):
        return None
    ranges = ", ".join(str(p) for p in profiles)
    return (f"batch {batch} is outside the engine's profiles ({ranges}): the runtime runs it in chunks that fit; "
            f"rebuild with --batch MIN:OPT:MAX covering {batch} to time it in one run")


# -- inputs ------------------------------------------------------------------------------------

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


def run_rows(case: C.Case, x: np.ndarray, batch: int) -> np.ndarray:
    """``case`` over all rows of ``x`` in batches of ``batch``; the last one padded to full size, so
    a compiled case sees only the batch sizes it is timed at."""
    outs = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        outs.append(np.asarray(case.infer(np.ascontiguousarray(chunk)), dtype=np.float32)[:real])
    return np.concatenate(outs)


# -- the run -----------------------------------------------------------------------------------

class Bench:
    """One benchmark run; :meth:`run` returns the results (also kept on ``self.results``)."""

    def __init__(self, settings: BenchSettings, say: Callable[[str], None] | None = None,
                 reporter: Any = None) -> None:
        settings.check()
        self.s = settings
        self.say = say or (lambda message: None)
        self.reporter = reporter
        self.threads = settings.threads or usable_cores()
        self.records: list[CaseResult] = []
        self.notes: list[str] = []
        self.build_seconds: dict[str, float] = {}

    # -- set-up ------------------------------------------------------------------------------
    def _load_reference(self) -> tuple[Any, Any]:
        from trtinfer.builders.archs import build_model, match_arch
        from trtinfer.builders.checkpoint import load_checkpoint

        b = self.s.build
        ckpt = load_checkpoint(self.s.checkpoint, trust=bool(b.get("trust_checkpoint")))
        match = match_arch(ckpt.state_dict, b.get("arch"), hf_config=ckpt.hf_config)
        model = ckpt.module if ckpt.module is not None else build_model(match, ckpt.state_dict)
        return ckpt, model.eval()

    def _artifacts(self, sha: str) -> dict[str, tuple[Path, Manifest]]:
        found: dict[str, tuple[Path, Manifest]] = {}
        if self.s.artifact_dirs:
            for directory in self.s.artifact_dirs:
                manifest = Manifest.read(directory)
                manifest.verify_files(directory)
                theirs = manifest.source.get("checkpoint", {}).get("sha256")
                if theirs != sha:
                    raise ArtifactError(
                        f"{directory} was built from checkpoint sha256 {str(theirs)[:16]}..., not from "
                        f"{self.s.checkpoint} ({sha[:16]}...)",
                        hint="pass the checkpoint the artifact was built from, or leave the artifact out and "
                             "let bench build its own")
                if manifest.precision in found:
                    raise TrtInferError(f"two {manifest.precision} artifacts given ({found[manifest.precision][0]} "
                                        f"and {directory})", hint="pass one artifact per precision")
                if manifest.precision in self.s.precisions:
                    found[manifest.precision] = (Path(directory), manifest)
            return found
        from .artifact_cache import cached_artifacts

        options = dict(self.s.build)
        if "int8" in self.s.precisions and not options.get("calib_data") and options.get("eval_data"):
            from trtinfer.calibration.sources import source_kind

            if source_kind(options["eval_data"]).startswith("cifar"):
                options["calib_data"] = options["eval_data"]
                self.notes.append(f"INT8 calibration images drawn from the train split of {options['eval_data']} "
                                  "(no --calib-data given); the eval rows are its test split")
                self.say(self.notes[-1])
        cache = cached_artifacts(self.s.checkpoint, tuple(self.s.precisions), options, root=self.s.cache_root,
                                 rebuild=self.s.rebuild, reporter=self.reporter, say=self.say)
        self.build_seconds = dict(cache.build_seconds)
        if not cache.built:
            self.say(f"reusing cached artifacts in {cache.directory}")
        for precision, reason in cache.failed.items():
            self._skip_precision(precision, reason)
        return {p: (d, Manifest.read(d)) for p, d in cache.artifacts.items()}

    def _skip_precision(self, precision: str, reason: str) -> None:
        for backend in C.OURS:
            if self.s.wants(backend):
                self.records.append(CaseResult(backend, precision, "cpu", None, "offline", status="skipped",
                                               reason=reason))

    def _inputs(self, manifest: Manifest) -> Inputs:
        from trtinfer.calibration.calibset import make_calibration_set, make_eval_set

        b = self.s.build
        spec = manifest.preprocess
        eval_x = eval_y = None
        eval_source = ""
        if b.get("eval_data"):
            eval_set = make_eval_set(b["eval_data"], spec, labels=manifest.labels, limit=b.get("eval_samples"),
                                     seed=b.get("seed") or 0)
            eval_x, eval_y, eval_source = eval_set.x, eval_set.labels, eval_set.source
        else:
            self.notes.append("no accuracy ran: pass --eval-data (labelled test images) for the accuracy column")
            self.say(self.notes[-1])
        calib_source = b.get("calib_data") or b.get("eval_data")
        calibration = None
        if calib_source:
            try:
                calibration = make_calibration_set(calib_source, spec, samples=TORCH_CALIBRATION_ROWS,
                                                   seed=b.get("seed") or 0).x
            except DataError as exc:
                self.notes.append(f"no calibration images for the PyTorch INT8 peer: {exc.one_line()}")
        if eval_x is not None:
            check, source = eval_x[:CHECK_ROWS], f"the first {min(CHECK_ROWS, len(eval_x))} eval images"
        elif calibration is not None:
            check, source = calibration[:CHECK_ROWS], "calibration images"
        else:
            shape = (CHECK_ROWS, *manifest.input.shape[1:])
            check, source = np.random.default_rng(0).standard_normal(shape, dtype=np.float32), "random inputs"
        return Inputs(np.ascontiguousarray(check), source, eval_x, eval_y, eval_source, calibration)

    def _cases(self, model: Any, artifacts: dict[str, tuple[Path, Manifest]], inputs: Inputs) -> list[C.Case]:
        import copy

        s, threads = self.s, self.threads

        def factory() -> Any:
            return copy.deepcopy(model).eval()

        out: list[C.Case] = []
        cpu, cuda = s.wants_device("cpu"), s.wants_device("cuda")
        if cpu:  # the eager FP32 baseline always runs: every speed-up is against it
            out.append(C.TorchCase("torch-eager", factory, threads, note="eager PyTorch FP32, the reference"))
        for precision in PRECISIONS:
            if precision not in artifacts:
                continue
            directory, manifest = artifacts[precision]
            for backend in C.OURS:
                device = "cuda" if backend == "tensorrt" else "cpu"
                if s.wants(backend) and (backend == "auto" or s.wants_device(device)):
                    out.append(C.RuntimeCase(directory, manifest, backend, threads))
            if cpu and precision == "fp32" and s.wants("onnxruntime-bare"):
                out += [C.BareOrtCase(directory, manifest, threads, spin) for spin in (True, False)]
            if cpu and precision == "fp32" and "int8" in s.precisions and s.wants("openvino-nncf"):
                out.append(C.OpenVINONncfCase(directory, manifest, threads, inputs.calibration))
            if cuda:
                out += [C.OrtGpuCase(b, directory, manifest) for b in ("ort-cuda", "ort-tensorrt") if s.wants(b)]
        if cpu:
            if s.wants("torchscript") and "fp32" in s.precisions:
                out.append(C.TorchScriptCase(factory, threads, inputs.check))
            if s.wants("torch-compile") and "fp32" in s.precisions:
                out.append(C.TorchCompileCase(factory, threads))
            if s.wants("torch-dynamic-quant") and "int8" in s.precisions:
                out.append(C.TorchDynamicQuantCase(factory, threads))
            if s.wants("torch-int8") and "int8" in s.precisions:
                out.append(C.TorchInt8Case(factory, threads, inputs.calibration))
        if cuda:
            for precision in ("fp32", "fp16"):
                if precision in s.precisions:
                    if s.wants("torch-cuda"):
                        out.append(C.TorchCudaCase(factory, precision))
                    if s.wants("torch-tensorrt"):
                        out.append(C.TorchTensorRTCase(factory, precision, inputs.check[:1], s.batch_sizes))
        return out

    # -- checks ------------------------------------------------------------------------------
    def _check(self, case: C.Case, reference: dict[str, np.ndarray], inputs: Inputs, batch: int) -> dict[str, Any]:
        """Run the check rows (and the eval set); a dict with ``passed`` and the figures."""
        from trtinfer.builders.evaluate import DEFAULT_MAX_DROP
        from trtinfer import defaults
        from trtinfer.builders.validate import compare_logits

        b = self.s.build
        got = run_rows(case, inputs.check, batch)
        finite = bool(np.isfinite(got).all())
        result: dict[str, Any] = {"rows": len(got), "on": inputs.check_source, "finite": finite}
        ref = reference["check"]
        if got.shape != ref.shape:
            return {**result, "passed": False, "why": f"output shape {got.shape} differs from eager's {ref.shape}"}
        agreement = float((got.argmax(1) == ref.argmax(1)).mean())
        result["top1_agreement"] = agreement
        result["max_abs_diff"] = float(np.abs(got - ref).max()) if finite else None
        if not finite:
            return {**result, "passed": False, "why": "NaN or Inf in the outputs"}
        precision = case.info.precision
        judged_as = precision
        if precision == "fp32" and case.info.options.get("chosen") in LOSSY_EXECUTIONS:
            judged_as = "fp16"  # BF16 arithmetic on an FP32 model: the build checked it with the FP16 allowance
        if judged_as == "fp32":
            atol = defaults.ATOL if b.get("atol") is None else b["atol"]  # 0 is a tolerance too
            rtol = defaults.RTOL if b.get("rtol") is None else b["rtol"]
            cmp = compare_logits(ref, got, atol=atol, rtol=rtol)
            result.update(rule=f"the build's export validation: max |diff| <= {cmp.tolerance:.3g}, near-tie "
                               "disagreements only", tolerance=cmp.tolerance)
            if not cmp.passed:
                return {**result, "passed": False,
                        "why": f"max |logit diff| {cmp.max_abs_diff:.3g} vs eager FP32 (tolerance {cmp.tolerance:.3g}), "
                               f"top-1 agreement {agreement:.1%} on {inputs.check_source}"}
        if inputs.eval_x is not None:
            logits = run_rows(case, inputs.eval_x, batch)
            top1 = float((logits.argmax(1) == inputs.eval_y).mean())
            ref_top1 = reference["eval_top1"]
            drop = 100.0 * (ref_top1 - top1)
            result.update(eval_top1=top1, eval_drop_points=drop,
                          eval_agreement=float((logits.argmax(1) == reference["eval"].argmax(1)).mean()))
            if judged_as != "fp32":
                limit = b.get("max_accuracy_drop")
                limit = DEFAULT_MAX_DROP[judged_as] if limit is None else float(limit)
                noise = sampling_noise_points(1.0 - result["eval_agreement"], len(logits))
                result.update(rule=f"the build's accuracy guard: top-1 drop <= {limit} points vs FP32, plus twice the "
                                   f"sampling error of the difference on {len(logits)} images ({noise:.2f} points)",
                              limit=limit, noise_points=noise, over_allowance=drop > limit + 1e-9)
                if not np.isfinite(logits).all() or drop > limit + noise + 1e-9:
                    return {**result, "passed": False,
                            "why": f"top-1 {top1:.2%} vs eager {ref_top1:.2%}: a drop of {drop:.2f} points, beyond "
                                   f"the {limit} the build's {judged_as} guard allows by more than sampling noise "
                                   f"({noise:.2f})"}
        elif judged_as != "fp32":
            result["rule"] = f"sanity floor: top-1 agreement >= {SANITY_AGREEMENT:.0%} (no --eval-data)"
            if agreement < SANITY_AGREEMENT:
                return {**result, "passed": False,
                        "why": f"top-1 agrees with eager FP32 on only {agreement:.1%} of {inputs.check_source}"}
        return {**result, "passed": True}

    # -- run ---------------------------------------------------------------------------------
    def run(self) -> BenchResults:
        s = self.s
        started = time.perf_counter()
        env = collect_environment(self.threads)
        for w in env["warnings"]:
            self.say(f"warning: {w}")
        self.say(f"loading {s.checkpoint}")
        ckpt, model = self._load_reference()
        artifacts = self._artifacts(ckpt.sha256)
        if not artifacts and not any(r.status == "skipped" for r in self.records):
            raise TrtInferError("no artifact to benchmark", hint="pass --precisions or artifact directories")
        manifest = next(iter(artifacts.values()))[1] if artifacts else None
        if manifest is None:
            raise TrtInferError("every artifact build failed: " + "; ".join(r.reason for r in self.records[:1]),
                                hint="see the build errors above; `trtinfer build` with the same options shows them")
        self._check_same_input(artifacts)
        inputs = self._inputs(manifest)
        import torch

        torch.set_num_threads(self.threads)
        eager = C.TorchCase("torch-eager", lambda: model, self.threads)
        eager.open()
        check_batch = min(max(s.batch_sizes), CHECK_ROWS)
        reference: dict[str, Any] = {"check": run_rows(eager, inputs.check, check_batch)}
        if inputs.eval_x is not None:
            reference["eval"] = run_rows(eager, inputs.eval_x, check_batch)
            reference["eval_top1"] = float((reference["eval"].argmax(1) == inputs.eval_y).mean())
            self.say(f"eager FP32 top-1 {reference['eval_top1']:.2%} on {len(inputs.eval_y)} images from "
                     f"{inputs.eval_source}")

        live: dict[str, C.Case] = {}
        checks: dict[str, dict[str, Any]] = {}
        rss: dict[str, float | None] = {}
        all_cases = self._cases(model, artifacts, inputs)
        ids = self._ids(all_cases)
        try:
            for cid, case in zip(ids, all_cases):
                self.say(f"opening {case.info.label}")
                before = resident_mb()
                try:
                    case.open()
                except C.Skip as exc:
                    self.records.append(self._record(case, None, status="skipped", reason=str(exc)))
                    case.close()
                    continue
                except Exception as exc:  # a peer library failing is a row, not a crash
                    self.records.append(self._record(case, None, status="failed",
                                                     reason=f"could not open: {type(exc).__name__}: {exc}"))
                    case.close()
                    continue
                if not self.s.wants_device(case.info.device):  # `auto` chose a device outside --device
                    self.records.append(self._record(case, None, status="skipped",
                                                     reason=f"load() chose {case.info.options.get('chosen')} on the "
                                                            f"{case.info.device}, outside --device {self.s.device}"))
                    case.close()
                    continue
                try:
                    check = self._check(case, reference, inputs, check_batch)
                except Exception as exc:
                    check = {"passed": False, "why": f"{type(exc).__name__}: {exc}"}
                after = resident_mb()
                rss[cid] = None if before is None or after is None else round(after - before, 1)
                checks[cid] = check
                if not check["passed"]:
                    self.records.append(self._record(case, None, status="failed", check=check,
                                                     reason=f"computes something else: {check['why']}"))
                    self.say(f"FAILED {case.info.label}: {check['why']}")
                    case.close()
                    continue
                live[cid] = case
            self._time_batches(live, checks, rss, inputs)
            if "server" in s.scenarios:
                self._time_server(live, checks, inputs)
        finally:
            for case in all_cases:
                case.close()
            eager.close()
        self._speedups()
        summary = self.summary()
        summary["seconds"] = round(time.perf_counter() - started, 1)
        summary["artifact_build_seconds"] = self.build_seconds
        summary["notes"] = self.notes
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()
                    if k not in ("build", "cache_root")}
        settings["build"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in s.build.items()}
        settings["threads"] = self.threads
        settings["artifacts"] = {p: str(d) for p, (d, _) in artifacts.items()}
        settings["check_rows"] = inputs.check_source
        settings["interleaving"] = ("cases run in interleaved rounds (A B C, A B C, ...); each figure is the median "
                                    "over rounds")
        return BenchResults(environment=env, settings=settings, cases=self.records, summary=summary)

    @staticmethod
    def _ids(cases: list[C.Case]) -> list[str]:
        seen: dict[str, int] = {}
        out = []
        for case in cases:
            base = f"{case.info.label}"
            seen[base] = seen.get(base, 0) + 1
            out.append(base if seen[base] == 1 else f"{base} #{seen[base]}")
        return out

    def _check_same_input(self, artifacts: dict[str, tuple[Path, Manifest]]) -> None:
        shapes = {p: (tuple(m.input.shape), m.preprocess.input_size, tuple(m.preprocess.mean), tuple(m.preprocess.std))
                  for p, (_, m) in artifacts.items()}
        if len(set(shapes.values())) > 1:
            raise ArtifactError(f"the artifacts expect different inputs: {shapes}",
                                hint="benchmark artifacts built with the same --input-size and normalisation")

    def _record(self, case: C.Case, batch: int | None, status: str = "ok", reason: str = "",
                check: dict[str, Any] | None = None, measured: Measured | None = None,
                scenario: str | None = None, concurrency: int | None = None, rss: float | None = None) -> CaseResult:
        info = case.info
        if scenario is None:
            scenario = "single-stream" if batch == 1 else "offline"
        record = CaseResult(info.backend, info.precision, info.device, batch, scenario, status=status, reason=reason,
                            kind=info.kind, concurrency=concurrency, options=dict(info.options), note=info.note,
                            build_seconds=round(case.build_seconds, 3) if case.build_seconds else None,
                            rss_growth_mb=rss, correctness=dict(check or {}))
        if check:
            record.accuracy = check.get("eval_top1")
            record.accuracy_drop_points = check.get("eval_drop_points")
            record.top1_agreement = check.get("eval_agreement")
        if measured is not None:
            record.throughput = measured.throughput
            record.latency_ms = measured.latency_ms()
            record.windows = [round(t, 3) for t in measured.throughputs]
            record.spread = round(measured.spread(), 4)
            if not measured.stable:
                record.status = "unstable"
                record.reason = (f"the last three of {len(measured.windows)} windows did not agree within 10% "
                                 f"(spread {measured.spread():.0%}); raise --seconds or --max-windows, or quiet the "
                                 "machine")
        return record

    def _time_batches(self, live: dict[str, C.Case], checks: dict[str, dict[str, Any]], rss: dict[str, float | None],
                      inputs: Inputs) -> None:
        s = self.s
        sizes = [b for b in s.batch_sizes if ("single-stream" in s.scenarios and b == 1)
                 or ("offline" in s.scenarios and b > 1)]
        for batch in sizes:
            x = inputs.batch(batch)
            workloads = {}
            for cid, case in live.items():
                workload = case.workload(x)
                if s.iterations:
                    workload.calls = s.iterations
                workloads[cid] = workload
            errors: dict[str, BaseException] = {}
            self.say(f"batch {batch}: timing {len(workloads)} case(s) in interleaved rounds")
            measured = interleave(workloads, s.seconds, s.max_windows, s.warmup, s.warmup_seconds, self.say,
                                  on_error=lambda name, exc: errors.__setitem__(name, exc))
            for cid, case in live.items():
                if cid in errors:
                    exc = errors[cid]
                    self.records.append(self._record(case, batch, status="failed", check=checks[cid],
                                                     reason=f"failed at batch {batch}: {type(exc).__name__}: {exc}"))
                    continue
                record = self._record(case, batch, check=checks[cid], measured=measured[cid], rss=rss.get(cid))
                if isinstance(case, C.RuntimeCase) and case.info.device == "cuda":
                    note = profile_note(case.manifest, batch)
                    if note:
                        record.note = note
                        self.say(f"note: {case.info.label}: {note}")
                self._gpu_extras(case, record, batch)
                self.records.append(record)

    def _gpu_extras(self, case: C.Case, record: CaseResult, batch: int) -> None:
        """GPU memory, and for our TensorRT backend the host-to-device / compute / device-to-host split."""
        if case.info.device != "cuda":
            return
        try:
            if isinstance(case, C.RuntimeCase) and case.model is not None and case.model.backend == "tensorrt":
                compute = case.model.compute_time_ms(batch)
                h2d_gbs = case.model.h2d_bandwidth_gbs()
                in_bytes = batch * int(np.prod(case.model.row_shape)) * 4
                out_bytes = batch * int(np.prod(case.model.output_row_shape)) * 4
                record.gpu.update(compute_ms=compute, h2d_ms=in_bytes / (h2d_gbs * 1e6),
                                  d2h_ms_estimate=out_bytes / (h2d_gbs * 1e6), h2d_gb_s=h2d_gbs)
            import torch

            if torch.cuda.is_available():
                record.gpu["max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / (1 << 20)
        except Exception as exc:  # figures beside the timing: never fail the row for them
            record.gpu["error"] = str(exc)

    def _time_server(self, live: dict[str, C.Case], checks: dict[str, dict[str, Any]], inputs: Inputs) -> None:
        s = self.s
        servers = {cid: case for cid, case in live.items()
                   if isinstance(case, C.RuntimeCase) and case.info.backend == "auto"}
        if not servers:
            self.notes.append("server scenario: no `auto` row of ours ran, so no server scenario")
            return
        images = inputs.batch(max(s.concurrency))
        named: dict[str, Any] = {}
        for cid, case in servers.items():
            # The offline reference runs in the same rounds as the server windows, so the server /
            # offline ratio compares windows measured side by side, not minutes apart.
            full = inputs.batch(case.model.max_batch)
            named[f"{cid} offline-ref"] = CallWorkload(lambda m=case.model, x=full: m.infer(x), len(full))
            for clients in s.concurrency:
                named[f"{cid} x{clients}"] = ServerWorkload(case.model, images, clients)
        self.say(f"server scenario: {len(servers)} model(s) x concurrency {','.join(map(str, s.concurrency))}, "
                 "each beside its direct full-batch reference")
        errors: dict[str, BaseException] = {}
        measured = interleave(named, s.seconds, s.max_windows, 1, s.warmup_seconds, self.say,
                              on_error=lambda name, exc: errors.__setitem__(name, exc))
        for cid, case in servers.items():
            reference = measured.get(f"{cid} offline-ref")
            for clients in s.concurrency:
                name = f"{cid} x{clients}"
                if name in errors:
                    self.records.append(self._record(case, 1, status="failed", scenario="server", concurrency=clients,
                                                     check=checks[cid], reason=f"{type(errors[name]).__name__}: "
                                                                               f"{errors[name]}"))
                    continue
                record = self._record(case, 1, check=checks[cid], measured=measured[name], scenario="server",
                                      concurrency=clients)
                record.options["max_batch"] = case.model.max_batch
                record.options["max_delay_ms"] = case.model.options.max_delay_ms
                if reference is not None and reference.throughput:
                    record.options["offline_reference_throughput"] = reference.throughput
                    record.options["vs_offline_reference"] = record.throughput / reference.throughput
                self.records.append(record)

    def _speedups(self) -> None:
        eager = {r.batch_size: r.throughput for r in self.records
                 if r.backend == "torch-eager" and r.throughput and r.scenario != "server"}
        for r in self.records:
            if r.throughput and r.scenario != "server" and r.batch_size in eager:
                r.speedup_vs_eager = r.throughput / eager[r.batch_size]

    # -- summary -----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """MLPerf-named scenarios and the headline figures, all from this run's records."""
        timed = [r for r in self.records if r.throughput and r.status in ("ok", "unstable")]
        out: dict[str, Any] = {"single_stream": [], "offline": [], "server": []}
        for r in timed:
            if r.scenario == "single-stream":
                out["single_stream"].append({"case": f"{r.label} {r.precision} {r.device}",
                                             "p90_ms": r.latency_ms.get("p90")})
        best: dict[tuple, CaseResult] = {}
        for r in timed:
            if r.scenario in ("single-stream", "offline"):
                key = r.key[:4]
                if key not in best or r.throughput > best[key].throughput:
                    best[key] = r
        out["offline"] = [{"case": f"{r.label} {r.precision} {r.device}", "batch_size": r.batch_size,
                           "throughput": r.throughput} for r in sorted(best.values(), key=lambda r: -r.throughput)]
        servers: dict[tuple, list[CaseResult]] = {}
        for r in timed:
            if r.scenario == "server":
                servers.setdefault(r.key[:4], []).append(r)
        for key, rows in servers.items():
            points = [(r.concurrency or 0, r.throughput or 0.0, r.latency_ms.get("p99", math.inf)) for r in rows]
            top = best_under_bound(points, self.s.latency_bound_ms)
            out["server"].append({
                "case": f"{rows[0].label} {rows[0].precision} {rows[0].device}",
                "points": [{"concurrency": c, "throughput": t, "p99_ms": p} for c, t, p in sorted(points)],
                "best_under_bound": None if top is None else {"concurrency": top[0], "throughput": top[1]},
                "latency_bound_ms": self.s.latency_bound_ms})
        out["headline"] = self._headline(timed)
        return out

    def _headline(self, timed: list[CaseResult]) -> dict[str, Any]:
        h: dict[str, Any] = {}
        at = [r for r in timed if r.batch_size == HEADLINE_BATCH and r.scenario == "offline"]
        eager = next((r for r in at if r.backend == "torch-eager"), None)
        if eager is not None:
            eligible = [r for r in at if r.device == "cpu" and r.kind == "ours" and
                        (r.accuracy_drop_points is None or r.accuracy_drop_points <= HEADLINE_MAX_DROP)]
            if eligible:
                top = max(eligible, key=lambda r: r.throughput or 0.0)
                h["fastest_ours_cpu_vs_eager"] = {
                    "case": f"{top.label} {top.precision}", "batch_size": HEADLINE_BATCH,
                    "speedup": top.throughput / eager.throughput, "accuracy_drop_points": top.accuracy_drop_points,
                    "accuracy_checked": top.accuracy_drop_points is not None}
            peers = [r for r in at if r.device == "cpu" and r.kind != "ours" and
                     (r.accuracy_drop_points is None or r.accuracy_drop_points <= HEADLINE_MAX_DROP)]
            if peers:
                top = max(peers, key=lambda r: r.throughput or 0.0)
                h["fastest_peer_cpu_vs_eager"] = {"case": f"{top.label} {top.precision}",
                                                  "speedup": top.throughput / eager.throughput}
        auto_vs_peer = []
        for r in timed:  # what load(backend="auto") gets, against the fastest peer of its precision at its batch
            if r.backend != "auto" or r.scenario == "server" or r.device != "cpu":
                continue
            peers = [p for p in timed if p.kind == "peer" and p.device == "cpu" and p.batch_size == r.batch_size
                     and p.precision == r.precision and p.scenario != "server" and p.throughput]
            if peers and r.throughput:
                top = max(peers, key=lambda p: p.throughput or 0.0)
                auto_vs_peer.append({"case": f"{r.label} {r.precision}", "batch_size": r.batch_size,
                                     "peer": f"{top.label} {top.precision}", "ratio": r.throughput / top.throughput,
                                     "accuracy_drop_points": r.accuracy_drop_points})
        if auto_vs_peer:
            h["auto_vs_fastest_peer"] = auto_vs_peer
        ratios = []
        for r in timed:
            if r.scenario == "server" and r.concurrency == max(self.s.concurrency) and \
                    r.options.get("vs_offline_reference") is not None:
                ratios.append({"case": f"{r.label} {r.precision}", "concurrency": r.concurrency,
                               "batch_size": r.options.get("max_batch"),
                               "server_vs_offline": r.options["vs_offline_reference"]})
        if ratios:
            h["server_vs_offline"] = ratios
        for batch in (1, HEADLINE_BATCH):
            ours = next((r for r in timed if r.backend == "onnxruntime" and r.precision == "fp32"
                         and r.batch_size == batch and r.scenario != "server"), None)
            bare = [r for r in timed if r.backend == "onnxruntime-bare" and r.batch_size == batch]
            if ours is not None and bare:
                better = max(bare, key=lambda r: r.throughput or 0.0)
                h[f"onnxruntime_fp32_vs_bare_batch{batch}"] = {
                    "ratio": ours.throughput / better.throughput, "bare": better.options.get("variant"),
                    "ours_spin": ours.options.get("spin")}
        return h
