/*
 * GPU smoke check for the [foundation] CUDA target: normalises random rows on the device and on
 * the CPU and compares them, then prints a small timing table. Runs only where a device exists
 * (bench/gpu_smoke.sh builds it with nvcc and gcc alone, without quarry's other dependencies).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "index/gpu/gpu.h"

static void cpu_normalize(float *rows, size_t n, size_t d)
{
    for (size_t i = 0; i < n; i++) {
        double sum = 0;
        for (size_t j = 0; j < d; j++)
            sum += (double)rows[i * d + j] * rows[i * d + j];
        float norm = (float)sqrt(sum);
        if (norm > 0)
            for (size_t j = 0; j < d; j++)
                rows[i * d + j] /= norm;
    }
}

int main(void)
{
    char err[QR_ERR_LEN];
    const size_t d = 384, sizes[] = {1000, 100000, 1000000};
    printf("devices: %d, CUDA %s\n", gpu_device_count(), gpu_cuda_version());
    if (gpu_device_count() == 0) {
        fprintf(stderr, "no CUDA device\n");
        return 1;
    }
    printf("| rows | d | max abs diff vs CPU | GPU ms (incl. copies) | CPU ms |\n|---|---|---|---|---|\n");
    int rc = 0;
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t n = sizes[s];
        float *a = malloc(n * d * sizeof(float)), *b = malloc(n * d * sizeof(float));
        if (!a || !b)
            return 1;
        srand(7);
        for (size_t i = 0; i < n * d; i++)
            a[i] = b[i] = (float)rand() / RAND_MAX - 0.5f;
        /* a zero row stays zero */
        memset(a + d, 0, d * sizeof(float));
        memset(b + d, 0, d * sizeof(float));
        uint64_t t0 = qr_now_ns();
        if (gpu_l2_normalize(a, n, d, err)) {
            fprintf(stderr, "gpu: %s\n", err);
            return 1;
        }
        uint64_t t1 = qr_now_ns();
        cpu_normalize(b, n, d);
        uint64_t t2 = qr_now_ns();
        double maxdiff = 0;
        for (size_t i = 0; i < n * d; i++)
            maxdiff = fmax(maxdiff, fabs((double)a[i] - b[i]));
        printf("| %zu | %zu | %.2e | %.1f | %.1f |\n", n, d, maxdiff, (t1 - t0) / 1e6, (t2 - t1) / 1e6);
        if (maxdiff > 1e-5)
            rc = 1;
        free(a);
        free(b);
    }
    printf("%s\n", rc ? "FAIL: GPU and CPU disagree" : "ok: GPU matches CPU");
    return rc;
}
