#!/usr/bin/env bash
# Run the default test suite under CPU variants that move numerics and timing, so a test that rests on
# one CPU's instruction set, rounding or speed fails here rather than on the next machine:
#   avx2        oneDNN (PyTorch, OpenVINO's CPU plugin), MKL and ATen held to AVX2: no AVX-512, VNNI,
#               BF16 or AMX kernels, whatever this CPU has
#   one-thread  one core (taskset) and one thread per library (OMP/MKL/OpenBLAS)
# Usage: bash scripts/test_variants.sh [avx2|one-thread|all] [pytest arguments...]   (default: all)
# Logs: build/test-variants/<variant>.log; the exit code is non-zero when any variant failed.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
which="${1:-all}"
[ $# -gt 0 ] && shift
case "$which" in
  avx2|one-thread) variants=("$which") ;;
  all) variants=(avx2 one-thread) ;;
  *) echo "usage: bash scripts/test_variants.sh [avx2|one-thread|all] [pytest arguments...]" >&2; exit 2 ;;
esac
mkdir -p build/test-variants
status=0
for variant in "${variants[@]}"; do
  log="build/test-variants/$variant.log"
  case "$variant" in
    avx2) run=(env ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 python -m pytest) ;;
    one-thread) run=(env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c 0 python -m pytest) ;;
  esac
  echo "==> $variant: ${run[*]} $* (log: $log)" >&2
  start=$SECONDS
  "${run[@]}" -p no:cacheprovider "$@" > "$log" 2>&1
  rc=$?
  echo "==> $variant: exit $rc in $((SECONDS - start)) s: $(tail -n 1 "$log")" >&2
  [ "$rc" -eq 0 ] || status=1
done
exit "$status"
