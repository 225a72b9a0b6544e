#!/usr/bin/env bash
# Set up (or reuse) .venv, make a ResNet-18 CIFAR-10 checkpoint, and build it into validated
# FP32, FP16 and INT8 artifacts with the accuracy guard. CIFAR-10 comes from $CIFAR_ROOT
# (default: ../shared/data, the folder holding cifar-10-batches-py).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
DATA="${CIFAR_ROOT:-../shared/data}"
OUT="${OUT:-quickstart}"
mkdir -p "$OUT"
python scripts/make_demo_checkpoint.py --data "$DATA" -o "$OUT/resnet18.pth"
trtinfer build "$OUT/resnet18.pth" --precision fp32,fp16,int8 \
  --calib-data "$DATA" --eval-data "$DATA" -o "$OUT/artifacts" --force
for art in "$OUT"/artifacts/*/; do trtinfer inspect "$art"; echo; done
echo "artifacts are in $OUT/artifacts/"
