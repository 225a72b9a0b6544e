"""Quantization-aware fine-tuning against post-training INT8, over seeds, on one checkpoint.

    python -m trtinfer.benchmarks.qat_report CHECKPOINT --data DIR [--seeds 0,1,2] [--out DIR] [--json F] [--plot F]

Per seed (the calibration draw, the selection slice, the fine-tune's shuffling), three CPU-target INT8
builds of the same checkpoint, each judged by the build's guard on ``--data``'s test rows:

* **PTQ**: post-training INT8 with the method choice, without the fallback (``--no-fallback``);
* **PTQ + fallback**: the build's default; the same artifact as PTQ when the method already met the
  allowance on the selection slice (then the fallback does not run);
* **QAT**: ``--qat on`` (``--qat-epochs``, ``--qat-lr``).

Then the PTQ and QAT artifacts of the first seed race each other, interleaved, on the runtime's CPU
choice (``load()``'s defaults): images per second at batch 32 and per call at batch 1. The drops are in
top-1 points against FP32 (negative: INT8 scored higher); the spread is over seeds. Progress goes to
stderr, the table to stdout, the figures to ``--json`` and ``--plot``.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

VARIANTS = ("PTQ", "PTQ + fallback", "QAT")


@dataclass(frozen=True)
class Outcome:
    """One build's result on the evaluation rows."""

    variant: str
    seed: int
    drop_points: float
    top1: float
    artifact: str
    seconds: float
    note: str = ""


def progress(message: str) -> None:
    print(f"[qat_report] {message}", file=sys.stderr, flush=True)


def _build(checkpoint: Path, data: Path, out: Path, name: str, seed: int, extra: dict[str, Any]) -> tuple[Path, float]:
    from trtinfer.builders.options import BuildOptions
    from trtinfer.builders.pipeline import Builder
    from trtinfer.builders.progress import Reporter

    opts = BuildOptions(checkpoint=checkpoint, precisions=("int8",), out_dir=out, name=name, target="cpu",
                        calib_data=data, eval_data=data, seed=seed, force=True, allow_accuracy_drop=True, **extra)
    started = time.perf_counter()
    [path] = Builder(opts, Reporter(quiet=True)).run()
    return path, time.perf_counter() - started


def _slice_missed(manifest: Any) -> bool:
    """Whether post-training INT8 missed the allowance on the selection slice (then the fallback runs), by the
    chooser's own rule."""
    from trtinfer.builders.precision.int8_choice import slice_verdict

    choice, limit = manifest.calibration.choice, manifest.accuracy.max_drop_points
    verdict = slice_verdict(choice, limit) if choice is not None and limit is not None else None
    return verdict is not None and verdict[1]


def run_seed(checkpoint: Path, data: Path, out: Path, tag: str, seed: int, qat: dict[str, Any],
             model: dict[str, Any] | None = None) -> list[Outcome]:
    """The three builds of one seed (``qat``: the fine-tune's options; ``model``: input size and normalization)."""
    from trtinfer.manifest import Manifest

    def outcome(variant: str, path: Path, seconds: float, note: str = "") -> Outcome:
        m = Manifest.read(path)
        drop, top1 = m.accuracy.top1_drop_points, m.accuracy.top1
        if drop is None or top1 is None:
            raise RuntimeError(f"{path} was built without an accuracy check (--eval-data)")
        return Outcome(variant, seed, float(drop), float(top1), str(path), seconds, note)

    model = model or {}
    path, seconds = _build(checkpoint, data, out, f"{tag}-ptq-s{seed}", seed, {"fallback": False, **model})
    ptq = outcome("PTQ", path, seconds)
    progress(f"seed {seed}: PTQ drop {ptq.drop_points:.2f} points ({seconds:.0f} s)")
    if _slice_missed(Manifest.read(path)):
        path, seconds = _build(checkpoint, data, out, f"{tag}-fallback-s{seed}", seed, model)
        fallback = outcome("PTQ + fallback", path, seconds)
    else:
        fallback = Outcome("PTQ + fallback", seed, ptq.drop_points, ptq.top1, ptq.artifact, 0.0,
                           "the method met the allowance on the slice: no fallback ran")
    progress(f"seed {seed}: PTQ + fallback drop {fallback.drop_points:.2f} points")
    path, seconds = _build(checkpoint, data, out, f"{tag}-qat-s{seed}", seed, {"qat": "on", **qat, **model})
    record = Manifest.read(path).calibration.qat
    q = outcome("QAT", path, seconds, f"fine-tune {record.seconds if record else '?'} s")
    progress(f"seed {seed}: QAT drop {q.drop_points:.2f} points (build {seconds:.0f} s, {q.note})")
    return [ptq, fallback, q]


def race_throughput(ptq: str, qat: str, rounds: int) -> dict[str, Any]:
    """PTQ against QAT artifacts on ``load()``'s defaults, interleaved: batch-32 images/s and batch-1 us per call."""
    import numpy as np

    import trtinfer
    from trtinfer.runtime import tuning

    models = {"PTQ": trtinfer.load(ptq), "QAT": trtinfer.load(qat)}
    try:
        x = np.random.default_rng(0).standard_normal((32, *models["PTQ"].row_shape)).astype(np.float32)
        sides: dict[str, dict[str, Callable[[], Any]]] = {
            n: {"b32": functools.partial(m.infer, x), "b1": functools.partial(m.infer, x[:1])} for n, m in models.items()}
        for side in sides.values():
            for fn in side.values():
                for _ in range(10):
                    fn()
        times = tuning.race(sides, calls={"b32": 30, "b1": 200}, rounds=rounds, settle_s=0.1)
        executions = {n: m.execution for n, m in models.items()}
    finally:
        for m in models.values():
            m.close()
    return {"executions": executions, "img_s_b32": {n: 32 / t["b32"] for n, t in times.items()},
            "us_b1": {n: t["b1"] * 1e6 for n, t in times.items()},
            "qat_vs_ptq_b32": times["PTQ"]["b32"] / times["QAT"]["b32"],
            "qat_vs_ptq_b1": times["PTQ"]["b1"] / times["QAT"]["b1"], "rounds": rounds}


def summarize(outcomes: list[Outcome]) -> dict[str, dict[str, float]]:
    out = {}
    for variant in VARIANTS:
        drops = [o.drop_points for o in outcomes if o.variant == variant]
        out[variant] = {"mean": statistics.fmean(drops), "sd": statistics.stdev(drops) if len(drops) > 1 else 0.0,
                        "min": min(drops), "max": max(drops), "n": len(drops)}
    return out


def plot(outcomes: list[Outcome], summary: dict[str, dict[str, float]], limit: float, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trtinfer.atomic import atomic_file

    fig, ax = plt.subplots(figsize=(7, 4.2))
    seeds = sorted({o.seed for o in outcomes})
    for i, variant in enumerate(VARIANTS):
        drops = [next(o.drop_points for o in outcomes if o.variant == variant and o.seed == s) for s in seeds]
        xs = [i + (j - (len(seeds) - 1) / 2) * 0.08 for j in range(len(seeds))]
        ax.scatter(xs, drops, s=28, zorder=3, label=None)
        s = summary[variant]
        ax.errorbar([i + 0.32], [s["mean"]], yerr=[[s["mean"] - s["min"]], [s["max"] - s["mean"]]], fmt="D",
                    color="black", capsize=4, zorder=3)
        ax.annotate(f"mean {s['mean']:.2f}", (i + 0.38, s["mean"]), fontsize=8, va="center")
    ax.axhline(limit, color="tab:red", linestyle="--", linewidth=1)
    ax.annotate(f"allowance {limit:g} points", (len(VARIANTS) - 0.5, limit), fontsize=8, color="tab:red",
                va="bottom", ha="right")
    ax.axhline(0, color="grey", linewidth=0.6)
    ax.set_xticks(range(len(VARIANTS)), VARIANTS)
    ax.set_xlim(-0.5, len(VARIANTS) - 0.2)
    ax.set(ylabel="top-1 drop vs FP32 (points; lower is better)",
           title=f"{title}: seeds {', '.join(map(str, seeds))} (dots), mean and range (diamond)")
    ax.title.set_fontsize(9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtinfer.benchmarks.qat_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="labelled data: calibration, fine-tune and test rows")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("qat-report"))
    parser.add_argument("--qat-epochs", type=int, default=None)
    parser.add_argument("--qat-lr", type=float, default=None)
    parser.add_argument("--input-size", type=int, default=None, help="as trtinfer build's (default: its own)")
    parser.add_argument("--normalize", default=None, help="as trtinfer build's (default: its own)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved throughput rounds")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    qat = {k: v for k, v in (("qat_epochs", args.qat_epochs), ("qat_lr", args.qat_lr)) if v is not None}
    model = {k: v for k, v in (("input_size", args.input_size), ("normalize", args.normalize)) if v is not None}
    tag = args.checkpoint.stem
    outcomes: list[Outcome] = []
    for seed in seeds:
        outcomes += run_seed(args.checkpoint, args.data, args.out, tag, seed, qat, model)
    summary = summarize(outcomes)
    first = {o.variant: o for o in outcomes if o.seed == seeds[0]}
    progress("throughput: PTQ against QAT artifacts, interleaved")
    speed = race_throughput(first["PTQ + fallback"].artifact, first["QAT"].artifact, args.rounds)
    from trtinfer.manifest import Manifest

    limit = float(Manifest.read(Path(first["QAT"].artifact)).accuracy.max_drop_points or 0.5)
    print(f"{tag}: top-1 drop vs FP32 in points over seeds {seeds} (mean, sd, range)")
    for variant, s in summary.items():
        print(f"  {variant:15s} {s['mean']:6.2f}  sd {s['sd']:.2f}  [{s['min']:.2f}, {s['max']:.2f}]  "
              + "  ".join(f"s{o.seed}={o.drop_points:.2f}" for o in outcomes if o.variant == variant))
    print(f"  QAT builds: {', '.join(f'{o.seconds:.0f} s ({o.note})' for o in outcomes if o.variant == 'QAT')}")
    print(f"  QAT / PTQ throughput, interleaved ({speed['executions']}): batch 32 {speed['qat_vs_ptq_b32']:.3f}x, "
          f"batch 1 {speed['qat_vs_ptq_b1']:.3f}x")
    result = {"checkpoint": str(args.checkpoint), "seeds": seeds, "limit_points": limit, "summary": summary,
              "outcomes": [o.__dict__ for o in outcomes], "throughput": speed}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.plot:
        plot(outcomes, summary, limit, tag, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
