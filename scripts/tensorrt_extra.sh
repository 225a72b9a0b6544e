#!/usr/bin/env bash
# Print the trtinfer extra that brings TensorRT and cuda-python for this host's NVIDIA driver, or
# nothing where nvidia-smi sees no GPU. CUDA 13 wheels (TensorRT 11, `[tensorrt]`) need driver R580 or
# newer, CUDA 12 wheels (TensorRT 10, `[tensorrt-cu12]`) R535 or newer (docs/gpu.md, "Install").
# Used by scripts/venv.sh so a GPU host's test environment can run the GPU suite; TRTINFER_EXTRAS overrides.
set -uo pipefail
command -v nvidia-smi >/dev/null 2>&1 || exit 0
driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' ')"
major="${driver%%.*}"
[[ "$major" =~ ^[0-9]+$ ]] || exit 0  # nvidia-smi without a working driver or GPU
if [ "$major" -ge 580 ]; then
  echo tensorrt
elif [ "$major" -ge 535 ]; then
  echo tensorrt-cu12
else
  echo "trtinfer: NVIDIA driver $driver is older than R535; no TensorRT 10/11 wheel supports it (update the driver)" >&2
fi
