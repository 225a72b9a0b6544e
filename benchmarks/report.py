"""What a ``trtinfer bench`` run reports beside its rows: speed-ups against eager PyTorch, the MLPerf-named
scenarios, the headline figures, and the settings it ran with; all from this run's records."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trtinfer.manifest import Manifest

from .options import BenchSettings
from .results import CaseResult
from .server import best_under_bound

#: The done-when figures of the bench issue, reported in the summary.
HEADLINE_BATCH = 32
HEADLINE_MAX_DROP = 0.5


def add_speedups(records: list[CaseResult]) -> None:
    """``speedup_vs_eager`` of every timed row outside the server scenario: its throughput over eager
    PyTorch FP32's at the same batch size."""
    eager = {r.batch_size: r.throughput for r in records
             if r.backend == "torch-eager" and r.throughput and r.scenario != "server"}
    for r in records:
        if r.throughput and r.scenario != "server" and r.batch_size in eager:
            r.speedup_vs_eager = r.throughput / eager[r.batch_size]


def _case(r: CaseResult) -> str:
    return f"{r.label} {r.precision} {r.device}"


def summary(records: list[CaseResult], s: BenchSettings) -> dict[str, Any]:
    """MLPerf-named scenarios and the headline figures, all from this run's records."""
    timed = [r for r in records if r.throughput and r.status in ("ok", "unstable")]
    out: dict[str, Any] = {"single_stream": [], "offline": [], "server": []}
    for r in timed:
        if r.scenario == "single-stream":
            out["single_stream"].append({"case": _case(r), "p90_ms": r.latency_ms.get("p90")})
    best: dict[tuple, CaseResult] = {}
    for r in timed:
        if r.scenario in ("single-stream", "offline"):
            key = r.key[:4]
            if key not in best or _throughput(r) > _throughput(best[key]):
                best[key] = r
    out["offline"] = [{"case": _case(r), "batch_size": r.batch_size, "throughput": r.throughput}
                      for r in sorted(best.values(), key=lambda r: -_throughput(r))]
    servers: dict[tuple, list[CaseResult]] = {}
    for r in timed:
        if r.scenario == "server":
            servers.setdefault(r.key[:4], []).append(r)
    for rows in servers.values():
        points = [(r.concurrency or 0, r.throughput or 0.0, r.latency_ms.get("p99", math.inf)) for r in rows]
        top = best_under_bound(points, s.latency_bound_ms)
        out["server"].append({
            "case": _case(rows[0]),
            "points": [{"concurrency": c, "throughput": t, "p99_ms": p} for c, t, p in sorted(points)],
            "best_under_bound": None if top is None else {"concurrency": top[0], "throughput": top[1]},
            "latency_bound_ms": s.latency_bound_ms})
    out["headline"] = headline(timed, s)
    return out


def _throughput(r: CaseResult) -> float:
    return r.throughput or 0.0


def headline(timed: list[CaseResult], s: BenchSettings) -> dict[str, Any]:
    """The figures the summary leads with: ours and the peers against eager at :data:`HEADLINE_BATCH`;
    the fastest row of ours, and ``auto``, against the fastest peer within the accuracy allowance, whoever
    it is (named); the server against its offline reference; ONNX Runtime against a bare session."""
    h: dict[str, Any] = {}
    h.update(_fastest_vs_eager(timed))
    ours_vs_peer = _fastest_ours_vs_fastest_peer(timed)
    if ours_vs_peer:
        h["fastest_ours_vs_fastest_peer"] = ours_vs_peer
    auto_vs_peer = _auto_vs_fastest_peer(timed)
    if auto_vs_peer:
        h["auto_vs_fastest_peer"] = auto_vs_peer
    ratios = []
    for r in timed:
        if r.scenario == "server" and r.concurrency == max(s.concurrency) and \
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
            better = max(bare, key=_throughput)
            h[f"onnxruntime_fp32_vs_bare_batch{batch}"] = {
                "ratio": _throughput(ours) / _throughput(better), "bare": better.options.get("variant"),
                "ours_spin": ours.options.get("spin")}
    return h


def within_allowance(r: CaseResult) -> bool:
    """A row the headline may name: its top-1 drop against eager FP32 is within :data:`HEADLINE_MAX_DROP`
    points (or no accuracy ran)."""
    return r.accuracy_drop_points is None or r.accuracy_drop_points <= HEADLINE_MAX_DROP


def fastest_peer(timed: list[CaseResult], batch: int | None) -> CaseResult | None:
    """The fastest CPU peer row at ``batch`` within the accuracy allowance, of any precision and any tool
    (benchmark_app's rows included); None where no peer ran."""
    peers = [p for p in timed if p.kind == "peer" and p.device == "cpu" and p.batch_size == batch
             and p.scenario != "server" and p.throughput and within_allowance(p)]
    return max(peers, key=_throughput) if peers else None


def _fastest_vs_eager(timed: list[CaseResult]) -> dict[str, Any]:
    """The fastest CPU row of ours, and of the peers, within the allowed drop, against eager at
    :data:`HEADLINE_BATCH`."""
    h: dict[str, Any] = {}
    at = [r for r in timed if r.batch_size == HEADLINE_BATCH and r.scenario == "offline"]
    eager = next((r for r in at if r.backend == "torch-eager"), None)
    if eager is None:
        return h
    eligible = [r for r in at if r.device == "cpu" and r.kind == "ours" and within_allowance(r)]
    if eligible:
        top = max(eligible, key=_throughput)
        h["fastest_ours_cpu_vs_eager"] = {
            "case": f"{top.label} {top.precision}", "batch_size": HEADLINE_BATCH,
            "speedup": _throughput(top) / _throughput(eager), "accuracy_drop_points": top.accuracy_drop_points,
            "accuracy_checked": top.accuracy_drop_points is not None}
    peers = [r for r in at if r.device == "cpu" and r.kind != "ours" and within_allowance(r)]
    if peers:
        top = max(peers, key=_throughput)
        h["fastest_peer_cpu_vs_eager"] = {"case": f"{top.label} {top.precision}",
                                          "speedup": _throughput(top) / _throughput(eager)}
    return h


def _fastest_ours_vs_fastest_peer(timed: list[CaseResult]) -> list[dict[str, Any]]:
    """At each batch size, the fastest CPU row of ours against the fastest peer, both within the accuracy
    allowance, whoever they are: the headline ratio, with both named."""
    out = []
    for batch in sorted({r.batch_size for r in timed if r.batch_size and r.scenario != "server"}):
        ours = [r for r in timed if r.kind == "ours" and r.device == "cpu" and r.batch_size == batch
                and r.scenario != "server" and r.throughput and within_allowance(r)]
        peer = fastest_peer(timed, batch)
        if ours and peer is not None:
            top = max(ours, key=_throughput)
            out.append({"batch_size": batch, "ours": f"{top.label} {top.precision}", "peer": f"{peer.label} {peer.precision}",
                        "ratio": _throughput(top) / _throughput(peer), "ours_drop_points": top.accuracy_drop_points,
                        "peer_drop_points": peer.accuracy_drop_points,
                        "peer_measured_by": peer.options.get("measured_by", "the bench's interleaved rounds")})
    return out


def _auto_vs_fastest_peer(timed: list[CaseResult]) -> list[dict[str, Any]]:
    """What load(backend="auto") gets, against the fastest peer within the accuracy allowance at its batch
    size, whoever it is (any precision, benchmark_app's rows included)."""
    out = []
    for r in timed:
        if r.backend != "auto" or r.scenario == "server" or r.device != "cpu" or not r.throughput:
            continue
        top = fastest_peer(timed, r.batch_size)
        if top is not None:
            out.append({"case": f"{r.label} {r.precision}", "batch_size": r.batch_size,
                        "peer": f"{top.label} {top.precision}", "ratio": r.throughput / _throughput(top),
                        "accuracy_drop_points": r.accuracy_drop_points,
                        "peer_drop_points": top.accuracy_drop_points})
    return out


def settings_record(s: BenchSettings, threads: int, artifacts: dict[str, tuple[Path, Manifest]],
                    check_source: str) -> dict[str, Any]:
    """The settings as ``results.json`` holds them: paths as strings, the threads used, the artifacts
    benchmarked and the rows every case was checked on."""
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()
                if k not in ("build", "cache_root")}
    settings["build"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in s.build.items()}
    settings["threads"] = threads
    settings["artifacts"] = {p: str(d) for p, (d, _) in artifacts.items()}
    settings["check_rows"] = check_source
    settings["interleaving"] = ("cases run in interleaved rounds (A B C, A B C, ...); each figure is the median "
                                "over rounds")
    return settings
