#!/usr/bin/env bash
# Install a real Triton Inference Server for the tests against it (tests/exporters/test_real_triton.py)
# and the Triton-vs-serve benchmark. Idempotent; a few milliseconds when already installed.
#
#   bash scripts/triton_server.sh            # install into build/triton (or $TRTINFER_TRITON_DIR)
#
# What it installs:
#   * the registry's nvidia-pytriton wheel (pinned below), unpacked into a private folder, never into
#     .venv (installing it would pull its dependencies): it ships tritonserver (2.51) with the Python
#     backend only, its shared libraries (nvidia_pytriton.libs) and a Python-backend stub per Python version;
#   * the stub built for /usr/bin/python3's version, copied into backends/python/ (the stub embeds that
#     Python, so the server is started with PATH=/usr/bin:/bin: tests/exporters/triton_server.py);
#   * Debian's python3-numpy and python3-pil (and libpython3.X, which the stub links against), which the
#     exported preprocessing model needs inside that Python (apt, as root only);
#   * Debian's prometheus, for its promtool (`promtool check metrics` on serve's expositions:
#     tests/serve/test_metrics.py), apt, as root only.
#
# Never fails the caller: what cannot be installed (not root, no registry, another Python) is printed,
# and the tests that need it skip naming it (tests/exporters/triton_server.py: missing()).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${TRTINFER_TRITON_DIR:-$ROOT/build/triton}"
WHEEL="nvidia-pytriton==0.7.0"
SYSTEM_PY=/usr/bin/python3
STAMP="$DIR/.installed"

say() { echo "triton_server.sh: $*" >&2; }

if [ ! -x "$SYSTEM_PY" ]; then
  say "no $SYSTEM_PY, whose Python the server's Python-backend stub embeds; the real-Triton tests will skip"
  exit 0
fi
pyver="$("$SYSTEM_PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
want="$WHEEL stub-python$pyver"

# 1. The system Python's packages for the Python-backend models, and promtool (apt, as root).
# (libpython only where it is missing: naming an installed package would upgrade it and its Python.)
packages=""
"$SYSTEM_PY" -c 'import numpy, PIL.Image' >/dev/null 2>&1 || packages="python3-numpy python3-pil"
compgen -G "/usr/lib/*/libpython$pyver.so.1.0" >/dev/null || compgen -G "/usr/lib/libpython$pyver.so.1.0" >/dev/null \
  || packages="$packages libpython$pyver"
command -v promtool >/dev/null || packages="$packages prometheus"
if [ -n "$packages" ]; then
  mkdir -p "$ROOT/build"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${packages# } (apt)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages; } >"$ROOT/build/triton-apt.log" 2>&1 \
      || say "apt-get install $packages failed (build/triton-apt.log); the real-Triton and promtool tests will skip"
  else
    say "this is not root with apt-get: install ${packages# } yourself; the real-Triton or promtool tests will skip"
  fi
fi

# 2. The server: the wheel unpacked into $DIR, the stub for $pyver in place.
if [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] && [ -x "$DIR/pytriton/tritonserver/backends/python/triton_python_backend_stub" ]; then
  exit 0
fi
PIP="${TRTINFER_VENV:-$ROOT/.venv}/bin/python"
[ -x "$PIP" ] || PIP=python3
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
say "downloading $WHEEL (55 MB) into $DIR"
if ! "$PIP" -m pip download -q --no-deps -d "$tmp" "$WHEEL" >"$tmp/pip.log" 2>&1; then
  say "pip download $WHEEL failed: $(tail -n1 "$tmp/pip.log"); the real-Triton tests will skip"
  exit 0
fi
rm -rf "$DIR.new"
mkdir -p "$DIR.new"
if ! "$PIP" -m zipfile -e "$tmp"/nvidia_pytriton-*.whl "$DIR.new"; then
  say "unpacking the wheel failed; the real-Triton tests will skip"
  exit 0
fi
server="$DIR.new/pytriton/tritonserver"
stub="$server/python_backend_stubs/$pyver/triton_python_backend_stub"
if [ ! -f "$stub" ]; then
  say "$WHEEL has no Python-backend stub for Python $pyver ($(ls "$server/python_backend_stubs" | tr '\n' ' ')); the real-Triton tests will skip"
  exit 0
fi
cp "$stub" "$server/backends/python/"
chmod +x "$server/bin/tritonserver" "$server/backends/python/triton_python_backend_stub"
rm -rf "$DIR"
mv "$DIR.new" "$DIR"
echo "$want" >"$STAMP"
say "installed tritonserver into $DIR"
exit 0
