"""Will a training batch fit? Estimated before the first step: on Linux without swap the kernel kills
a process that runs out of memory instead of raising, so a too-large ``--batch-size`` must be refused
with the estimate, not discovered by the OOM killer minutes in.

The estimate counts the model's training state and a batch at the model's input size, and the one
image decoded at its native size at a time (:func:`trtinfer.training.data.batches`): a folder of
4000x4000 photos costs far more to decode than the 224x224 tensors they become. That decode is host
memory, checked against the host's even when the model trains on a GPU."""

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
#: Host bytes per pixel of the largest image while it is decoded, augmented and resized at its native size:
#: the encoded file, the decoded image (up to 4 bytes a pixel: RGBA, 16-bit, 32-bit), its 8-bit RGB copy and
#: the padded copy augmentation makes (3 x 1.25^2), alive together at worst.
DECODE_BYTES_PER_PIXEL = 16


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


def decode_bytes(largest_pixels: int) -> int:
    """Host memory to decode, augment and resize the largest image (``largest_pixels`` = width x height)."""
    return DECODE_BYTES_PER_PIXEL * max(0, int(largest_pixels))


def estimate_training_bytes(model: nn.Module, input_size: int, batch_size: int, optimizer: str,
                            mixed_precision: bool, largest_pixels: int = 0) -> int:
    """Parameters, gradients and optimizer state, plus a batch's saved activations and input, plus the
    native-size decode of the largest image (``largest_pixels``, width x height; 0 leaves it out)."""
    params = sum(p.numel() for p in model.parameters()) * 4
    states = 1 if optimizer == "sgd" else 2  # momentum; AdamW's two moments
    per_sample = activation_bytes_per_sample(model, input_size, 2 if mixed_precision else 4) * BACKWARD_FACTOR
    return int(params * (2 + states) + batch_size * (per_sample + 3 * input_size * input_size * 4)) \
        + decode_bytes(largest_pixels)


def check_fits(model: nn.Module, input_size: int, batch_size: int, optimizer: str, mixed_precision: bool,
               device: torch.device, largest_pixels: int = 0, subject: str | None = None,
               hint: str | None = None) -> int:
    """The estimate; TrtInferError naming it and a batch size that fits when it does not. The decode of the
    largest image (``largest_pixels``) is host memory: on a GPU it is checked against the host's.
    ``subject`` (default ``--batch-size N at SxS``) and ``hint`` are for callers without finetune's options."""
    decode = decode_bytes(largest_pixels)
    decoding = (f"decoding the largest image ({largest_pixels:,} pixels) at its native size takes about "
                f"{decode / 2**30:.1f} GiB of it")
    downscale = "downscale the images (the model sees them at its input size anyway)"
    gpu = device.type == "cuda"
    if gpu:
        host = int(available_bytes(torch.device("cpu")) * USABLE_FRACTION)
        if decode > host:
            raise TrtInferError(f"{decoding}; host memory available for it is {host / 2**30:.1f} GiB", hint=downscale)
    counted = 0 if gpu else largest_pixels
    need = estimate_training_bytes(model, input_size, batch_size, optimizer, mixed_precision, counted)
    have = int(available_bytes(device) * USABLE_FRACTION)
    if need > have:
        fixed = estimate_training_bytes(model, input_size, 0, optimizer, mixed_precision, counted)
        per_sample = max(1, (need - fixed) // max(1, batch_size))
        fits = max(0, (have - fixed) // per_sample)
        if fits >= 1:
            fits_hint = f"use --batch-size {fits} or less"
        elif counted and fixed - decode < have:  # the model fits; the decode is what does not
            fits_hint = downscale
        else:
            fits_hint = "use a smaller --input-size or model"
        subject = subject or f"--batch-size {batch_size} at {input_size}x{input_size}"
        raise TrtInferError(
            f"{subject} needs about {need / 2**30:.1f} GiB to train"
            + (f" ({decoding})" if counted else "")
            + f", {device.type} memory available for it is {have / 2**30:.1f} GiB", hint=hint or fits_hint)
    return need
