"""A classifier trained for a short while on the real CIFAR-10 rows, shared by the precision tests.

A random-weight model says nothing about INT8 accuracy: its logits are nearly flat, so any rounding
flips its top-1. This one is a torchvision ResNet-18 (standard stem, which keeps 32x32 training at
~5 s an epoch on 2 cores) trained for ``EPOCHS`` epochs on the 4,660 train rows: about 45% top-1 on
the 846 test rows, far above the 10% of chance.

Set ``TRTINFER_TRAINED_CACHE`` to a folder to keep the weights between sessions.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

ARCH = "resnet18"
EPOCHS = 6
LR = 0.1
SEED = 0
INPUT_SIZE = 32
NORMALIZE = "cifar10"


@dataclass
class TrainedModel:
    arch: str
    state_path: Path  # state dict (torch.save)
    onnx_path: Path  # FP32 ONNX, dynamic batch, input "input", output "logits"
    input_size: int
    num_classes: int
    class_names: list[str]
    train_seconds: float

    @property
    def spec(self):
        from trtinfer.preprocess import make_spec

        return make_spec(self.input_size, NORMALIZE)


def _cache_key(cifar_dir: Path) -> str:
    import torch

    h = hashlib.sha256(f"{ARCH}-{EPOCHS}-{LR}-{SEED}-{INPUT_SIZE}-{NORMALIZE}-{torch.__version__}".encode())
    for name in sorted(os.listdir(cifar_dir)):
        h.update(f"{name}:{(cifar_dir / name).stat().st_size}".encode())
    return h.hexdigest()[:16]


def train_model(cifar_dir: Path, workdir: Path) -> TrainedModel:
    """Train (or reuse cached weights), then export FP32 ONNX into ``workdir``."""
    import torch

    from trtinfer.benchmarks.precision_report import export_fp32, make_model, train_briefly
    from trtinfer.calibration.cifar import load_cifar

    train = load_cifar(cifar_dir, "train")
    model = make_model(ARCH, num_classes=len(train.class_names), cifar_stem=False)
    cache = Path(os.environ["TRTINFER_TRAINED_CACHE"]) if os.environ.get("TRTINFER_TRAINED_CACHE") else workdir
    cache.mkdir(parents=True, exist_ok=True)
    state_path = cache / f"{ARCH}-cifar10-{_cache_key(cifar_dir)}.pth"
    seconds = 0.0
    if state_path.is_file():
        model.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
        model.eval()
    else:
        start = time.perf_counter()
        from trtinfer.preprocess import make_spec

        train_briefly(model, train.images, train.labels, make_spec(INPUT_SIZE, NORMALIZE), epochs=EPOCHS, lr=LR,
                      seed=SEED, quiet=True)
        seconds = time.perf_counter() - start
        tmp = state_path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, state_path)
    onnx_path = export_fp32(model, workdir / "fp32" / "model.onnx", INPUT_SIZE)
    return TrainedModel(arch=ARCH, state_path=state_path, onnx_path=onnx_path, input_size=INPUT_SIZE,
                        num_classes=len(train.class_names), class_names=list(train.class_names),
                        train_seconds=seconds)
