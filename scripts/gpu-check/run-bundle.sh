#!/usr/bin/env bash
# Runs inside an unpacked bundle: picks the Vulkan ICD of the NVIDIA driver and runs check.mjs.
# DAWN_OPTS (default backend=vulkan), COMPAT, GPU_CHECK_SIZES and VK_DRIVER_FILES pass through.
set -uo pipefail
B=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DAWN_OPTS="${DAWN_OPTS-backend=vulkan}"
if [ -z "${VK_DRIVER_FILES:-}" ] && [[ "$DAWN_OPTS" == *vulkan* ]]; then
  for f in /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd*.json; do
    [ -f "$f" ] && export VK_DRIVER_FILES="$f" && break
  done
  if [ -z "${VK_DRIVER_FILES:-}" ]; then
    # Compute-only containers often lack the ICD json but may still have the driver's Vulkan library.
    lib=$(ldconfig -p 2>/dev/null | awk '/libGLX_nvidia.so.0/ {print $NF; exit}')
    if [ -n "$lib" ]; then
      printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3.0"}}\n' "$lib" > "$B/nvidia_icd.json"
      export VK_DRIVER_FILES="$B/nvidia_icd.json"
    else
      echo "[gpu-check] no NVIDIA Vulkan ICD found; NVIDIA libraries visible to ldconfig:" >&2
      ldconfig -p 2>/dev/null | grep -i nvidia >&2 || true
    fi
  fi
fi
# glvnd's EGL finds the NVIDIA vendor library through this json; containers keep it beside the driver.
if [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ] && [ -f /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ]; then
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
echo "[gpu-check] DAWN_OPTS=$DAWN_OPTS VK_DRIVER_FILES=${VK_DRIVER_FILES:-} COMPAT=${COMPAT:-}" >&2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null >&2 || true
exec "$B/node" "$B/check.mjs"
