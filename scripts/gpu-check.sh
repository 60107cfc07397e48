#!/usr/bin/env bash
# On the GPU machine, from a copied working tree (no network, no Node needed):
#   bash scripts/gpu-check.sh [path/to/gpu-check.tar.xz]
# Unpacks the bundle built by scripts/gpu-check/build.sh into a temp folder and runs the check with
# Dawn's Vulkan backend; then, if that found no adapter, once more with Dawn's OpenGL ES backend.
# When $OUT is set (device runner), the output is also saved to $OUT/gpu-check.log.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TARBALL="${1:-$HERE/gpu-check/out/gpu-check.tar.xz}"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if command -v xz >/dev/null 2>&1; then
  xz -dc "$TARBALL" | tar -C "$WORK" -xf -
else
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' "$TARBALL" "$WORK"
fi
LOG="${OUT:-$WORK}/gpu-check.log"
{
  bash "$WORK/bundle/run.sh"
  if ! grep -q '"webgpu"' "$LOG" 2>/dev/null; then
    echo "[gpu-check] retrying with DAWN_OPTS=backend=opengles (EGL)" >&2
    DAWN_OPTS=backend=opengles COMPAT=1 bash "$WORK/bundle/run.sh"
  fi
} 2>&1 | tee "$LOG"
