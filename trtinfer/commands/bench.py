"""``trtinfer bench``: latency, throughput and accuracy of our runtime against eager PyTorch and peers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from trtinfer.benchmarks import options as o
from trtinfer.commands.build_options import (DATA_OPTION_NAMES, MODEL_OPTION_NAMES, data_options, model_options,
                                             pop_options)
from trtinfer.errors import TrtInferError
from trtinfer.manifest import PRECISIONS


def _csv(values: tuple[object, ...]) -> str:
    return ",".join(map(str, values))


def _ints(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        values = tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated whole numbers, e.g. 1,8,32") from None
    if not values:
        raise click.BadParameter("expected at least one number")
    return values


def _names(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip().lower() for v in value.split(",") if v.strip())


@click.command("bench")
@click.argument("checkpoint", type=click.Path(path_type=Path), required=False)
@click.argument("artifacts", nargs=-1, type=click.Path(path_type=Path))
@model_options
@data_options
@click.option("--backends", callback=_names, metavar="LIST",
              help="Backends to run (default: every one that applies here), e.g. auto,openvino,torch-eager.")
@click.option("--precisions", callback=_names, default=_csv(PRECISIONS), show_default=True, metavar="LIST",
              help="Artifact precisions to run.")
@click.option("--device", type=click.Choice(o.DEVICES), default=o.DEFAULT_DEVICE, show_default=True,
              help="Where to run; GPU rows are skipped with the reason on a host without one.")
@click.option("--batch-sizes", callback=_ints, default=_csv(o.DEFAULT_BATCH_SIZES), show_default=True, metavar="LIST",
              help="Batch sizes timed for every case (batch 1 is the single-stream scenario).")
@click.option("--threads", type=int, default=None, help="Threads for every CPU backend (default: the usable cores).")
@click.option("--seconds", type=float, default=o.DEFAULT_WINDOW_SECONDS, show_default=True,
              help="Length of one timed window.")
@click.option("--iterations", type=int, default=None, help="Calls per timed window instead of --seconds.")
@click.option("--warmup", type=click.IntRange(0, 10000), default=o.DEFAULT_WARMUP_CALLS, show_default=True,
              help=f"Warm-up calls per case and batch size (and at least {o.DEFAULT_WARMUP_SECONDS:g} s).")
@click.option("--warmup-seconds", type=click.FloatRange(0, 600), default=o.DEFAULT_WARMUP_SECONDS, show_default=True,
              help="Least warm-up time per case and batch size.")
@click.option("--max-windows", type=click.IntRange(3, 100), default=o.DEFAULT_MAX_WINDOWS, show_default=True,
              help="Most timed windows per case; unstable beyond.")
@click.option("--min-windows", type=click.IntRange(3, 100), default=3, show_default=True,
              help="Rounds every case runs before a stable one stops (5: every figure a median of at least 5).")
@click.option("--scenarios", callback=_names, default=_csv(o.SCENARIOS), show_default=True, metavar="LIST",
              help="MLPerf scenarios: single-stream (batch 1), offline (larger batches), server (concurrent clients).")
@click.option("--concurrency", callback=_ints, default=_csv(o.DEFAULT_CONCURRENCY), show_default=True, metavar="LIST",
              help="Server scenario: concurrent clients submitting single images through the dynamic batcher.")
@click.option("--latency-bound-ms", type=float, default=o.DEFAULT_LATENCY_BOUND_MS, show_default=True,
              help="Server scenario: the p99 bound (MLPerf's for ResNet).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Write results.json, results.csv and plots here.")
@click.option("--rebuild", is_flag=True, help="Rebuild the cached artifacts instead of reusing them.")
@click.option("--compare", nargs=2, type=click.Path(path_type=Path), metavar="OLD.json NEW.json",
              help="Print throughput ratios between two results.json files and flag regressions beyond noise.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def bench(checkpoint: Path | None, artifacts: tuple[Path, ...], backends, precisions, device, batch_sizes, threads,
          seconds, iterations, warmup, warmup_seconds, max_windows, min_windows, scenarios, concurrency, latency_bound_ms, out_dir, rebuild,
          compare, quiet, **kwargs: Any) -> None:
    """Benchmark CHECKPOINT's artifacts (built and cached when not given) against PyTorch and peers.

    Every case is checked against eager FP32 before it is timed; with --eval-data every row carries
    its top-1. Cases run in interleaved rounds and each figure is the median over rounds.
    """
    if compare:
        _compare(*compare)
        return
    if checkpoint is None:
        raise TrtInferError("missing CHECKPOINT", hint="trtinfer bench model.pth [ARTIFACT_DIR ...]")
    unknown = [s for s in scenarios if s not in o.SCENARIOS]
    if unknown:
        raise TrtInferError(f"unknown scenario(s) {', '.join(unknown)}", hint=f"use {', '.join(o.SCENARIOS)}")
    from trtinfer.benchmarks.bench import Bench
    from trtinfer.builders.progress import Reporter

    reporter = Reporter(quiet=quiet)
    settings = o.BenchSettings(
        checkpoint=checkpoint, artifact_dirs=list(artifacts), backends=backends, precisions=precisions,
        device=device, batch_sizes=batch_sizes, threads=threads, seconds=seconds, iterations=iterations,
        warmup=warmup, warmup_seconds=warmup_seconds, max_windows=max_windows, min_windows=min_windows, scenarios=scenarios, concurrency=concurrency,
        latency_bound_ms=latency_bound_ms, build=pop_options(kwargs, MODEL_OPTION_NAMES + DATA_OPTION_NAMES),
        rebuild=rebuild)
    if out_dir is not None:
        _check_out_dir(out_dir)
    results = Bench(settings, say=reporter.step, reporter=reporter).run()
    _print(results)
    if out_dir is not None:
        from trtinfer.benchmarks.plots import write_plots

        out_dir.mkdir(parents=True, exist_ok=True)
        written = [results.write_json(out_dir / "results.json"), results.write_csv(out_dir / "results.csv")]
        written += write_plots(results, out_dir)
        click.echo("wrote " + ", ".join(str(p) for p in written), err=True)


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise TrtInferError(f"--out {out_dir} is a file", hint="pass a directory for results.json, results.csv and plots")
    parent = out_dir if out_dir.exists() else next((p for p in out_dir.parents if p.exists()), Path("."))
    import os

    if not os.access(parent, os.W_OK):
        raise TrtInferError(f"--out {out_dir}: {parent} is not writable", hint="choose another --out")


def _console():
    from rich.console import Console

    console = Console(soft_wrap=False)
    if not console.is_terminal:  # a file or a pipe: wide enough that rows stay on one line
        console = Console(soft_wrap=False, width=200)
    return console


def _fmt(value: float | None, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def _print(results: Any) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from trtinfer.benchmarks.environment import describe

    console = _console()
    for line in describe(results.environment):
        console.print(f"[dim]{escape(line)}[/]")
    for warning in results.environment.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    rows = [r for r in results.cases if r.throughput and r.scenario != "server"]
    has_acc = any(r.accuracy is not None for r in rows)
    table = Table(title="trtinfer bench (sorted by throughput; speed-up against eager PyTorch FP32 at the same "
                        "batch size)", box=box.SIMPLE_HEAD)
    for col, just in (("backend", "left"), ("precision", "left"), ("device", "left"), ("batch", "right"),
                      ("images/s", "right"), ("x eager", "right"), ("p50 ms", "right"), ("p99 ms", "right"),
                      ("top-1", "right"), ("drop", "right"), ("status", "left")):
        if col in ("top-1", "drop") and not has_acc:
            continue
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in sorted(rows, key=lambda r: -(r.throughput or 0)):
        style = "green" if r.kind == "ours" else None
        cells = [r.label, r.precision, r.device, str(r.batch_size), _fmt(r.throughput, ",.0f"),
                 _fmt(r.speedup_vs_eager, ".2f"), _fmt(r.latency_ms.get("p50"), ".2f"),
                 _fmt(r.latency_ms.get("p99"), ".2f")]
        if has_acc:
            cells += [_fmt(None if r.accuracy is None else 100 * r.accuracy, ".2f"),
                      _fmt(r.accuracy_drop_points, "+.2f")]
        cells.append(r.status)
        table.add_row(*cells, style=style)
    console.print(table)
    server = [r for r in results.cases if r.scenario == "server" and r.throughput]
    if server:
        st = Table(title=f"server scenario: concurrent single-image clients through the dynamic batcher "
                         f"(p99 bound {results.settings.get('latency_bound_ms')} ms)", box=box.SIMPLE_HEAD)
        for col in ("backend", "precision", "clients", "images/s", "p50 ms", "p99 ms", "status"):
            st.add_column(col)
        for r in sorted(server, key=lambda r: (r.label, r.precision, r.concurrency or 0)):
            st.add_row(r.label, r.precision, str(r.concurrency), _fmt(r.throughput, ",.0f"),
                       _fmt(r.latency_ms.get("p50"), ".2f"), _fmt(r.latency_ms.get("p99"), ".2f"), r.status)
        console.print(st)
    for r in results.cases:
        if r.status in ("skipped", "failed"):
            where = f" batch {r.batch_size}" if r.batch_size else ""
            console.print(f"[yellow]{r.status}[/] {escape(r.label)} {r.precision} {r.device}{where}: {escape(r.reason)}")
    h = results.summary.get("headline", {})
    if "fastest_ours_cpu_vs_eager" in h:
        f = h["fastest_ours_cpu_vs_eager"]
        drop = "accuracy not checked" if not f["accuracy_checked"] else f"top-1 drop {f['accuracy_drop_points']:+.2f} points"
        console.print(f"fastest CPU row of ours at batch {f['batch_size']}: {f['case']}, {f['speedup']:.2f}x eager "
                      f"FP32 ({drop})")
    for t in h.get("fastest_ours_vs_fastest_peer", []):
        console.print(f"headline at batch {t['batch_size']}: fastest CPU row of ours ({t['ours']}) / fastest peer within "
                      f"the allowance ({t['peer']}, measured by {t['peer_measured_by']}): {t['ratio']:.3f}")
    for a in h.get("auto_vs_fastest_peer", []):
        drop = "" if a["accuracy_drop_points"] is None else f", top-1 drop {a['accuracy_drop_points']:+.2f} points"
        console.print(f"{a['case']} at batch {a['batch_size']} / fastest peer ({a['peer']}): {a['ratio']:.3f}{drop}")
    for s in h.get("server_vs_offline", []):
        console.print(f"server x{s['concurrency']} / direct batch {s['batch_size']} of the same model in the same rounds, "
                      f"{s['case']}: {s['server_vs_offline']:.2f}")
    for batch in (1, 32):
        o = h.get(f"onnxruntime_fp32_vs_bare_batch{batch}")
        if o:
            console.print(f"onnxruntime FP32 at batch {batch} vs the better bare session ({o['bare']}): "
                          f"{o['ratio']:.3f}")
    for note in results.summary.get("notes", []):
        console.print(f"[dim]note: {escape(note)}[/]")
    console.print(f"[dim]cases ran in interleaved rounds (A B C, A B C, ...); each figure is the median over rounds; "
                  f"took {results.summary.get('seconds')} s[/]")


def _compare(old_path: Path, new_path: Path) -> None:
    from rich.table import Table

    from trtinfer.benchmarks.results import BenchResults, compare

    old, new = BenchResults.read(old_path), BenchResults.read(new_path)
    changes, notes = compare(old, new)
    console = _console()
    table = Table(title=f"{new_path} against {old_path} (throughput new / old)")
    for col in ("case", "old img/s", "new img/s", "ratio", "noise", "p99 old", "p99 new", "verdict"):
        table.add_column(col)
    for c in sorted(changes, key=lambda c: c.ratio):
        color = {"regression": "red", "improvement": "green"}.get(c.verdict, "")
        table.add_row(c.label, f"{c.old:,.0f}", f"{c.new:,.0f}", f"{c.ratio:.3f}", f"±{c.noise:.0%}",
                      _fmt(c.p99_old, ".2f"), _fmt(c.p99_new, ".2f"),
                      f"[{color}]{c.verdict}[/]" if color else c.verdict)
    console.print(table)
    for note in notes:
        console.print(f"[dim]note: {note}[/]")
    regressions = [c for c in changes if c.verdict == "regression"]
    if regressions:
        raise TrtInferError(f"{len(regressions)} regression(s) beyond noise: "
                            + ", ".join(f"{c.label} {c.ratio:.2f}x" for c in regressions[:5]),
                            hint="rerun both on a quiet machine to confirm; ratios within one run are the trustworthy ones")
