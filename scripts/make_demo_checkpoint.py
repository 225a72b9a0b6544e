"""Make a small fine-tuned checkpoint for the quick start: a CIFAR-stem ResNet-18 trained briefly on
CIFAR-10 rows. A stand-in until `trtinfer finetune` exists; it saves a plain state_dict."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from trtinfer.builders.archs import apply_cifar_stem
from trtinfer.calibration.cifar import load_cifar
from trtinfer.errors import TrtInferError
from trtinfer.preprocess import NORMALIZATIONS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, help="CIFAR-10 folder (cifar-10-batches-py) or its parent")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        train = load_cifar(args.data, "train")
    except TrtInferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    torch.manual_seed(args.seed)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATIONS["cifar10"])
    x = torch.from_numpy(train.images).permute(0, 3, 1, 2).float().div(255).sub(mean).div(std)
    y = torch.from_numpy(train.labels)
    model = apply_cifar_stem(torchvision.models.resnet18(num_classes=10))
    steps = args.epochs * ((len(x) + args.batch_size - 1) // args.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps, pct_start=0.25)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    rng = np.random.default_rng(args.seed)
    model.train()
    start = time.time()
    for epoch in range(args.epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        correct = seen = 0
        for i in range(0, len(x), args.batch_size):
            idx = order[i:i + args.batch_size]
            xb, yb = x[idx], y[idx]
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            out = model(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += int((out.argmax(1) == yb).sum())
            seen += len(idx)
            print(f"\repoch {epoch + 1}/{args.epochs} {seen}/{len(x)} loss {loss.item():.3f} "
                  f"train acc {correct / seen:.1%} ({time.time() - start:.0f} s)", end="", file=sys.stderr)
        print(file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": model.state_dict(), "epoch": args.epochs, "arch": "resnet18"}, out)
    print(f"saved {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
