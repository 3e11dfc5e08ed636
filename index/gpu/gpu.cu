/*
 * The CUDA build path of the vector index. For now one kernel, row-wise L2 normalisation, which
 * gives the GPU path its place in the build; k-means, assignment and brute-force top-k come with
 * the [gpu-build] issue. Everything here fails cleanly on a machine without a device.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>

#include "index/gpu/gpu.h"

/* One block per row; threads stride over the row's elements and reduce in shared memory. */
__global__ static void l2_normalize_rows(float *rows, size_t d)
{
    extern __shared__ float partial[];
    float *row = rows + (size_t)blockIdx.x * d;
    float sum = 0.0f;
    for (size_t j = threadIdx.x; j < d; j += blockDim.x)
        sum += row[j] * row[j];
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            partial[threadIdx.x] += partial[threadIdx.x + s];
        __syncthreads();
    }
    float norm = sqrtf(partial[0]);
    if (norm > 0.0f)
        for (size_t j = threadIdx.x; j < d; j += blockDim.x)
            row[j] /= norm;
}

extern "C" bool gpu_compiled(void)
{
    return true;
}

extern "C" int gpu_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no device" error */
        return 0;
    }
    return n;
}

extern "C" const char *gpu_cuda_version(void)
{
    static char version[16];
    if (!version[0])
        snprintf(version, sizeof(version), "%d.%d", CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    return version;
}

extern "C" qr_status gpu_l2_normalize(float *rows, size_t n, size_t d, char *err)
{
    if (!rows || d == 0 || n == 0)
        return qr_fail(err, QR_EINVAL, "gpu_l2_normalize: empty input");
    if (gpu_device_count() == 0)
        return qr_fail(err, QR_EUNAVAILABLE, "no CUDA device available");
    float *dev = NULL;
    size_t bytes = n * d * sizeof(float);
    qr_status st = QR_OK;
    cudaError_t ce = cudaMalloc(&dev, bytes);
    if (ce == cudaSuccess)
        ce = cudaMemcpy(dev, rows, bytes, cudaMemcpyHostToDevice);
    if (ce == cudaSuccess) {
        const unsigned threads = 128;
        l2_normalize_rows<<<(unsigned)n, threads, threads * sizeof(float)>>>(dev, d);
        ce = cudaGetLastError();
    }
    if (ce == cudaSuccess)
        ce = cudaMemcpy(rows, dev, bytes, cudaMemcpyDeviceToHost);
    if (ce != cudaSuccess)
        st = qr_fail(err, QR_EINTERNAL, "CUDA error: %s", cudaGetErrorString(ce));
    cudaFree(dev);
    return st;
}
