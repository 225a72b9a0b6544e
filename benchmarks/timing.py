"""Timing the checked cases: per batch size in interleaved rounds (:mod:`.measure`), then the server
scenario, N clients through the runtime's dynamic batcher (:mod:`.server`); one :class:`CaseResult`
per case, batch size and concurrency."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from trtinfer.manifest import Manifest

from . import cases as C
from .measure import CallWorkload, Measured, Workload, interleave
from .openvino_peers import AppWorkload
from .options import BenchSettings
from .plan import Inputs
from .results import CaseResult
from .server import ServerWorkload

Say = Callable[[str], None]


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


def case_record(case: C.Case, batch: int | None, status: str = "ok", reason: str = "",
                check: dict[str, Any] | None = None, measured: Measured | None = None,
                scenario: str | None = None, concurrency: int | None = None, rss: float | None = None) -> CaseResult:
    """The result row of ``case``: its check against eager FP32 and, once timed, its figures (``unstable``
    where the windows never agreed)."""
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


def time_batches(s: BenchSettings, live: dict[str, C.Case], checks: dict[str, dict[str, Any]],
                 rss: dict[str, float | None], inputs: Inputs, say: Say) -> list[CaseResult]:
    """Every live case at each asked batch size, the cases of one batch size in interleaved rounds."""
    records: list[CaseResult] = []
    sizes = [b for b in s.batch_sizes if ("single-stream" in s.scenarios and b == 1)
             or ("offline" in s.scenarios and b > 1)]
    for batch in sizes:
        x = inputs.batch(batch)
        workloads: dict[str, Workload] = {}
        for cid, case in live.items():
            workload = case.workload(x)
            if s.iterations:
                workload.calls = s.iterations
            workloads[cid] = workload
        errors: dict[str, BaseException] = {}
        say(f"batch {batch}: timing {len(workloads)} case(s) in interleaved rounds")
        measured = interleave(workloads, s.seconds, s.max_windows, s.warmup, s.warmup_seconds, say, min_windows=s.min_windows,
                              on_error=errors.__setitem__)
        for cid, case in live.items():
            if cid in errors:
                exc = errors[cid]
                records.append(case_record(case, batch, status="failed", check=checks[cid],
                                           reason=f"failed at batch {batch}: {type(exc).__name__}: {exc}"))
                continue
            record = case_record(case, batch, check=checks[cid], measured=measured[cid], rss=rss.get(cid))
            timed_by = workloads[cid]
            if isinstance(timed_by, AppWorkload):  # timed by benchmark_app: its own latency figures
                record.latency_ms = timed_by.latency_ms()
                record.options.update(timed_by.settings())
            if isinstance(case, C.RuntimeCase) and case.info.device == "cuda":
                note = profile_note(case.manifest, batch)
                if note:
                    record.note = note
                    say(f"note: {case.info.label}: {note}")
            gpu_extras(case, record, batch)
            records.append(record)
    return records


def gpu_extras(case: C.Case, record: CaseResult, batch: int) -> None:
    """GPU memory, and for our TensorRT backend the host-to-device / compute / device-to-host split."""
    if case.info.device != "cuda":
        return
    try:
        if isinstance(case, C.RuntimeCase) and case.model is not None and case.model.backend == "tensorrt":
            from . import trt_probes

            compute = trt_probes.compute_time_ms(case.model, batch)
            h2d_gbs = trt_probes.h2d_bandwidth_gbs(case.model)
            in_bytes = batch * int(np.prod(case.model.row_shape)) * 4
            out_bytes = batch * int(np.prod(case.model.output_row_shape)) * 4
            record.gpu.update(compute_ms=compute, h2d_ms=in_bytes / (h2d_gbs * 1e6),
                              d2h_ms_estimate=out_bytes / (h2d_gbs * 1e6), h2d_gb_s=h2d_gbs)
        import torch

        if torch.cuda.is_available():
            record.gpu["max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / (1 << 20)
    except Exception as exc:  # figures beside the timing: never fail the row for them
        record.gpu["error"] = str(exc)


def time_server(s: BenchSettings, live: dict[str, C.Case], checks: dict[str, dict[str, Any]], inputs: Inputs,
                notes: list[str], say: Say) -> list[CaseResult]:
    """The server scenario on each live ``auto`` row of ours, at every concurrency, beside a direct
    full-batch reference of the same model in the same rounds."""
    servers = {cid: case for cid, case in live.items()
               if isinstance(case, C.RuntimeCase) and case.info.backend == "auto"}
    if not servers:
        notes.append("server scenario: no `auto` row of ours ran, so no server scenario")
        return []
    images = inputs.batch(max(s.concurrency))
    named: dict[str, Workload] = {}
    for cid, case in servers.items():
        # The offline reference runs in the same rounds as the server windows, so the server /
        # offline ratio compares windows measured side by side, not minutes apart.
        full = inputs.batch(case.model.max_batch)
        named[f"{cid} offline-ref"] = CallWorkload(functools.partial(case.model.infer, full), len(full))
        for clients in s.concurrency:
            named[f"{cid} x{clients}"] = ServerWorkload(case.model, images, clients)
    say(f"server scenario: {len(servers)} model(s) x concurrency {','.join(map(str, s.concurrency))}, "
        "each beside its direct full-batch reference")
    errors: dict[str, BaseException] = {}
    measured = interleave(named, s.seconds, s.max_windows, 1, s.warmup_seconds, say, on_error=errors.__setitem__)
    records: list[CaseResult] = []
    for cid, case in servers.items():
        reference = measured.get(f"{cid} offline-ref")
        for clients in s.concurrency:
            name = f"{cid} x{clients}"
            if name in errors:
                records.append(case_record(case, 1, status="failed", scenario="server", concurrency=clients,
                                           check=checks[cid], reason=f"{type(errors[name]).__name__}: {errors[name]}"))
                continue
            record = case_record(case, 1, check=checks[cid], measured=measured[name], scenario="server",
                                 concurrency=clients)
            record.options["max_batch"] = case.model.max_batch
            record.options["max_delay_ms"] = case.model.options.max_delay_ms
            if reference is not None and reference.throughput:
                record.options["offline_reference_throughput"] = reference.throughput
                record.options["vs_offline_reference"] = (record.throughput or 0.0) / reference.throughput
            records.append(record)
    return records
