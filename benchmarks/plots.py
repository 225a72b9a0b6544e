"""PNG plots of a benchmark run: what people would rather see than read.

* ``throughput.png``: images/s per backend and precision at each batch size (bars);
* ``latency_vs_batch.png``: p50 latency against batch size, log scales;
* ``accuracy_vs_throughput.png``: top-1 against images/s (needs ``--eval-data``);
* ``server.png``: the server scenario's p99 latency against throughput, one point per concurrency,
  with the latency bound drawn.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .results import BenchResults, CaseResult

COLORS = {"ours": "tab:green", "baseline": "dimgray", "peer": "tab:blue"}


def _name(r: CaseResult) -> str:
    return f"{r.label} {r.precision}" + ("" if r.device == "cpu" else f" {r.device}")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here or on servers
    import matplotlib.pyplot as plt

    return plt


def write_plots(results: BenchResults, out: Path) -> list[Path]:
    """Write the plots that have data; returns their paths."""
    plt = _pyplot()
    timed = [r for r in results.cases if r.throughput and r.status in ("ok", "unstable")]
    written: list[Path] = []
    env = results.environment.get("cpu", {})
    machine = f"{env.get('model', '?')}, {env.get('threads_used', '?')} threads"
    batch_rows = [r for r in timed if r.scenario != "server"]
    if batch_rows:
        written.append(_throughput(plt, batch_rows, machine, out / "throughput.png"))
        written.append(_latency_vs_batch(plt, batch_rows, machine, out / "latency_vs_batch.png"))
    acc = [r for r in batch_rows if r.accuracy is not None]
    if acc:
        written.append(_accuracy_vs_throughput(plt, acc, machine, out / "accuracy_vs_throughput.png"))
    server = [r for r in timed if r.scenario == "server"]
    if server:
        written.append(_server(plt, server, results.settings.get("latency_bound_ms"), machine, out / "server.png"))
    return written


def _throughput(plt: Any, batch_rows: list[CaseResult], machine: str, path: Path) -> Path:
    """Bars of images/s per backend and precision, one bar per batch size."""
    sizes = sorted({r.batch_size for r in batch_rows if r.batch_size})
    names = sorted({_name(r) for r in batch_rows},
                   key=lambda n: -max(r.throughput or 0.0 for r in batch_rows if _name(r) == n))
    kinds = {_name(r): r.kind for r in batch_rows}
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(names) * len(sizes) + 3), 5.5))
    width = 0.8 / max(1, len(sizes))
    by = {(_name(r), r.batch_size): r.throughput for r in batch_rows}
    for j, size in enumerate(sizes):
        xs = [i + j * width for i in range(len(names))]
        ax.bar(xs, [by.get((n, size), 0) for n in names], width, label=f"batch {size}",
               edgecolor=[COLORS.get(kinds[n], "black") for n in names], linewidth=1.5)
    ax.set_xticks([i + width * (len(sizes) - 1) / 2 for i in range(len(names))])
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    for tick, name in zip(ax.get_xticklabels(), names):
        tick.set_color(COLORS.get(kinds[name], "black"))
    ax.set_ylabel("images / s")
    ax.set_title(f"Throughput by backend and precision ({machine})\nlabels: green ours, grey baseline, blue peer",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, plt)


def _latency_vs_batch(plt: Any, batch_rows: list[CaseResult], machine: str, path: Path) -> Path:
    """p50 latency against batch size, one line per backend and precision, log scales."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in batch_rows:
        if r.latency_ms.get("p50"):
            series[_name(r)].append((r.batch_size or 0, r.latency_ms["p50"]))
    for name, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("latency p50 (ms, log)")
    ax.set_title(f"Latency against batch size ({machine})", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, plt)


def _accuracy_vs_throughput(plt: Any, acc: list[CaseResult], machine: str, path: Path) -> Path:
    """Top-1 against images/s, each backend and precision at its best batch size."""
    best: dict[str, CaseResult] = {}
    for r in acc:
        if _name(r) not in best or (r.throughput or 0.0) > (best[_name(r)].throughput or 0.0):
            best[_name(r)] = r
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, r in best.items():
        top1 = 100 * (r.accuracy or 0.0)
        ax.scatter(r.throughput, top1, color=COLORS.get(r.kind, "black"), s=40)
        ax.annotate(name, (r.throughput, top1), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("images / s at the best batch size (log)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"Accuracy against throughput ({machine})", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, plt)


def _server(plt: Any, server: list[CaseResult], bound: float | None, machine: str, path: Path) -> Path:
    """The server scenario's p99 latency against throughput, one point per concurrency, the bound drawn."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    groups: dict[str, list[CaseResult]] = defaultdict(list)
    for r in server:
        groups[_name(r)].append(r)
    for name, rows in sorted(groups.items()):
        rows.sort(key=lambda r: r.concurrency or 0)
        ax.plot([r.throughput for r in rows], [r.latency_ms.get("p99", 0) for r in rows], marker="o", label=name)
        for r in rows:
            ax.annotate(f"x{r.concurrency}", (r.throughput, r.latency_ms.get("p99", 0)), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    if bound:
        ax.axhline(bound, color="red", linestyle="--", linewidth=1, label=f"latency bound {bound:g} ms")
    ax.set_xlabel("images / s")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"Server scenario: concurrent clients through the dynamic batcher ({machine})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, plt)


def _save(fig: Any, path: Path, plt: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path
