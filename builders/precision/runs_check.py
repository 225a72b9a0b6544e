"""Whether OpenVINO runs an INT8 model at every batch the runtime will use, checked in a child process.

OpenVINO 2026.4 crashed the process (SIGSEGV) running one NNCF ``mixed`` MobileNetV2 compiled with a dynamic
batch at batch 1: an asymmetric uint8 activation after a residual Add feeding a 1x1 convolution; with that
tensor written as int8 the crash moved on and bf16 no longer compiled. The accuracy checks run batches of 64
and never met it; ``trtinfer.load`` did, and a server would die on its first single-image request. A crash
cannot be caught in-process, so the probe runs the model in a child: dynamic batch at 1, 2 and 32 and fixed at
1, in f32 and (where the CPU has BF16, OpenVINO's default there) bf16.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

PROBE_TIMEOUT_S = 300
_PROBE = """
import sys
import numpy as np
import openvino as ov
path, row = sys.argv[1], [int(d) for d in sys.argv[2].split(",")]
core = ov.Core()
for precision in sys.argv[3].split(","):
    for fixed in (False, True):
        model = core.read_model(path)
        if fixed:
            model.reshape([1, *row])
        config = {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": precision}
        print(f"compiling {precision} {'fixed at batch 1' if fixed else 'dynamic batch'}", flush=True)
        request = core.compile_model(model, "CPU", config).create_infer_request()
        for n in ((1,) if fixed else (1, 2, 32)):
            print(f"{precision} {'fixed' if fixed else 'dynamic'} batch {n}", flush=True)
            request.infer({0: np.zeros((n, *row), np.float32)})
"""


def openvino_precisions() -> tuple[str, ...]:
    from trtinfer.runtime.backends.openvino.loader import users_default_precision

    default = users_default_precision().get("INFERENCE_PRECISION_HINT", "f32")
    return ("f32", "bf16") if str(default).lower() == "bf16" else ("f32",)


def openvino_failure(path: Path, row_shape: tuple[int, ...]) -> str | None:
    """None when OpenVINO compiles and runs ``path`` at every probed batch; else what failed (one line)."""
    argv = [sys.executable, "-c", _PROBE, str(path), ",".join(map(str, row_shape)), ",".join(openvino_precisions())]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"OpenVINO did not finish running it within {PROBE_TIMEOUT_S} s"
    if done.returncode == 0:
        return None
    step = (done.stdout.strip().splitlines() or ["compiling"])[-1]
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return f"OpenVINO crashed ({name}) at {step}"
    error = (done.stderr.strip().splitlines() or ["no message"])[-1][:200]
    return f"OpenVINO failed at {step}: {error}"
