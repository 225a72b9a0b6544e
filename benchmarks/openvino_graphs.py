"""OpenVINO graphs side by side: interleaved throughput and the per-node profile, the evidence in docs/cpu-int8.md.

    python -m trtinfer.benchmarks.openvino_graphs --batch 32 ours=art/model.onnx:f32 ir=nncf.xml:f32 ir-default=nncf.xml

Each ``LABEL=PATH[:PRECISION]`` is an ONNX file or an OpenVINO IR, compiled for the CPU at a static batch
with the latency hint, ``--threads`` threads and the precision hint given (none: OpenVINO's default, bf16
on CPUs with native BF16). Rounds alternate the graphs so drift hits all alike; throughput is the median
round, with the ratio to the first graph. ``--profile`` adds OpenVINO's per-node timing
(``PERF_COUNT``) summed by node type and kernel, the way one finds which node runs in float.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from typing import Any

import numpy as np

from trtinfer.runtime.backends.openvino.loader import users_default_precision


def compile_graph(spec: str, batch: int, threads: int, profile: bool) -> tuple[str, Any]:
    import openvino as ov

    label, _, rest = spec.partition("=")
    path, _, precision = rest.partition(":")
    core = ov.Core()
    model = core.read_model(path)
    shape = model.inputs[0].get_partial_shape()
    shape[0] = batch
    model.reshape({model.inputs[0]: shape})
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                              "PERF_COUNT": profile}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    else:
        config.update(users_default_precision())
    return label, core.compile_model(model, "CPU", config)


def node_profile(request: Any, x: np.ndarray, runs: int = 40) -> dict[tuple[str, str], float]:
    """Microseconds per inference by (node type, kernel), averaged over ``runs``."""
    totals: dict[tuple[str, str], float] = collections.defaultdict(float)
    for _ in range(runs):
        request.infer({0: x})
        for node in request.get_profiling_info():
            totals[(node.node_type, node.exec_type)] += node.real_time.total_seconds() * 1e6 / runs
    return dict(totals)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trtinfer.benchmarks.openvino_graphs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("graphs", nargs="+", metavar="LABEL=PATH[:PRECISION]")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--profile", action="store_true", help="print the per-node profile of each graph")
    args = ap.parse_args(argv)
    requests = {}
    x = None
    for spec in args.graphs:
        label, compiled = compile_graph(spec, args.batch, args.threads, args.profile)
        requests[label] = compiled.create_infer_request()
        if x is None:
            shape = tuple(compiled.inputs[0].get_partial_shape().to_shape())
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert x is not None
    calls = max(3, 600 // args.batch)
    for request in requests.values():
        for _ in range(calls):
            request.infer({0: x})
    rates: dict[str, list[float]] = {label: [] for label in requests}
    for r in range(args.rounds):
        print(f"[openvino_graphs] round {r + 1}/{args.rounds}", file=sys.stderr)
        for label, request in requests.items():
            start = time.perf_counter()
            for _ in range(calls):
                request.infer({0: x})
            rates[label].append(args.batch * calls / (time.perf_counter() - start))
    base = statistics.median(next(iter(rates.values())))
    print(f"batch {args.batch}, {args.threads} threads, median of {args.rounds} interleaved rounds")
    for label, values in rates.items():
        med = statistics.median(values)
        spread = (max(values) - min(values)) / med * 100
        print(f"  {label:40s} {med:9,.0f} img/s  x{med / base:.2f}  (spread {spread:.0f} %)")
    if args.profile:
        for label, request in requests.items():
            totals = node_profile(request, x)
            print(f"{label}: {sum(totals.values()):,.0f} us per batch of {args.batch}")
            for (node_type, kernel), us in sorted(totals.items(), key=lambda kv: -kv[1]):
                if us >= 5:
                    print(f"    {node_type:30s} {kernel:32s} {us:8,.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
