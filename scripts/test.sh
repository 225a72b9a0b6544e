#!/usr/bin/env bash
# Set up (or reuse) .venv and run the test suite. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m gpu` on a GPU host.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
exec python -m pytest "$@"
