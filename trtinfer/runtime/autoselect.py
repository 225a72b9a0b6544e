"""``load(backend="auto")`` on a CPU: the fastest execution for this artifact on this machine, measured.

No fixed table can say which CPU execution wins: it depends on the CPU's ISA (VNNI, BF16, AMX),
the artifact's precision and the regime. Measured on one AVX-512 VNNI + BF16 host, ResNet-18 at
32x32, batch 32: OpenVINO ran the NNCF INT8 model 8x faster than ONNX Runtime, while for the FP32
model the two were within 20 % of each other in either order, and OpenVINO's BF16 hint doubled FP32
throughput. So each candidate the manifest allows is opened, timed for a fraction of a second at
the regime's batch (``prefer="throughput"``: 32 rows, ``"latency"``: 1 row), and the winner is
remembered per artifact sha256, CPU model, library versions, threads and regime in
``~/.cache/trtinfer/tuning.json``; later loads open only the winner.

Which candidates: every execution this machine can run (:mod:`trtinfer.execution`), less those
the build's accuracy check failed (``accuracy.executions``), and lossy ones (BF16) only where that
check passed.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..cpu_info import cpu_info
from ..errors import BackendUnavailable
from ..execution import Execution, available_cpu_executions
from ..manifest import ONNX_NAME, Manifest
from ..versions import package_version
from . import tuning
from .options import PREFER_BATCH, RuntimeOptions

log = logging.getLogger(__name__)

ROUND_SECONDS = 0.1  # timed work per round for the slowest candidate; three rounds, alternating
WARMUP_SECONDS = 0.1  # first runs allocate and tune: not timed
#: Pause before each timed block: ONNX Runtime's spinning threads keep busy-waiting for a while
#: after a run and would bill the next candidate (measured: an OpenVINO INT8 model timed right
#: after a spinning ONNX Runtime session ran 12 % slower than alone, and lost the choice it wins).
SETTLE_SECONDS = 0.05
MAX_CALLS = 200
#: With ``prefer="throughput"`` (the default), single rows go to another execution only when it ran them at
#: least this much faster than the full-batch winner: then both stay open (twice the memory). Measured on an
#: AMX Xeon, ResNet-18 FP32 at 32x32: OpenVINO bf16 won batch 32 by 10-20 %, while ONNX Runtime with spinning
#: won batch 1 by 4-17 %, depending on the hour. 3 %: above the race's round-to-round noise, below the 5 % a
#: caller of one row at a time should not lose to a bare session.
ROUTE_MARGIN = 0.03


def candidates(manifest: Manifest, options: RuntimeOptions) -> tuple[list[Execution], list[str]]:
    """The executions ``auto`` may pick for this artifact here, and why each other one is out."""
    recorded = manifest.accuracy.executions or {}
    chosen, ruled_out = [], []
    for execution in available_cpu_executions():
        record = recorded.get(execution.name)
        passed = record.passed if record is not None else None
        if passed is False:
            ruled_out.append(f"{execution.name} failed the build's accuracy check")
            continue
        if execution.lossy and passed is not True:
            ruled_out.append(f"{execution.name} was not accuracy-checked at build time (build with --eval-data)")
            continue
        if options.openvino_precision is not None and execution.backend == "openvino" \
                and execution.openvino_precision != options.openvino_precision:
            continue  # the caller fixed OpenVINO's precision
        chosen.append(execution)
    if not chosen:
        raise BackendUnavailable("no CPU backend can run this artifact here (" + "; ".join(ruled_out or [
            "neither ONNX Runtime nor OpenVINO is installed"]) + ")", hint="pip install 'trtinfer[openvino]'")
    return chosen, ruled_out


def _onnx_sha256(manifest: Manifest) -> str:
    entry = manifest.files.get(ONNX_NAME)
    return entry.sha256 if entry is not None else ""


def _key(manifest: Manifest, options: RuntimeOptions, names: list[str]) -> str:
    sha = _onnx_sha256(manifest)
    libraries = f"onnxruntime {package_version('onnxruntime') or package_version('onnxruntime-gpu')}, " \
                f"openvino {package_version('openvino')}; candidates {','.join(names)}"
    return tuning.tuning_key(f"backend-{options.prefer}", sha, libraries, options.cpu_threads)


def choose_and_open(manifest: Manifest, directory: Path, options: RuntimeOptions,
                    open_execution: Callable[[Execution, str], Any], context: str) -> Any:
    """Open the fastest allowed execution (measured once, then cached) and return the model."""
    allowed, ruled_out = candidates(manifest, options)
    names = [e.name for e in allowed]
    excluded = f"; not considered: {'; '.join(ruled_out)}" if ruled_out else ""
    if len(allowed) == 1:
        return open_execution(allowed[0], f"{context}; {allowed[0].name} is the only CPU execution allowed "
                                          f"here{excluded}")
    key = _key(manifest, options, names)
    sha = _onnx_sha256(manifest)
    cached = tuning.lookup(key) if sha else None
    # a throughput entry must also say where single rows go (None: nowhere else); older entries are measured again
    single_known = options.prefer != "throughput" or (
        cached is not None and "single" in cached and (cached["single"] is None or cached["single"] in names))
    if cached is not None and cached.get("execution") in names and single_known:
        execution = allowed[names.index(cached["execution"])]
        chosen = open_execution(execution, f"{context}; cached measurement: {cached['why']}{excluded}")
        if cached.get("single"):
            try:
                chosen.route_single_rows(open_execution(allowed[names.index(cached["single"])], ""))
            except BaseException:
                chosen.close()
                raise
        return chosen
    models: dict[str, Any] = {}
    try:
        for execution in allowed:
            models[execution.name] = open_execution(execution, "")
        winner, single, why = _race(models, options)
    except BaseException:
        for model in models.values():
            model.close()
        raise
    for name, model in models.items():
        if name not in (winner, single):
            model.close()
    if sha:
        tuning.remember(key, {"execution": winner, "single": single, "why": why})
    chosen = models[winner]
    chosen.backend_reason = f"{context}; measured: {why}{excluded}"
    if single is not None:
        chosen.route_single_rows(models[single])
    return chosen


def single_rows_route(one_row: dict[str, float], winner: str) -> str | None:
    """The execution single rows should run on instead of the full-batch ``winner`` (``one_row``: seconds per
    one-row call, per execution): the batch-1 winner, when it beats ``winner`` there by ROUTE_MARGIN; else None."""
    best = min(one_row, key=lambda name: one_row[name])
    if best != winner and one_row[winner] > one_row[best] * (1.0 + ROUTE_MARGIN):
        return best
    return None


def _race(models: dict[str, Any], options: RuntimeOptions) -> tuple[str, str | None, str]:
    """(full-batch winner, the execution single rows go to or None, why)."""
    rows = PREFER_BATCH[options.prefer]
    any_model = next(iter(models.values()))
    x = np.random.default_rng(0).standard_normal((rows, *any_model.row_shape)).astype(np.float32)
    one = x[:1]
    calls = MAX_CALLS
    for model in models.values():  # warm up by time; the slowest sets how many calls a round takes
        time.sleep(SETTLE_SECONDS)
        start = time.perf_counter()
        warm = 0
        while warm < 2 or time.perf_counter() - start < WARMUP_SECONDS:
            model.infer(x)
            warm += 1
        calls = min(calls, max(1, int(warm * ROUND_SECONDS / (time.perf_counter() - start))))
    timed_one_row = options.prefer == "throughput" and rows > 1  # where single rows may go elsewhere
    workloads = {"run": calls, **({"b1": min(MAX_CALLS, 4 * calls)} if timed_one_row else {})}
    times = tuning.race({name: {"run": functools.partial(model.infer, x),
                                **({"b1": functools.partial(model.infer, one)} if timed_one_row else {})}
                         for name, model in models.items()}, calls=workloads, rounds=3, settle_s=SETTLE_SECONDS)
    rates = {name: rows / t["run"] for name, t in times.items()}
    winner = max(rates, key=lambda name: rates[name])
    info = cpu_info()
    listing = ", ".join(f"{n} {r:,.0f} img/s" for n, r in sorted(rates.items(), key=lambda kv: -kv[1]))
    why = (f"prefer={options.prefer}: at batch {rows} on {info.model} ({options.cpu_threads} threads), {listing}; "
           f"{winner} is fastest")
    single = None
    if timed_one_row:
        one_row = {name: t["b1"] for name, t in times.items()}
        single = single_rows_route(one_row, winner)
        per_call = ", ".join(f"{n} {t * 1e6:,.0f} us" for n, t in sorted(one_row.items(), key=lambda kv: kv[1]))
        why += (f"; single rows run on {single} (at batch 1: {per_call})" if single is not None else
                f"; it also runs single rows (at batch 1: {per_call}; another execution is kept only when "
                f"{ROUTE_MARGIN:.0%} faster)")
    log.info("auto backend: %s", why)
    return winner, single, why


__all__ = ["candidates", "choose_and_open", "single_rows_route", "ROUND_SECONDS", "ROUTE_MARGIN"]
