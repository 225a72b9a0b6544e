"""Resident memory of the runtime over many calls and many load/close cycles: it must stay flat.

    python -m trtinfer.benchmarks.runtime_soak ARTIFACT_DIR [--calls 20000] [--cycles 200]

Phase 1: ``--calls`` inference calls of mixed sizes (direct ``infer`` and ``submit`` through the
batcher, NaN-refused requests and closed-model errors among them, so error paths are soaked too).
Phase 2: ``--cycles`` ``load``/``infer``/``close`` cycles. RSS (from /proc/self/statm) is printed
after a warm-up and at the end of each phase (after a GC and ``malloc_trim``); growth past the
warm-up is what would leak.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .measure import resident_mb


def rss_mb() -> float:
    """This process's resident memory in MB after a GC and ``malloc_trim``; the soak needs /proc to read it."""
    mb = resident_mb()
    if mb is None:
        raise SystemExit("runtime_soak reads the resident memory from /proc/self/statm, which this system lacks")
    return mb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trtinfer.benchmarks.runtime_soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact")
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--backend", default="auto")
    args = ap.parse_args(argv)

    import trtinfer
    from trtinfer.errors import DataError

    rng = np.random.default_rng(0)
    with trtinfer.load(args.artifact, backend=args.backend) as model:
        shape = model.row_shape
        batches = [rng.standard_normal((n, *shape), dtype=np.float32) for n in (1, 3, 8, 32)]
        bad = batches[1].copy()
        bad[1, 0, 0, 0] = np.nan
        for x in batches:
            model.infer(x)
        warm = rss_mb()
        start = time.perf_counter()
        refused = 0
        for i in range(args.calls):
            x = batches[i % len(batches)]
            if i % 97 == 0:
                try:
                    model.infer(bad)
                except DataError:
                    refused += 1
            elif i % 3 == 0:
                model.submit(x[0]).result()
            else:
                model.infer(x)
        calls_rss = rss_mb()
        print(f"{args.calls} calls on {model.backend} in {time.perf_counter() - start:.1f} s "
              f"({refused} NaN inputs refused): RSS {warm:.1f} MB after warm-up, {calls_rss:.1f} MB after "
              f"({calls_rss - warm:+.1f} MB)")
    start = time.perf_counter()
    first: float | None = None
    for i in range(args.cycles):
        with trtinfer.load(args.artifact, backend=args.backend) as model:
            model.infer(batches[i % len(batches)])
        if i == 9:
            first = rss_mb()
    end = rss_mb()
    after_10 = "-" if first is None else f"{first:.1f}"
    print(f"{args.cycles} load/close cycles in {time.perf_counter() - start:.1f} s: RSS {after_10} MB after 10, "
          f"{end:.1f} MB after {args.cycles} ({end - (first or end):+.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
