# Create or reuse the project's virtual environment (.venv) and install trtinfer with the
# extras named in TRTINFER_EXTRAS (default: build,openvino,bench,serve,triton,dev). Sourced by quickstart.sh and test.sh.
# Reinstalls only when setup.py or the extras change (a stamp file records what was installed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TRTINFER_VENV:-$ROOT/.venv}"
EXTRAS="${TRTINFER_EXTRAS:-build,openvino,bench,serve,triton,dev}"
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
export PATH="$VENV/bin:$PATH"
