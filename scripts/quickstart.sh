#!/usr/bin/env bash
# The whole product on a fresh Linux machine: set up (or reuse) .venv, fine-tune a ResNet-18 (CIFAR
# stem) on CIFAR-10, build FP32, FP16 and INT8 artifacts with the accuracy guard, benchmark them
# against PyTorch and the CPU peers (and the GPU where there is one), and say where everything is.
#
# Data: $CIFAR_ROOT (default ../shared/data, the folder holding cifar-10-batches-py) when it exists,
# else the full CIFAR-10 downloaded into trtinfer's cache. Knobs (environment): EPOCHS (default 5),
# OUT (default quickstart/), QUICK=1 (CI's reduced run: 1 epoch, FP32 and INT8 calibrated on 256 images with
# NNCF's default method and guarded at 2 points, a bench of seconds on 256 evaluation images).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
OUT="${OUT:-quickstart}"
DATA="${CIFAR_ROOT:-../shared/data}"
EPOCHS="${EPOCHS:-5}"
PRECISIONS="fp32,fp16,int8"
# The bench: trtinfer's choice (auto) and OpenVINO against eager PyTorch, TorchScript, dynamic INT8 and
# the bare ONNX Runtime / NNCF+OpenVINO peers; torch.compile and the explicit ONNX Runtime rows are left out
# to keep the run under 10 minutes on a slow 2-core VM (all backends: 10 min 12 s there, this set 7 min 41 s).
BENCH=(--batch-sizes 1,32 --seconds 0.5 --scenarios single-stream,offline
       --backends auto,openvino,torch-eager,torchscript,torch-dynamic-quant,onnxruntime-bare,openvino-nncf)
GUARD=()
CALIB=1024
if [ "${QUICK:-0}" = 1 ]; then
  EPOCHS=1
  PRECISIONS="fp32,int8"
  # A 1-epoch model's INT8 drop on 846 rows is noise-sized next to the 0.5-point guard (4 images), and
  # which side it lands on follows the CPU's training numerics: CI's reduced run checks the plumbing
  # with a 2-point allowance and 256 calibration images (a quarter of the INT8 stage's time); the full
  # quick start keeps the build's guard and 1,024 images. One INT8 method (NNCF's default) instead of trying
  # each on the held-out rows: the choice is the build's own, tested in tests/builders/test_build_precision.py.
  GUARD=(--max-accuracy-drop 2 --calib-method performance)
  CALIB=256
  BENCH=(--batch-sizes 8 --seconds 0.2 --max-windows 3 --warmup-seconds 0.1 --scenarios offline
         --backends auto,torch-eager --eval-samples 256)
fi
if [ -d "$DATA" ]; then DATA_ARGS=(--data "$DATA"); EVAL="$DATA"; else
  echo "==> $DATA not found: downloading CIFAR-10 (needs network access)" >&2
  DATA_ARGS=(--download)
  EVAL="$(python -c 'from trtinfer.cache import cache_root; print(cache_root() / "datasets")')"
fi
mkdir -p "$OUT"
start=$SECONDS

echo "==> 1/3 fine-tune ResNet-18 (CIFAR stem) for $EPOCHS epochs (the full recipe: --epochs 15)" >&2
trtinfer finetune --arch resnet18 --cifar-stem "${DATA_ARGS[@]}" --epochs "$EPOCHS" -o "$OUT/resnet18.pth" --force

# 1,024 calibration images rather than the build's 512: a few-epoch model is touchier in INT8 (at 8
# epochs 512 images cost 0.59 points on the 846 test rows, over the guard's 0.5; 1,024 cost 0.35).
echo "==> 2/3 build $PRECISIONS artifacts (architecture, classes and preprocessing come from the checkpoint card)" >&2
trtinfer build "$OUT/resnet18.pth" --precision "$PRECISIONS" --calib-data "$EVAL" --calib-samples "$CALIB" --eval-data "$EVAL" \
  "${GUARD[@]}" -o "$OUT/artifacts" --force

echo "==> 3/3 benchmark the artifacts against PyTorch and the CPU peers" >&2
artifacts=()
for p in ${PRECISIONS//,/ }; do artifacts+=("$OUT/artifacts/resnet18-$p"); done
trtinfer bench "$OUT/resnet18.pth" "${artifacts[@]}" --eval-data "$EVAL" "${BENCH[@]}" --out "$OUT/bench"

cat <<EOF

Done in $((SECONDS - start)) s.
  checkpoint  $OUT/resnet18.pth (card $OUT/resnet18.trtinfer.json, curves $OUT/resnet18.curves.png)
  artifacts   $OUT/artifacts/ (trtinfer inspect $OUT/artifacts/resnet18-int8)
  benchmark   $OUT/bench/results.csv, results.json and plots (*.png)
Next: trtinfer serve ${artifacts[*]}   (then open http://127.0.0.1:8000/)
EOF
