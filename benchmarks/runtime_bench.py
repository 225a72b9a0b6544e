"""Runtime benchmark: the two CPU ratios of the runtime issue, and the GPU figures where a GPU is.

    python -m trtinfer.benchmarks.runtime_bench ARTIFACT_DIR [--json results.json]

(a) batching: 64 client threads each submitting single images through ``submit`` (max_batch 32)
    against direct ``infer`` calls on full batches of 32, same artifact, backend and run; the
    ratio of their throughputs (target >= 0.95); and the same clients as coroutines on one event loop
    awaiting ``infer_async``, the way ``trtinfer serve`` submits.
(b) per call at batch 1: ``trtinfer.load(artifact)`` with its defaults against the best bare session
    of the same file: ONNX Runtime (spinning on and off) and OpenVINO (compiled with its defaults, dynamic
    and at a fixed batch of 1), calls alternating (target: within 5 % of the best); and the wrapper's own
    cost, ``model.infer`` against its own ONNX Runtime session's ``run``.
(c) on a GPU host with TensorRT: ``infer`` throughput at batch 128 against the engine's own
    compute time per batch (CUDA events around ``execute_async_v3`` alone; target within 5 %),
    and host-to-device bandwidth from pinned buffers.

Measurements alternate in short rounds so drift on a shared machine hits both sides alike;
ratios use the median round. Progress goes to stderr, the results to stdout.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import trt_probes

TARGET_BATCHING = 0.95
TARGET_OVERHEAD = 0.05
TARGET_GPU = 0.05
SETTLE_SECONDS = 0.05  # pause before each timed block, as the autoselect race pauses


def progress(message: str) -> None:
    print(f"[runtime_bench] {message}", file=sys.stderr, flush=True)


def _inputs(model: Any, rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, *model.row_shape), dtype=np.float32)


# -- (a) dynamic batching vs direct full batches ----------------------------------------------------
def direct_throughput(model: Any, batch: np.ndarray, seconds: float) -> float:
    return _direct(model, batch, seconds)[0]


def _direct(model: Any, batch: np.ndarray, seconds: float) -> tuple[float, float]:
    """(rows per wall second, rows per CPU second of this process)."""
    rows = 0
    cpu = time.process_time()
    start = time.perf_counter()
    end = start + seconds
    while True:
        model.infer(batch)
        rows += len(batch)
        now = time.perf_counter()
        if now >= end:
            return rows / (now - start), rows / max(1e-9, time.process_time() - cpu)


def batched_throughput(model: Any, images: np.ndarray, clients: int, seconds: float) -> tuple[float, float, float]:
    """Rows per wall second and per CPU second with ``clients`` threads each submitting one image at
    a time; and the mean batch size."""
    before = model.stats()
    stop = threading.Event()
    counts = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        x = images[i % len(images)][None]
        n = 0
        barrier.wait()
        while not stop.is_set():
            model.submit(x).result()
            n += 1
        counts[i] = n

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    cpu = time.process_time()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    cpu_used = time.process_time() - cpu
    after = model.stats()
    batches = after.batches - before.batches
    mean_batch = (after.batch_rows - before.batch_rows) / batches if batches else 0.0
    return sum(counts) / elapsed, sum(counts) / max(1e-9, cpu_used), mean_batch


def coroutine_throughput(model: Any, images: np.ndarray, clients: int, seconds: float) -> float:
    """Rows per second with ``clients`` coroutines on one event loop, each awaiting ``infer_async`` of one
    image at a time (a server's requests: no thread per client)."""
    import asyncio

    async def run() -> float:
        stop = False
        count = 0

        async def client(i: int) -> None:
            nonlocal count
            x = images[i % len(images)][None]
            while not stop:
                await model.infer_async(x)
                count += 1

        tasks = [asyncio.ensure_future(client(i)) for i in range(clients)]
        await asyncio.sleep(0.2)  # every client in its loop
        first, start = count, time.perf_counter()
        await asyncio.sleep(seconds)
        done, elapsed = count - first, time.perf_counter() - start
        stop = True
        await asyncio.gather(*tasks)
        return done / elapsed

    return asyncio.run(run())


def _busy_elsewhere() -> float | None:
    """Load average minus this process's share: above ~0.5 on 2 cores, other work is skewing timings."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def bench_batching(model: Any, clients: int, rounds: int, seconds: float) -> dict[str, Any]:
    full = _inputs(model, model.max_batch, seed=1)
    images = _inputs(model, clients, seed=2)
    model.infer(full)
    model.submit(images[0][None]).result()
    direct, batched, sizes, direct_cpu, batched_cpu, coroutines = [], [], [], [], [], []
    for r in range(rounds):
        rate, per_cpu = _direct(model, full, seconds)
        direct.append(rate)
        direct_cpu.append(per_cpu)
        rate, per_cpu, mean_batch = batched_throughput(model, images, clients, seconds)
        batched.append(rate)
        batched_cpu.append(per_cpu)
        sizes.append(mean_batch)
        coroutines.append(coroutine_throughput(model, images, clients, seconds))
        progress(f"batching round {r + 1}/{rounds}: direct {direct[-1]:.0f} img/s, "
                 f"{clients} clients {rate:.0f} img/s (mean batch {mean_batch:.1f}), "
                 f"{clients} coroutines {coroutines[-1]:.0f} img/s; "
                 f"per CPU-second {direct_cpu[-1]:.0f} vs {per_cpu:.0f}")
    ratios = [b / d for b, d in zip(batched, direct)]
    cpu_ratios = [b / d for b, d in zip(batched_cpu, direct_cpu)]
    coroutine_ratios = [c / d for c, d in zip(coroutines, direct)]
    return {
        "clients": clients, "max_batch": model.max_batch, "max_delay_ms": model.options.max_delay_ms,
        "direct_img_s": statistics.median(direct), "batched_img_s": statistics.median(batched),
        "mean_batch_size": statistics.median(sizes), "ratio_rounds": ratios,
        "ratio": statistics.median(ratios), "target": TARGET_BATCHING,
        "coroutine_img_s": statistics.median(coroutines), "coroutine_ratio": statistics.median(coroutine_ratios),
        # Images per CPU-second of this process: the same comparison, immune to other processes
        # taking cores (64 client threads win a larger share of a busy machine than one caller).
        "cpu_ratio": statistics.median(cpu_ratios), "load_average": _busy_elsewhere(),
    }


# -- (b) per-call overhead at batch 1 ----------------------------------------------------------
def bench_overhead(model: Any, artifact: Path, rounds: int, calls: int) -> dict[str, Any]:
    """``model`` must be on ONNX Runtime: the baseline is a bare session of the same bytes and options."""
    from trtinfer.runtime.backends.onnxruntime import loader

    data = (artifact / "model.onnx").read_bytes()
    bare = loader.session(data, threads=model.threads, spin=model.spin)
    input_name = bare.get_inputs()[0].name
    x = _inputs(model, 1, seed=3)
    feed = {input_name: x}
    for _ in range(20):
        bare.run(None, feed)
        model.infer(x)
    own = model._session
    infer = lambda: model.infer(x)  # noqa: E731
    # Pass 1, the figure: bare session against model.infer. Pass 2: model.infer against its own
    # session's run, the wrapper's cost alone. Each pass alternates single calls, so drift and
    # bursts of other work hit both sides alike, and each call follows the other side's call (a
    # session called twice in a row runs faster from warm caches); per-call medians shrug off the
    # calls a burst did hit.
    bare_s, infer_s = _alternate(lambda: bare.run(None, feed), infer, rounds * calls)
    own_s, infer2_s = _alternate(lambda: own.run(None, feed), infer, rounds * calls)
    overhead = infer_s / bare_s - 1.0
    wrapper = infer2_s / own_s - 1.0
    progress(f"overhead: bare run {bare_s * 1e6:.1f} us, model.infer {infer_s * 1e6:.1f} us per call "
             f"(medians of {rounds * calls} alternating calls) -> {overhead * 100:+.2f} % "
             f"(wrapper alone, same session: {wrapper * 100:+.2f} %, {(infer2_s - own_s) * 1e6:.1f} us)")
    del bare
    return {"bare_run_us": bare_s * 1e6, "infer_us": infer_s * 1e6, "overhead": overhead,
            "own_session_run_us": own_s * 1e6, "wrapper_overhead_same_session": wrapper,
            "wrapper_us": (infer2_s - own_s) * 1e6, "calls": rounds * calls, "target": TARGET_OVERHEAD}


def bare_sessions(artifact: Path, threads: int) -> dict[str, Any]:
    """Batch-1 callables of the bare sessions a user would write instead of trtinfer: ONNX Runtime with
    spinning on and off (trtinfer's session options), OpenVINO compiled with its defaults (dynamic batch,
    and fixed at 1 as its tools compile)."""
    import openvino as ov

    from trtinfer.runtime.backends.onnxruntime import loader
    from trtinfer.runtime.backends.openvino.loader import users_default_precision

    path = artifact / "model.onnx"
    x = np.random.default_rng(3).standard_normal((1, *_row_shape(artifact)), dtype=np.float32)
    out: dict[str, Any] = {}
    for spin in (True, False):
        session = loader.session(path, threads=threads, spin=spin)
        feed = {session.get_inputs()[0].name: x}
        out[f"onnxruntime bare (spin {'on' if spin else 'off'})"] = functools.partial(session.run, None, feed)
    core = ov.Core()
    for fixed in (False, True):
        model = core.read_model(str(path))
        if fixed:
            model.reshape([1, *_row_shape(artifact)])
        config = {"INFERENCE_NUM_THREADS": threads, **users_default_precision()}
        request = core.compile_model(model, "CPU", config).create_infer_request()
        out[f"openvino bare (defaults, {'batch fixed at 1' if fixed else 'dynamic batch'})"] = \
            functools.partial(request.infer, {0: x}, share_inputs=True)
    return out


def _row_shape(artifact: Path) -> tuple[int, ...]:
    from trtinfer.manifest import Manifest

    return tuple(int(d) for d in Manifest.read(artifact).input.shape[1:])


def bench_defaults_batch1(artifact: Path, threads: int, rounds: int, calls: int) -> dict[str, Any]:
    """``trtinfer.load(artifact)`` with its defaults against every bare session at batch 1, in interleaved
    rounds of ``calls`` calls per side, each block after a pause (a spinning ONNX Runtime session keeps its
    threads busy for a while after it runs and would bill the next side: single calls alternating across five
    sessions measured every side up to 2x slower). The figure per side is the median over rounds of each
    block's median call."""
    import trtinfer
    from trtinfer.runtime import tuning

    with trtinfer.load(artifact, threads=threads) as model:
        x = _inputs(model, 1, seed=3)
        routed = f"; single rows: {model.single_execution}" if model.single_execution else ""
        sides = {f"trtinfer.load defaults ({model.execution}{routed})": functools.partial(model.infer, x),
                 **bare_sessions(artifact, threads)}
        for fn in sides.values():
            for _ in range(20):
                fn()
        raced = tuning.race({name: {"b1": fn} for name, fn in sides.items()}, calls={"b1": calls}, rounds=rounds,
                            settle_s=SETTLE_SECONDS)
    medians = {name: t["b1"] for name, t in raced.items()}
    ours = next(iter(medians))
    best = min((n for n in medians if n != ours), key=lambda n: medians[n])
    ratio = medians[best] / medians[ours]
    progress(f"batch 1: {ours} {medians[ours] * 1e6:.0f} us; best bare session {best} {medians[best] * 1e6:.0f} us "
             f"-> {ratio:.3f} of its speed; " + ", ".join(f"{n} {t * 1e6:.0f} us" for n, t in medians.items()))
    return {"ours": ours, "best_bare": best, "per_call_us": {n: t * 1e6 for n, t in medians.items()},
            "ratio_vs_best_bare": ratio, "target": 1.0 - TARGET_OVERHEAD, "calls": rounds * calls, "rounds": rounds}


def _alternate(a: Any, b: Any, calls: int) -> tuple[float, float]:
    """Median seconds per call of ``a`` and ``b``, called alternately."""
    clock = time.perf_counter
    ta, tb = [], []
    for _ in range(calls):
        start = clock()
        a()
        mid = clock()
        b()
        tb.append(clock() - mid)
        ta.append(mid - start)
    return statistics.median(ta), statistics.median(tb)


# -- (c) GPU --------------------------------------------------------------------------------------
def bench_gpu(artifact: Path, seconds: float) -> dict[str, Any] | None:
    try:
        import trtinfer
        model = trtinfer.load(artifact, backend="tensorrt")
    except Exception as exc:  # no plan, no TensorRT or no GPU here
        progress(f"GPU figures skipped: {exc}")
        return {"skipped": str(exc)}
    with model:
        rows = min(128, model.max_chunk)
        x = _inputs(model, rows, seed=4)
        model.infer(x)
        # One caller per lane, so one call's copies overlap another's compute, as a server's would.
        callers = model.concurrency
        rates = [0.0] * callers

        def caller(i: int) -> None:
            rates[i] = direct_throughput(model, x, seconds)

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rate = sum(rates)
        compute_ms = trt_probes.compute_time_ms(model, rows)
        per_batch_ms = rows / rate * 1e3
        h2d = trt_probes.h2d_bandwidth_gbs(model)
    gap = per_batch_ms / compute_ms - 1.0
    progress(f"GPU: infer at batch {rows}: {per_batch_ms:.3f} ms/batch, engine compute {compute_ms:.3f} ms "
             f"-> {gap * 100:+.1f} %; pinned H2D {h2d:.1f} GB/s")
    return {"batch": rows, "callers": callers, "infer_ms_per_batch": per_batch_ms, "compute_ms_per_batch": compute_ms,
            "gap": gap, "target": TARGET_GPU, "h2d_pinned_gb_s": h2d}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtinfer.benchmarks.runtime_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--backend", default="auto",
                        help="CPU backend for (a) (default: load()'s own choice on a CPU, its execution and precision "
                             "included); (b) compares load()'s defaults, and the wrapper's cost on ONNX Runtime")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: cores)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one batching measurement")
    parser.add_argument("--calls", type=int, default=200, help="interleaved batch-1 calls per side and round (b)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    import trtinfer
    import trtinfer.runtime
    from trtinfer.cpu_info import usable_cores
    from trtinfer.errors import TrtInferError

    backend = args.backend
    try:
        if backend in ("auto", "tensorrt"):  # (a) and (b) are the CPU figures; (c) measures the GPU
            with trtinfer.load(args.artifact, threads=args.threads) as probe:  # load()'s own choice, as users get it
                backend = "onnxruntime" if probe.backend == "tensorrt" else "auto"
    except TrtInferError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 1
    options: dict[str, Any] = {"max_batch": args.max_batch, "threads": args.threads}
    if args.max_delay_ms is not None:
        options["max_delay_ms"] = args.max_delay_ms
    results: dict[str, Any] = {"artifact": str(args.artifact), "backend": backend}
    try:
        progress(f"loading {args.artifact} on {backend}")
        with trtinfer.load(args.artifact, backend=backend, **options) as model:
            results["threads"] = getattr(model, "threads", None)
            results["execution"] = model.execution  # auto: the measured execution (e.g. openvino-bf16)
            progress(f"(a) {args.clients} clients x single images vs direct batches of {args.max_batch} "
                     f"on {model.execution}")
            results["batching"] = bench_batching(model, args.clients, args.rounds, args.seconds)
        progress("(b) batch 1: load()'s defaults against the best bare session")
        results["defaults_batch1"] = bench_defaults_batch1(args.artifact, args.threads or usable_cores(), args.rounds,
                                                           args.calls)
        progress("(b) the wrapper's own cost at batch 1 on onnxruntime")
        with trtinfer.load(args.artifact, backend="onnxruntime", **options) as model:
            results["overhead"] = bench_overhead(model, args.artifact, args.rounds, args.calls)
        progress("(c) GPU")
        results["gpu"] = bench_gpu(args.artifact, args.seconds)
    except TrtInferError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 1

    b = results["batching"]
    print(f"batching ratio ({args.clients} clients via submit / direct infer at {args.max_batch}): "
          f"{b['ratio']:.3f}  [{b['batched_img_s']:.0f} / {b['direct_img_s']:.0f} img/s; target >= {TARGET_BATCHING}]"
          f"  {'OK' if b['ratio'] >= TARGET_BATCHING else 'MISSED'}")
    print(f"  {args.clients} coroutines via infer_async on one event loop / direct infer: {b['coroutine_ratio']:.3f} "
          f"[{b['coroutine_img_s']:.0f} img/s]")
    load = b["load_average"]
    print(f"  same comparison per CPU-second of this process: {b['cpu_ratio']:.3f}"
          + (f" (load average {load:.1f} on {os.cpu_count()} cores; when other work keeps the cores busy, "
             "64 client threads win a larger share of them and the wall-clock ratio flatters batching)"
             if load is not None and load > (os.cpu_count() or 1) else ""))
    d = results["defaults_batch1"]
    print(f"batch 1, load() defaults ({d['ours']}) vs the best bare session ({d['best_bare']}): "
          f"{d['ratio_vs_best_bare']:.3f} of its speed [target >= {d['target']:.2f}]"
          f"  {'OK' if d['ratio_vs_best_bare'] >= d['target'] else 'MISSED'}")
    o = results["overhead"]
    print(f"infer overhead at batch 1 vs bare InferenceSession.run: {o['overhead'] * 100:+.2f} %  "
              f"[{o['infer_us']:.1f} vs {o['bare_run_us']:.1f} us; target < {TARGET_OVERHEAD * 100:.0f} %]"
          f"  {'OK' if o['overhead'] < TARGET_OVERHEAD else 'MISSED'}")
    print(f"  wrapper alone (model.infer vs its own session's run): {o['wrapper_overhead_same_session'] * 100:+.2f} % "
          f"({o['wrapper_us']:.1f} us per call)")
    g = results.get("gpu") or {}
    if "gap" in g:
        print(f"GPU infer at batch {g['batch']} vs engine compute: {g['gap'] * 100:+.1f} % "
              f"[target within {TARGET_GPU * 100:.0f} %]; pinned H2D {g['h2d_pinned_gb_s']:.1f} GB/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        progress(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
