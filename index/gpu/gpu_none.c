/*
 * The GPU path when quarry is built without CUDA: no devices, and a clear error for any call
 * that would need one.
 */
#include "index/gpu/gpu.h"

bool gpu_compiled(void)
{
    return false;
}

int gpu_device_count(void)
{
    return 0;
}

const char *gpu_cuda_version(void)
{
    return "";
}

qr_status gpu_l2_normalize(float *rows, size_t n, size_t d, char *err)
{
    (void)rows;
    (void)n;
    (void)d;
    return qr_fail(err, QR_EUNAVAILABLE, "quarry was built without CUDA (QUARRY_CUDA=OFF or no nvcc/cuBLAS)");
}
