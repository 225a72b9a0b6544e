#!/usr/bin/env bash
# Type-check trtinfer/, builders/, calibration/, benchmarks/, exporters/ and training/ with mypy (config: mypy.ini). They
# install as one package (trtinfer, trtinfer.builders, trtinfer.calibration, ...: setup.py's package_dir), which mypy
# cannot see through an editable install, so it checks a tree of symlinks laid out like the
# installed package (build/typecheck.XXXXXX, one per run, so two runs at once do not remove each
# other's tree; removed at the end). Uses .venv like scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ROOT="$PWD"
mkdir -p "$ROOT/build"
TREE="$(mktemp -d "$ROOT/build/typecheck.XXXXXX")"
trap 'rm -rf "$TREE"' EXIT
mkdir "$TREE/trtinfer"
for entry in "$ROOT"/trtinfer/*; do
  ln -s "$entry" "$TREE/trtinfer/$(basename "$entry")"
done
for sub in builders calibration benchmarks exporters training; do
  ln -s "$ROOT/$sub" "$TREE/trtinfer/$sub"
done
cd "$TREE"
python -m mypy --config-file "$ROOT/mypy.ini" -p trtinfer "$@"
