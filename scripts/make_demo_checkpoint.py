"""Make a small fine-tuned checkpoint for the quick start: a CIFAR-stem ResNet-18 trained briefly on
CIFAR-10 rows (the training recipe of trtinfer.benchmarks.precision_report). A stand-in until
`trtinfer finetune` exists; it saves a plain state_dict inside a dict, as training scripts do."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from trtinfer.benchmarks.precision_report import make_model, train_briefly
from trtinfer.calibration.cifar import load_cifar
from trtinfer.errors import TrtInferError
from trtinfer.preprocess import make_spec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, help="CIFAR-10 folder (cifar-10-batches-py) or its parent")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0.1, help="peak learning rate (one-cycle); MobileNets like 0.05")
    ap.add_argument("--arch", default="resnet18", help="torchvision classifier name (resnet18, mobilenet_v2, ...)")
    args = ap.parse_args()
    try:
        train = load_cifar(args.data, "train")
    except TrtInferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cifar_stem = args.arch.startswith(("resnet", "resnext", "wide_resnet"))  # the stem only ResNets have
    stem = "CIFAR-stem " if cifar_stem else ""
    print(f"training a {stem}{args.arch} for {args.epochs} epochs on {len(train)} images", file=sys.stderr)
    start = time.perf_counter()
    model = train_briefly(make_model(args.arch, len(train.class_names), cifar_stem=cifar_stem), train.images,
                          train.labels,
                          make_spec(32, "cifar10"), epochs=args.epochs, lr=args.lr, seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": model.state_dict(), "epoch": args.epochs, "arch": args.arch}, out)
    print(f"saved {out} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
