#!/usr/bin/env bash
# Builds the CUDA target with nvcc alone (no SQLite, FAISS or other quarry dependencies needed)
# and runs bench/gpu_smoke.c on the device: correctness against the CPU, then timings.
# Usage (on a machine with a GPU): bench/gpu_smoke.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/quarry-gpu-smoke}
mkdir -p "$out"
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$NVCC" --version | tail -n 2
"$NVCC" -O2 -std=c++17 -arch=native -I. -c index/gpu/gpu.cu -o "$out/gpu.o"
for f in core/status.c core/time.c bench/gpu_smoke.c; do
  cc -O2 -std=gnu11 -I. -c "$f" -o "$out/$(basename "$f" .c).o"
done
"$NVCC" -o "$out/gpu_smoke" "$out/gpu.o" "$out/status.o" "$out/time.o" "$out/gpu_smoke.o" -lm
"$out/gpu_smoke"
