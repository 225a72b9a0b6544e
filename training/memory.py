"""Will a training batch fit? Estimated before the first step: on Linux without swap the kernel kills
a process that runs out of memory instead of raising, so a too-large ``--batch-size`` must be refused
with the estimate, not discovered by the OOM killer minutes in."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from trtinfer.errors import TrtInferError

#: Saved activations for the backward pass, relative to the forward outputs of the leaf modules (the
#: outputs themselves, plus BatchNorm/ReLU inputs and gradients in flight).
BACKWARD_FACTOR = 3.0
#: Fraction of the available memory a training run may plan to use.
USABLE_FRACTION = 0.8


def available_bytes(device: torch.device) -> int:
    """Free memory for the run: the GPU's free memory, or the host's MemAvailable capped by a cgroup limit."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit.isdigit() and int(limit) < 1 << 60:
                available = min(available, int(limit) - int(Path(usage_file).read_text().strip()))
        except OSError:
            continue
    return max(available, 0)


def activation_bytes_per_sample(model: nn.Module, input_size: int, bytes_per_element: int) -> int:
    """Forward outputs of every leaf module for one sample (measured with hooks on a real forward)."""
    total = 0

    def hook(module: nn.Module, inputs: object, output: object) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total * bytes_per_element)


def estimate_training_bytes(model: nn.Module, input_size: int, batch_size: int, optimizer: str,
                            mixed_precision: bool) -> int:
    """Parameters, gradients and optimizer state, plus a batch's saved activations and input."""
    params = sum(p.numel() for p in model.parameters()) * 4
    states = 1 if optimizer == "sgd" else 2  # momentum; AdamW's two moments
    per_sample = activation_bytes_per_sample(model, input_size, 2 if mixed_precision else 4) * BACKWARD_FACTOR
    return int(params * (2 + states) + batch_size * (per_sample + 3 * input_size * input_size * 4))


def check_fits(model: nn.Module, input_size: int, batch_size: int, optimizer: str, mixed_precision: bool,
               device: torch.device) -> int:
    """The estimate; TrtInferError naming it and a batch size that fits when it does not."""
    need = estimate_training_bytes(model, input_size, batch_size, optimizer, mixed_precision)
    have = int(available_bytes(device) * USABLE_FRACTION)
    if need > have:
        fixed = estimate_training_bytes(model, input_size, 0, optimizer, mixed_precision)
        per_sample = max(1, (need - fixed) // max(1, batch_size))
        fits = max(0, (have - fixed) // per_sample)
        raise TrtInferError(
            f"--batch-size {batch_size} at {input_size}x{input_size} needs about {need / 2**30:.1f} GiB to train, "
            f"{device.type} memory available for it is {have / 2**30:.1f} GiB",
            hint=f"use --batch-size {fits} or less" if fits >= 1 else "use a smaller --input-size or model")
    return need
