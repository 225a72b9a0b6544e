"""How much memory exporting and validating a model at an input size will take, estimated before
trying: on Linux without swap, the kernel kills a process that asks for too much instead of
raising, and a single 32 GiB allocation (ResNet at --input-size 4096) ends in a raw RuntimeError."""

from __future__ import annotations

import copy
from pathlib import Path

from trtinfer.errors import TrtInferError

#: Peak over the largest activation of a batch: its input and output live at once, plus the
#: exporter's and ONNX Runtime's own buffers. An estimate, deliberately not tight: it exists to
#: refuse sizes that cannot fit (4096 for a ResNet), not to predict the peak to the megabyte.
PEAK_FACTOR = 3.0
USABLE_SHARE = 0.8  # of MemAvailable


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where unreadable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def largest_activation_bytes(model, input_size: int) -> int:
    """Bytes of the largest tensor one image produces in ``model`` at ``input_size`` (float32),
    from a forward pass on the meta device: shapes only, no memory, no compute."""
    import torch

    meta = copy.deepcopy(model).to("meta")
    largest = 0

    def hook(module, inputs, output) -> None:
        nonlocal largest
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                largest = max(largest, t.numel() * 4)

    handles = [m.register_forward_hook(hook) for m in meta.modules()]
    try:
        with torch.no_grad():
            meta(torch.empty(1, 3, input_size, input_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return max(largest, 3 * input_size * input_size * 4)


def check_export_memory(model, input_size: int, batch: int) -> int:
    """Refuse an input size whose export and validation would not fit in the available memory.

    Returns the estimate in bytes. Models that cannot run on the meta device are not estimated.
    """
    try:
        per_image = largest_activation_bytes(model, input_size)
    except Exception:  # custom ops without meta kernels: no estimate, the build goes on
        return 0
    need = int(per_image * batch * PEAK_FACTOR)
    free = available_bytes()
    if free is not None and need > USABLE_SHARE * free:
        gib = 1 << 30
        raise TrtInferError(
            f"--input-size {input_size} needs about {need / gib:.1f} GiB to export and validate this model (its "
            f"largest activation is {per_image / gib:.2f} GiB per image, batches of {batch}); "
            f"{free / gib:.1f} GiB is available",
            hint="use the input size the model was trained at (e.g. 32 for CIFAR, 224 for ImageNet), or a machine "
                 "with more memory")
    return need
