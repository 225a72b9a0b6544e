"""PNG plots of a benchmark run: what people would rather see than read.

* ``throughput.png``: images/s per backend and precision at each batch size (horizontal bars, names on
  the left);
* ``latency_vs_batch.png``: p50 latency against batch size, log scales;
* ``accuracy_vs_throughput.png``: top-1 against images/s (needs ``--eval-data``), points numbered and
  named in a table beside the axes;
* ``server.png``: the server scenario's p99 latency against throughput, one point per concurrency,
  with the latency bound drawn.

Legible with a run's 12-20 rows: legends sit beside the axes, every series has its own style, and labels
at points are placed clear of each other (:mod:`.plot_labels`); no text prints over another.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .plot_labels import Label, place_labels
from .results import BenchResults, CaseResult

COLORS = {"ours": "tab:green", "baseline": "dimgray", "peer": "tab:blue"}
#: One style per series: 10 colours x 6 markers x 2 line styles before one repeats.
PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
           "tab:olive", "tab:cyan")
MARKERS = ("o", "s", "^", "D", "v", "P")
LINESTYLES = ("-", "--")


def _name(r: CaseResult) -> str:
    return f"{r.label} {r.precision}" + ("" if r.device == "cpu" else f" {r.device}")


def _style(i: int) -> dict[str, Any]:
    """The ``i``-th series' colour, marker and line style, all different for the first 120."""
    return {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[(i // len(PALETTE)) % len(MARKERS)],
            "linestyle": LINESTYLES[(i // (len(PALETTE) * len(MARKERS))) % len(LINESTYLES)]}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here or on servers
    import matplotlib.pyplot as plt

    return plt


def _plain_log_ticks(axis: Any) -> None:
    """Log-scale ticks at 1, 2, 5 x 10^k, labelled as plain numbers, no minor labels (which collide)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 10 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def figures(results: BenchResults) -> dict[str, Any]:
    """The figures that have data, by file name; none saved."""
    plt = _pyplot()
    timed = [r for r in results.cases if r.throughput and r.status in ("ok", "unstable")]
    out: dict[str, Any] = {}
    env = results.environment.get("cpu", {})
    machine = f"{env.get('model', '?')}, {env.get('threads_used', '?')} threads"
    batch_rows = [r for r in timed if r.scenario != "server"]
    if batch_rows:
        out["throughput.png"] = _throughput(plt, batch_rows, machine)
        out["latency_vs_batch.png"] = _latency_vs_batch(plt, batch_rows, machine)
    acc = [r for r in batch_rows if r.accuracy is not None]
    if acc:
        out["accuracy_vs_throughput.png"] = _accuracy_vs_throughput(plt, acc, machine)
    server = [r for r in timed if r.scenario == "server"]
    if server:
        out["server.png"] = _server(plt, server, results.settings.get("latency_bound_ms"), machine)
    return out


def write_plots(results: BenchResults, out: Path) -> list[Path]:
    """Write the plots that have data; returns their paths."""
    plt = _pyplot()
    return [_save(fig, out / name, plt) for name, fig in figures(results).items()]


def _throughput(plt: Any, batch_rows: list[CaseResult], machine: str) -> Any:
    """Horizontal bars of images/s per backend and precision, one bar per batch size, fastest on top."""
    sizes = sorted({r.batch_size for r in batch_rows if r.batch_size})
    names = sorted({_name(r) for r in batch_rows},
                   key=lambda n: max(r.throughput or 0.0 for r in batch_rows if _name(r) == n))
    kinds = {_name(r): r.kind for r in batch_rows}
    per_name = max(1, len(sizes))
    fig, ax = plt.subplots(figsize=(10, 1.8 + 0.16 * len(names) * (per_name + 1)))
    height = 0.8 / per_name
    by = {(_name(r), r.batch_size): r.throughput for r in batch_rows}
    for j, size in enumerate(sizes):
        ys = [i + (j - (per_name - 1) / 2) * height for i in range(len(names))]
        ax.barh(ys, [by.get((n, size), 0) or 0 for n in names], height, label=f"batch {size}",
                color=PALETTE[j % len(PALETTE)], edgecolor=[COLORS.get(kinds[n], "black") for n in names],
                linewidth=1.0)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    for tick, name in zip(ax.get_yticklabels(), names):
        tick.set_color(COLORS.get(kinds[name], "black"))
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel("images / s")
    ax.set_title(f"Throughput by backend and precision ({machine})\nnames: green ours, grey baseline, blue peer",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _latency_vs_batch(plt: Any, batch_rows: list[CaseResult], machine: str) -> Any:
    """p50 latency against batch size, one line per backend and precision (its own colour, marker and line
    style), log scales, the legend beside the axes."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in batch_rows:
        if r.latency_ms.get("p50"):
            series[_name(r)].append((r.batch_size or 0, r.latency_ms["p50"]))
    fig, ax = plt.subplots(figsize=(11, max(5.5, 1.5 + 0.2 * len(series))))
    for i, (name, points) in enumerate(sorted(series.items())):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name, markersize=5, **_style(i))
    ax.set_xscale("log", base=2)
    sizes = sorted({b for points in series.values() for b, _ in points})
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(b) for b in sizes])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel("batch size")
    ax.set_ylabel("latency p50 (ms, log)")
    ax.set_title(f"Latency against batch size ({machine})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def _accuracy_vs_throughput(plt: Any, acc: list[CaseResult], machine: str) -> Any:
    """Top-1 against images/s, each backend and precision at its best batch size: each point numbered
    (placed clear of the others), the numbers named in a table beside the axes."""
    best: dict[str, CaseResult] = {}
    for r in acc:
        if _name(r) not in best or (r.throughput or 0.0) > (best[_name(r)].throughput or 0.0):
            best[_name(r)] = r
    rows = sorted(best.items(), key=lambda item: -(item[1].throughput or 0.0))
    fig, ax = plt.subplots(figsize=(12, max(5.5, 1.5 + 0.22 * len(rows))))
    labels = []
    for number, (name, r) in enumerate(rows, 1):
        top1 = 100 * (r.accuracy or 0.0)
        color = COLORS.get(r.kind, "black")
        ax.scatter(r.throughput, top1, color=color, s=30, zorder=3,
                   label=f"{number:>2}  {name}: {r.throughput:,.0f} img/s, {top1:.2f}% (batch {r.batch_size})")
        labels.append(Label(r.throughput or 0.0, top1, str(number), color))
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    xs = [r.throughput or 0.0 for _, r in rows]
    ys = [100 * (r.accuracy or 0.0) for _, r in rows]
    ax.set_xlim(min(xs) / 1.35, max(xs) * 1.35)  # room for the numbers at the edges
    spread = max(max(ys) - min(ys), 1.0)
    ax.set_ylim(min(ys) - 0.3 * spread, max(ys) + 0.3 * spread)
    ax.set_xlabel("images / s at the best batch size (log)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"Accuracy against throughput ({machine})\nnumbers: green ours, grey baseline, blue peer",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, handletextpad=0.3)
    fig.tight_layout()
    place_labels(ax, labels, fontsize=7)
    return fig


def _server(plt: Any, server: list[CaseResult], bound: float | None, machine: str) -> Any:
    """The server scenario's p99 latency against throughput, one point per concurrency (its ``xN`` placed
    clear of the others), the bound drawn."""
    fig, ax = plt.subplots(figsize=(11, 5.5))
    groups: dict[str, list[CaseResult]] = defaultdict(list)
    for r in server:
        groups[_name(r)].append(r)
    labels = []
    for i, (name, rows) in enumerate(sorted(groups.items())):
        rows.sort(key=lambda r: r.concurrency or 0)
        style = _style(i)
        ax.plot([r.throughput for r in rows], [r.latency_ms.get("p99", 0) for r in rows], label=name,
                markersize=5, **style)
        labels += [Label(r.throughput or 0.0, r.latency_ms.get("p99", 0), f"x{r.concurrency}", style["color"])
                   for r in rows]
    if bound:
        ax.axhline(bound, color="red", linestyle="--", linewidth=1, label=f"latency bound {bound:g} ms")
    ax.set_xlabel("images / s")
    ax.set_ylabel("p99 latency (ms, log)")
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.margins(x=0.12, y=0.15)
    ax.set_title(f"Server scenario: concurrent clients through the dynamic batcher ({machine})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    place_labels(ax, labels, fontsize=7)
    return fig


def _save(fig: Any, path: Path, plt: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight", pad_inches=0.15)  # the legend beside the axes whole
    plt.close(fig)
    tmp.replace(path)
    return path
