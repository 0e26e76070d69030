#!/usr/bin/env bash
# The GPU benchmark: `cargo xtask bench --gpu` on a Linux machine with a GPU and its driver and
# nothing else. It installs what is missing (Debian/Ubuntu packages, Rust through rustup, Node.js
# 20), then prints one table per model (SmolLM2-135M Q4_1, gemma-3-270m Q4_K_M; -p 128 -n 64):
# quantweb native on Vulkan, llama.cpp's Vulkan and CUDA backends (node-llama-cpp's prebuilt
# binaries), and quantweb and wllama on WebGPU in headless Chromium started with Vulkan flags.
# Each row that cannot run says why. The tables also go to target/bench/gpu.md.
#
#   tests/bench/gpu.sh                      # on the GPU
#   tests/bench/gpu.sh --adapter cpu        # llvmpipe and SwiftShader: the script tested anywhere
#   tests/bench/gpu.sh -p 32 -n 8 --model smollm2
set -euo pipefail
cd "$(dirname "$0")/../.."

SUDO=()
[ "$(id -u)" -ne 0 ] && SUDO=(sudo)

# System packages: the Vulkan loader (the NVIDIA driver brings its own ICD), Mesa's lavapipe for
# --adapter cpu, Chromium, Python for the model wheels, a C toolchain for Rust's build scripts.
packages=(ca-certificates curl build-essential pkg-config python3 python3-pip python3-venv unzip
  libvulkan1 mesa-vulkan-drivers chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> gpu.sh: apt-get install ${missing[*]}"
  "${SUDO[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y "${missing[@]}"
fi
# Ubuntu's Chromium is a snap stub; the bench needs a real binary.
[ -x /usr/bin/chromium ] || [ -n "${CHROMIUM:-}" ] || echo "gpu.sh: no /usr/bin/chromium: the browser rows will say so (set CHROMIUM=...)"

[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
  echo "==> gpu.sh: installing Rust (rustup, stable)"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH="$HOME/.cargo/bin:$PATH"
fi

node_major() { node --version 2>/dev/null | sed 's/^v\([0-9]*\).*/\1/'; }
if ! command -v node >/dev/null || [ "$(node_major)" -lt 20 ]; then
  echo "==> gpu.sh: installing Node.js 20 (node-llama-cpp and playwright-core need >= 20)"
  v=v20.19.5
  curl -sSfL "https://nodejs.org/dist/$v/node-$v-linux-x64.tar.xz" | tar -xJ -C /tmp
  export PATH="/tmp/node-$v-linux-x64/bin:$PATH"
fi

echo "==> gpu.sh: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
exec cargo xtask bench --gpu "$@"
