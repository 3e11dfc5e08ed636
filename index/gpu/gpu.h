/*
 * index/gpu: the CUDA build path of the vector index (private to index/). Compiled when CUDA and
 * cuBLAS are found (QUARRY_CUDA=AUTO|ON); otherwise gpu_none.c answers "not compiled". Every
 * function is callable on a machine without a device: they report 0 devices or QR_EUNAVAILABLE.
 */
#ifndef QUARRY_INDEX_GPU_H
#define QUARRY_INDEX_GPU_H

#include <stdbool.h>
#include <stddef.h>

#include "core/core.h"

#ifdef __cplusplus
extern "C" {
#endif

bool gpu_compiled(void);
/* Devices the CUDA driver reports; 0 when there is no driver, no device or no CUDA build. */
int gpu_device_count(void);
/* "13.0" or "". */
const char *gpu_cuda_version(void);
/* L2-normalises n rows of d floats in place on the device (the first step of every vector the
 * index holds). QR_EUNAVAILABLE without a device; the rows are unchanged on error. */
qr_status gpu_l2_normalize(float *rows, size_t n, size_t d, char *err);

#ifdef __cplusplus
}
#endif

#endif
