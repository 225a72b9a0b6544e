#!/usr/bin/env bash
# Prove the GPU path on this host in one command (under 10 minutes on an H100, offline):
#
#   bash scripts/gpu_check.sh [REPORT_DIR]     # default: $TRTINFER_GPU_CHECK_DIR, else gpu-check-report/
#
# 1. Looks for a GPU with nvidia-smi. None (nvidia-smi missing, failing or listing no GPU): records the
#    versions and `trtinfer doctor --json` with whatever Python is already there, writes the report
#    ("no GPU: <reason>; nothing GPU-specific was proven") and exits 2 at once; nothing is installed.
# 2. Sets up .venv through scripts/venv.sh (as scripts/test.sh does), records the versions and
#    `trtinfer doctor --require gpu --require tensorrt --json`.
# 3. Runs the phases, each under its own limit (timeout(1)), with its log (and junit XML) in REPORT_DIR:
#    cuda-layer    pytest -m gpu on the CUDA layer and the TensorRT runtime (tests/runtime/backends/tensorrt/:
#                  test_cuda.py, test_cuda_graphs.py, test_ordering.py, test_runner.py)
#    inspector     the real engine-inspector JSON of a small FP16 network, without and with an execution
#                  context, and what our layer-precision reader makes of each (scripts/gpu_inspector_dump.py)
#    engine-build  pytest -m gpu on tests/builders/engine/test_engine_gpu.py (FP32/FP16/INT8 engines, the
#                  inspector's precision check, timing cache, profiles, `trtinfer build` end to end)
# 4. Writes REPORT_DIR/report.md and summary.json (scripts/gpu_check_report.py): one line per phase
#    saying what it proved or why it failed. A pytest phase that selects no test or skips any fails.
#
# Exit: 0 every phase passed; 1 a phase failed or did not run; 2 no GPU here.
# Environment: TRTINFER_GPU_CHECK_DIR (report folder); TRTINFER_GPU_CHECK_BUDGET (seconds for the doctor
# and the phases together, default 560); TRTINFER_GPU_CHECK_SETUP_TIMEOUT (scripts/venv.sh, default 1800:
# only a first run installs); TRTINFER_CIFAR_ROOT (the CIFAR-10 rows the engine tests train on, default
# ../shared/data); TRTINFER_VENV (as in scripts/venv.sh).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-${TRTINFER_GPU_CHECK_DIR:-$ROOT/gpu-check-report}}"  # relative: to the caller's folder
BUDGET="${TRTINFER_GPU_CHECK_BUDGET:-560}"
SETUP_TIMEOUT="${TRTINFER_GPU_CHECK_SETUP_TIMEOUT:-1800}"
MIN_PHASE=20  # seconds: a phase with less than this left of the budget is reported as not run
export PYTHONUNBUFFERED=1

if ! mkdir -p "$DIR" || ! DIR="$(cd "$DIR" && pwd)"; then
  echo "error: cannot create the report folder $DIR" >&2
  exit 1
fi
cd "$ROOT" || exit 1
[ -e "$DIR/.gitignore" ] || printf '*\n' > "$DIR/.gitignore"  # a report, never part of the checkout
for f in report.md summary.json phases.tsv nvidia-smi.csv nvidia-smi.txt versions.json doctor.json doctor.log \
         setup.log cuda-layer.log cuda-layer.xml inspector.log inspector-no-context.json \
         inspector-with-context.json inspector-reading.json engine-build.log engine-build.xml; do
  rm -f "${DIR:?}/$f"
done
echo "==> trtinfer GPU check: report in $DIR" >&2

# -- a GPU? ---------------------------------------------------------------------------------------------
NO_GPU=""
if ! command -v nvidia-smi >/dev/null 2>&1; then
  NO_GPU="nvidia-smi is not on PATH (no NVIDIA driver here, or its tools are not on PATH)"
else
  smi="$(timeout 60 nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv 2>&1)"; rc=$?
  if [ "$rc" -ne 0 ] && [[ "$smi" == *compute_cap* ]]; then  # drivers before R510 lack compute_cap
    smi="$(timeout 60 nvidia-smi --query-gpu=name,driver_version --format=csv 2>&1)"; rc=$?
  fi
  printf '%s\n' "$smi" > "$DIR/nvidia-smi.csv"
  if [ "$rc" -ne 0 ]; then
    NO_GPU="nvidia-smi failed (exit $rc): $(printf '%s\n' "$smi" | grep -m1 '[^[:space:]]' || echo 'no output')"
  elif [ "$(printf '%s\n' "$smi" | tail -n +2 | grep -c '[^[:space:]]')" -eq 0 ]; then
    NO_GPU="nvidia-smi lists no GPU"
  else
    timeout 60 nvidia-smi > "$DIR/nvidia-smi.txt" 2>&1
  fi
fi

# Writes the report and exits with its code (0, 1 or 2); if the report writer itself fails, a one-line
# report says so and the exit code still tells "no GPU" (2) from a failed check (1).
finish() {
  local rc=127
  if [ -n "$PY" ]; then
    "$PY" scripts/gpu_check_report.py report "$DIR" "$@"; rc=$?
    case "$rc" in 0|1|2) exit "$rc" ;; esac
  fi
  if [ -n "$NO_GPU" ]; then
    printf 'NO GPU  no GPU: %s; nothing GPU-specific was proven\n' "$NO_GPU" > "$DIR/report.md"
  else
    printf 'FAIL  report: scripts/gpu_check_report.py could not run (exit %s); the logs in %s are all there is\n' \
      "$rc" "$DIR" > "$DIR/report.md"
  fi
  cat "$DIR/report.md"
  [ -n "$NO_GPU" ] && exit 2
  exit 1
}

doctor() {  # [LIMIT]: the doctor's JSON to doctor.json, its one-line verdict to doctor.log
  timeout "${1:-60}" "$PY" -m trtinfer.cli doctor --require gpu --require tensorrt --json \
    > "$DIR/doctor.json" 2> "$DIR/doctor.log"
}

if [ -n "$NO_GPU" ]; then
  # Nothing GPU-specific can be proven: no install, just what the Python already here can tell.
  echo "==> no GPU: $NO_GPU" >&2
  VENV="${TRTINFER_VENV:-$ROOT/.venv}"
  if [ -x "$VENV/bin/python" ]; then PY="$VENV/bin/python"; else PY="$(command -v python3 || true)"; fi
  if [ -n "$PY" ]; then
    "$PY" scripts/gpu_check_report.py versions "$DIR"
    if "$PY" -c 'import trtinfer' 2>/dev/null; then doctor; fi
  fi
  finish --no-gpu "$NO_GPU"
fi

# -- the environment --------------------------------------------------------------------------------------
PY="$(command -v python3 || true)"  # for the report, should the setup fail
started=$SECONDS
if ! command -v timeout >/dev/null 2>&1; then
  echo "timeout(1) is missing: install GNU coreutils" > "$DIR/setup.log"; rc=127
else
  # A first run installs (bounded here); then sourcing it again in this shell only sets PATH.
  timeout "$SETUP_TIMEOUT" bash -c 'source scripts/venv.sh' > "$DIR/setup.log" 2>&1; rc=$?
  if [ "$rc" -eq 0 ]; then
    # shellcheck source=scripts/venv.sh
    source scripts/venv.sh >> "$DIR/setup.log" 2>&1 || rc=$?
    set +e  # venv.sh sets -e for itself
    PY=python
  fi
fi
printf 'setup\t%s\t%s\t%s\n' "$rc" "$((SECONDS - started))" "$SETUP_TIMEOUT" >> "$DIR/phases.tsv"
if [ "$rc" -ne 0 ]; then
  echo "==> setup failed (exit $rc); see $DIR/setup.log" >&2
  [ -n "$PY" ] && "$PY" scripts/gpu_check_report.py versions "$DIR"
  finish
fi
"$PY" scripts/gpu_check_report.py versions "$DIR"

# -- the phases -----------------------------------------------------------------------------------------
DEADLINE=$((SECONDS + BUDGET))

limit_for() {  # CAP -> min(CAP, what is left of the budget)
  local left=$((DEADLINE - SECONDS))
  echo $(($1 < left ? $1 : left))
}

record() {  # NAME EXIT SECONDS LIMIT
  printf '%s\t%s\t%s\t%s\n' "$@" >> "$DIR/phases.tsv"
}

run_phase() {  # NAME CAP COMMAND...: COMMAND under its limit, its output to NAME.log and the terminal
  local name=$1 limit start rc
  limit=$(limit_for "$2")
  shift 2
  if [ "$limit" -lt "$MIN_PHASE" ]; then
    echo "==> $name: not run, ${limit}s of the budget left" >&2
    record "$name" not-run 0 "$limit"
    return
  fi
  echo "==> $name (limit ${limit}s): $*" >&2
  start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$DIR/$name.log"
  rc=${PIPESTATUS[0]}
  record "$name" "$rc" "$((SECONDS - start))" "$limit"
}

started=$SECONDS
limit=$(limit_for 60)
echo "==> doctor (limit ${limit}s)" >&2
doctor "$limit"; rc=$?
record doctor "$rc" "$((SECONDS - started))" "$limit"

PYTEST=(python -m pytest -m gpu -v -p no:cacheprovider)
run_phase cuda-layer 150 "${PYTEST[@]}" --junitxml="$DIR/cuda-layer.xml" \
  tests/runtime/backends/tensorrt/test_cuda.py tests/runtime/backends/tensorrt/test_cuda_graphs.py \
  tests/runtime/backends/tensorrt/test_ordering.py tests/runtime/backends/tensorrt/test_runner.py
run_phase inspector 120 python scripts/gpu_inspector_dump.py "$DIR"
run_phase engine-build 480 "${PYTEST[@]}" --junitxml="$DIR/engine-build.xml" tests/builders/engine/test_engine_gpu.py
echo "==> done in $SECONDS s" >&2
finish
