"""What Triton's OpenVINO backend costs at each ``max_batch_size``: the figures behind the export's default.

    python -m trtinfer.benchmarks.openvino_padding ARTIFACT [ARTIFACT ...] [--seconds 2]

That backend fixes a batching model's batch at ``max_batch_size`` and pads smaller batches to it
(``ENABLE_BATCH_PADDING``), so every batch costs a full one. For each candidate size B this runs the
artifact's ONNX in OpenVINO reshaped to a static batch B, as the backend does, and prints throughput
relative to the largest B (what a full batch gains) and the time of one padded batch relative to
batch 1's (what a lone image pays at low load). Ratios within one run only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

SIZES = (1, 2, 4, 8, 16, 32)


def measure(onnx: Path, batch: int, seconds: float) -> float:
    """Seconds per inference of a static batch ``batch`` (LATENCY hint: one stream on every core, as the
    export configures one instance)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(onnx))
    row = [d.get_length() for d in list(model.inputs[0].get_partial_shape())[1:]]
    model.reshape([batch, *row])
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    x = np.random.default_rng(0).standard_normal(tuple(compiled.inputs[0].shape), dtype=np.float32)
    for _ in range(5):
        compiled(x)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        compiled(x)
        runs += 1
    return (time.perf_counter() - start) / runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trtinfer.benchmarks.openvino_padding", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args(argv)
    from trtinfer.manifest import ONNX_NAME, Manifest

    print(f"{'artifact':<28} {'B':>3} {'ms/batch':>9} {'img/s':>8} {'img/s vs B=' + str(SIZES[-1]):>14} "
          f"{'lone image pays':>16}")
    for artifact in args.artifacts:
        manifest = Manifest.read(artifact)
        times = {b: measure(artifact / ONNX_NAME, b, args.seconds) for b in SIZES}
        for b, t in times.items():
            print(f"{manifest.name + ' ' + manifest.precision:<28} {b:>3} {1000 * t:>9.2f} {b / t:>8.0f} "
                  f"{(b / t) / (SIZES[-1] / times[SIZES[-1]]):>14.2f} {t / times[1]:>15.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
