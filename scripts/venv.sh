# Create or reuse the project's virtual environment (.venv) and install trtinfer with the
# extras named in TRTINFER_EXTRAS (default: build,openvino,bench,serve,triton,dev, plus on a host where
# nvidia-smi sees a GPU the TensorRT extra that fits its driver: scripts/tensorrt_extra.sh). Sourced by
# quickstart.sh, test.sh and gpu_check.sh. Reinstalls only when setup.py or the extras change (a stamp
# file records what was installed). Then installs the real Triton server the tests run against
# (scripts/triton_server.sh: idempotent, milliseconds once installed; never fails, the tests skip naming
# what it could not install).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TRTINFER_VENV:-$ROOT/.venv}"
if [ -n "${TRTINFER_EXTRAS:-}" ]; then
  EXTRAS="$TRTINFER_EXTRAS"
else
  EXTRAS="build,openvino,bench,serve,triton,dev"
  trt_extra="$(bash "$ROOT/scripts/tensorrt_extra.sh")"
  if [ -n "$trt_extra" ]; then
    echo "==> nvidia-smi sees a GPU: adding the [$trt_extra] extra (TensorRT, cuda-python) for the GPU suite" >&2
    EXTRAS="$EXTRAS,$trt_extra"
  fi
fi
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtual environment $VENV" >&2
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.trtinfer-stamp"
want="$(cat "$ROOT/setup.py" | sha256sum | cut -c1-16)-$EXTRAS"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing trtinfer[$EXTRAS] into $VENV (first run downloads PyTorch, ~5 GB)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "$ROOT[$EXTRAS]"
  echo "$want" > "$stamp"
fi
bash "$ROOT/scripts/triton_server.sh"
export PATH="$VENV/bin:$PATH"
