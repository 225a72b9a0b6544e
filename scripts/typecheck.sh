#!/usr/bin/env bash
# Type-check trtinfer/, builders/, calibration/, exporters/ and training/ with mypy (config: mypy.ini). They install as one
# package (trtinfer, trtinfer.builders, trtinfer.calibration: setup.py's package_dir), which mypy
# cannot see through an editable install, so it checks a tree of symlinks laid out like the
# installed package (build/typecheck, rebuilt each run). Uses .venv like scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ROOT="$PWD"
TREE="$ROOT/build/typecheck"
rm -rf "$TREE"
mkdir -p "$TREE/trtinfer"
for entry in "$ROOT"/trtinfer/*; do
  ln -s "$entry" "$TREE/trtinfer/$(basename "$entry")"
done
for sub in builders calibration exporters training; do
  ln -s "$ROOT/$sub" "$TREE/trtinfer/$sub"
done
cd "$TREE"
exec python -m mypy --config-file "$ROOT/mypy.ini" -p trtinfer "$@"
