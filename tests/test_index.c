/*
 * Unit tests of the index module's dependency layer: the SQLite and FAISS that the build linked
 * behave as quarry needs (FTS5 with porter stemming, FAISS inner-product search), and the GPU
 * path answers sensibly on a machine without a device.
 */
#include <math.h>
#include <stdlib.h>

#include "index/gpu/gpu.h"
#include "index/index.h"
#include "tests/harness.h"

TEST(selfcheck_passes)
{
    char err[QR_ERR_LEN] = "";
    CHECK_OK(index_selfcheck(err), err);
}

TEST(versions_are_reported)
{
    CHECK(strncmp(index_faiss_version(), "1.7.3", 5) == 0);
    CHECK(strstr(index_faiss_version(), "avx2") || strstr(index_faiss_version(), "generic"));
    const char *sqlite = index_sqlite_version();
    CHECK(sqlite[0] == '3' && sqlite[1] == '.');
}

TEST(gpu_path_without_device_fails_cleanly)
{
    char err[QR_ERR_LEN] = "";
    float rows[2 * 3] = {3, 4, 0, 0, 0, 2};
    int devices = index_gpu_device_count();
    CHECK(devices >= 0);
    if (!index_gpu_compiled()) {
        CHECK_STR(index_gpu_cuda_version(), "");
        CHECK_INT(devices, 0);
    } else {
        CHECK(index_gpu_cuda_version()[0] != '\0');
    }
    qr_status st = gpu_l2_normalize(rows, 2, 3, err);
    if (devices == 0) {
        CHECK_INT(st, QR_EUNAVAILABLE);
        CHECK(err[0] != '\0');
        CHECK(rows[0] == 3 && rows[1] == 4); /* unchanged on error */
    } else {
        /* on a machine with a device the kernel must agree with the CPU */
        CHECK_OK(st, err);
        CHECK(fabsf(rows[0] - 0.6f) < 1e-6f && fabsf(rows[1] - 0.8f) < 1e-6f);
        CHECK(fabsf(rows[5] - 1.0f) < 1e-6f);
    }
    CHECK_INT(gpu_l2_normalize(NULL, 0, 3, err), index_gpu_compiled() ? QR_EINVAL : QR_EUNAVAILABLE);
}
