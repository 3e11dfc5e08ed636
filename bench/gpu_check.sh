#!/usr/bin/env bash
# The [gpu-build] device check: builds the GPU path and bench/gpu_check.c with nvcc and cc alone
# (no SQLite, FAISS or BLAS needed, as on a bare device machine), then runs it: correctness of
# k-means, assignment and exact top-k against the CPU reference of the same steps, then timings
# at 1M x 384, nlist 4096 (see bench/README.md). Exit status: 0 every check passed, 1 a check
# failed, 77 no device (the CPU parts ran). Under 5 minutes on an H100.
# Usage: bench/gpu_check.sh [OUTDIR] [gpu_check options, e.g. --tiny]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/quarry-gpu-check}
shift || true
mkdir -p "$out"
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$NVCC")")")}
CC=${CC:-cc}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$NVCC" --version | tail -n 2
nproc
start=$(date +%s)
# ARCH=native: only the device present (the CMake build covers sm_80 and sm_90); nvcc alone
# and the C files alongside it, each a background job whose failure stops the script. Warnings
# are not errors here (the CMake build makes them so): another compiler must not cost a run.
"$NVCC" -O3 -std=c++17 -arch="${ARCH:-native}" -I. \
  -DQUARRY_CUBLAS_DIR="\"$CUDA_HOME/lib64\"" -c index/gpu/gpu.cu -o "$out/gpu.o" &
pids=$!
for f in index/gpu/kmeans.c core/status.c core/time.c bench/gpu_check.c; do
  "$CC" -O3 -march=native -fopenmp -std=gnu11 -Wall -Wextra -I. -c "$f" -o "$out/$(basename "$f" .c).o" &
  pids="$pids $!"
done
for p in $pids; do wait "$p"; done
"$NVCC" -o "$out/gpu_check" "$out/gpu.o" "$out/kmeans.o" "$out/status.o" "$out/time.o" "$out/gpu_check.o" \
  -Xcompiler -fopenmp -ldl -lm
echo "built in $(( $(date +%s) - start )) s"
"$out/gpu_check" "$@"
