"""Which CPU backend is fastest here, per artifact precision: the measurement behind ``backend="auto"``.

    python -m trtinfer.benchmarks.cpu_backends ARTIFACT_DIR [ARTIFACT_DIR ...] [--batch 32] [--threads 2]

Runs every CPU backend installed (ONNX Runtime, OpenVINO) on every artifact with the same input
batch and thread count, interleaving the cases in rounds so drift on a shared machine hits all
alike, and prints throughput and the ratio against ONNX Runtime on the first artifact.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import trtinfer
from trtinfer.errors import TrtInferError
from trtinfer.manifest import Manifest

BACKENDS = ("onnxruntime", "openvino")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trtinfer.benchmarks.cpu_backends", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads for every backend (default: cores)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=3, help="calls per case per round")
    args = ap.parse_args(argv)
    models, cases = [], {}
    try:
        for path in args.artifacts:
            precision = Manifest.read(path).precision
            for backend in BACKENDS:
                try:
                    model = trtinfer.load(path, backend=backend, threads=args.threads)
                except TrtInferError as exc:
                    print(f"[cpu_backends] skipping {backend} on {path}: {exc}", file=sys.stderr)
                    continue
                models.append(model)
                cases[f"{backend} {precision} ({path})"] = model
        shape = (args.batch, *next(iter(cases.values())).input_shape[1:])
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for model in cases.values():
            model.infer(x)
        for r in range(args.rounds):
            print(f"[cpu_backends] round {r + 1}/{args.rounds}", file=sys.stderr)
            for name, model in cases.items():
                start = time.perf_counter()
                for _ in range(args.calls):
                    model.infer(x)
                times[name].append((time.perf_counter() - start) / args.calls)
    finally:
        for model in models:
            model.close()
    base = statistics.median(next(iter(times.values())))
    print(f"batch {args.batch}, threads {args.threads or 'default'}, median of {args.rounds} rounds")
    for name, samples in times.items():
        t = statistics.median(samples)
        print(f"  {name:70s} {args.batch / t:8.0f} img/s   x{base / t:.2f} vs the first case")
    return 0


if __name__ == "__main__":
    sys.exit(main())
