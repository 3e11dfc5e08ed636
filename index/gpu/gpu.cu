/*
 * The CUDA build path of the vector index: row-wise L2 normalisation, k-means for IVF training,
 * bulk assignment of rows to their nearest centroid, and exact brute-force top-k.
 *
 * Distances come from cuBLAS SGEMM in plain FP32 (no TF32, so that assignments agree with the
 * CPU's); small kernels take the argmax of each row of scores, keep top-k candidates per query,
 * and add rows into their cluster's sum in row order. Everything FAISS decides on the host stays
 * on the host (kmeans.c): after each iteration the sums come back, the host divides, splits
 * empty clusters and renormalises exactly as the CPU reference does, and sends the centroids
 * back. Because the device adds each cluster's rows in the order FAISS does, an iteration whose
 * assignments match the CPU's yields bit-identical centroids.
 *
 * Rows stream through the device in batches sized by gpu_plan_pass from a memory budget: when
 * they fit they are uploaded once, otherwise two batch buffers alternate, the next batch copying
 * on its own stream while the current one computes. cuBLAS is loaded with dlopen on first use,
 * so quarry starts without it and machines without CUDA libraries still run the CPU path.
 * Everything here fails cleanly (QR_EUNAVAILABLE) on a machine without a device.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/gpu/gpu.h"

#define BLAS_WORKSPACE  (32u << 20) /* cuBLAS's recommended workspace on Hopper */
#define TILE_MAX_FLOATS (1u << 28)  /* one score tile: 1 GiB */
#define BATCH_MAX_ROWS  (1u << 20)
#define QUERY_BATCH_MAX 8192
#define WARPS_PER_BLOCK 4
#define FULL_MASK       0xffffffffu
#define MAX_BUFFERS     24

/* ---- L2 normalisation -------------------------------------------------------------------- */

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

/* ---- cuBLAS, loaded at run time ---------------------------------------------------------- */

typedef struct {
    decltype(&cublasCreate_v2) create;
    decltype(&cublasDestroy_v2) destroy;
    decltype(&cublasSetStream_v2) set_stream;
    decltype(&cublasSetWorkspace_v2) set_workspace;
    decltype(&cublasSetMathMode) set_math_mode;
    decltype(&cublasSgemm_v2) sgemm;
    decltype(&cublasGetStatusString) status_string;
} blas_api;

static blas_api blas;
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static qr_status blas_status;
static char blas_err[QR_ERR_LEN];

#define STR2(x) #x
#define STR(x)  STR2(x)

static void blas_load_once(void)
{
    const char *path = getenv("QUARRY_CUBLAS");
    bool chosen = path && *path;
    if (!chosen)
        path = "libcublas.so." STR(CUBLAS_VER_MAJOR);
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
#ifdef QUARRY_CUBLAS_DIR
    /* not on the loader's path: the toolkit quarry was built with still has it */
    static char built[512];
    if (!lib && !chosen) {
        snprintf(built, sizeof(built), "%s/%s", QUARRY_CUBLAS_DIR, path);
        if ((lib = dlopen(built, RTLD_NOW | RTLD_LOCAL)))
            path = built;
    }
#endif
    if (!lib) {
        const char *why = dlerror();
        blas_status =
            qr_fail(blas_err, QR_EUNAVAILABLE, "cannot load cuBLAS '%s': %s", path, why ? why : "unknown");
        return;
    }
    struct {
        void **slot;
        const char *name;
    } syms[] = {
        {(void **)&blas.create, "cublasCreate_v2"},
        {(void **)&blas.destroy, "cublasDestroy_v2"},
        {(void **)&blas.set_stream, "cublasSetStream_v2"},
        {(void **)&blas.set_workspace, "cublasSetWorkspace_v2"},
        {(void **)&blas.set_math_mode, "cublasSetMathMode"},
        {(void **)&blas.sgemm, "cublasSgemm_v2"},
        {(void **)&blas.status_string, "cublasGetStatusString"},
    };
    for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
        *syms[i].slot = dlsym(lib, syms[i].name);
        if (!*syms[i].slot) {
            blas_status = qr_fail(blas_err, QR_EUNAVAILABLE, "cuBLAS '%s' lacks %s", path, syms[i].name);
            dlclose(lib);
            memset(&blas, 0, sizeof(blas));
            return;
        }
    }
    blas_status = QR_OK;
}

extern "C" qr_status gpu_blas_load(char *err)
{
    pthread_once(&blas_once, blas_load_once);
    if (blas_status)
        return qr_fail(err, blas_status, "%s", blas_err);
    return QR_OK;
}

/* ---- one call's device context ------------------------------------------------------------- */

typedef struct {
    cudaStream_t compute, copy;
    cublasHandle_t handle;
    void *buffers[MAX_BUFFERS];
    int nbuffers;
    void *pinned[MAX_BUFFERS];
    int npinned;
    const void *registered; /* host rows pinned in place for streaming, or NULL */
    size_t held;            /* device bytes allocated by this call */
    size_t budget;
} ctx;

static qr_status cuda_fail(char *err, cudaError_t e, const char *what)
{
    cudaGetLastError(); /* clear a non-sticky error so the next call starts clean */
    return qr_fail(err, e == cudaErrorMemoryAllocation ? QR_ENOMEM : QR_EINTERNAL, "%s: %s", what,
                   cudaGetErrorString(e));
}

static qr_status blas_fail(char *err, cublasStatus_t s, const char *what)
{
    return qr_fail(err, QR_EINTERNAL, "%s: %s", what,
                   blas.status_string ? blas.status_string(s) : "cuBLAS error");
}

static qr_status dev_alloc(ctx *c, void **p, size_t bytes, const char *what, char *err)
{
    *p = NULL;
    if (c->nbuffers == MAX_BUFFERS)
        return qr_fail(err, QR_EINTERNAL, "too many device buffers");
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *p = NULL;
        cudaGetLastError();
        return qr_fail(err, QR_ENOMEM, "cannot allocate %zu MiB of device memory for %s: %s", bytes >> 20,
                       what, cudaGetErrorString(e));
    }
    c->buffers[c->nbuffers++] = *p;
    c->held += bytes;
    return QR_OK;
}

static qr_status host_alloc(ctx *c, void **p, size_t bytes, char *err)
{
    *p = NULL;
    if (c->npinned == MAX_BUFFERS)
        return qr_fail(err, QR_EINTERNAL, "too many pinned buffers");
    cudaError_t e = cudaMallocHost(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *p = NULL;
        return cuda_fail(err, e, "cannot allocate pinned host memory");
    }
    c->pinned[c->npinned++] = *p;
    return QR_OK;
}

static void ctx_close(ctx *c)
{
    if (c->compute)
        cudaStreamSynchronize(c->compute);
    if (c->copy)
        cudaStreamSynchronize(c->copy);
    if (c->handle)
        blas.destroy(c->handle);
    for (int i = 0; i < c->nbuffers; i++)
        cudaFree(c->buffers[i]);
    for (int i = 0; i < c->npinned; i++)
        cudaFreeHost(c->pinned[i]);
    if (c->registered)
        cudaHostUnregister((void *)c->registered);
    if (c->compute)
        cudaStreamDestroy(c->compute);
    if (c->copy)
        cudaStreamDestroy(c->copy);
    cudaGetLastError();
    memset(c, 0, sizeof(*c));
}

/* Checks for a device and cuBLAS, creates the streams and the cuBLAS handle with its workspace,
 * and settles the memory budget (0: 90% of what the device has free). */
static qr_status ctx_open(ctx *c, size_t budget, gpu_report *rep, char *err)
{
    memset(c, 0, sizeof(*c));
    if (gpu_device_count() == 0)
        return qr_fail(err, QR_EUNAVAILABLE, "no CUDA device available");
    qr_status st = gpu_blas_load(err);
    if (st)
        return st;
    cudaError_t e;
    cublasStatus_t bs;
    size_t free_b = 0, total_b = 0;
    void *ws = NULL;
    int dev = 0;
    cudaDeviceProp prop;
    if ((e = cudaGetDevice(&dev)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&prop, dev)) != cudaSuccess ||
        (e = cudaMemGetInfo(&free_b, &total_b)) != cudaSuccess) {
        st = cuda_fail(err, e, "cannot query the CUDA device");
        goto out;
    }
    if (rep) {
        /* truncated to the report's field, without snprintf's truncation warnings */
        size_t len = strnlen(prop.name, sizeof(prop.name));
        len = len < sizeof(rep->device) ? len : sizeof(rep->device) - 1;
        memcpy(rep->device, prop.name, len);
        rep->device[len] = '\0';
    }
    c->budget = budget ? budget : free_b / 10 * 9;
    if ((e = cudaStreamCreateWithFlags(&c->compute, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&c->copy, cudaStreamNonBlocking)) != cudaSuccess) {
        st = cuda_fail(err, e, "cannot create CUDA streams");
        goto out;
    }
    if ((bs = blas.create(&c->handle)) != CUBLAS_STATUS_SUCCESS) {
        c->handle = NULL;
        st = blas_fail(err, bs, "cannot create a cuBLAS handle");
        goto out;
    }
    if ((st = dev_alloc(c, &ws, BLAS_WORKSPACE, "the cuBLAS workspace", err)))
        goto out;
    /* FP32 throughout: TF32 would be faster but flips near-tie assignments against the CPU */
    if ((bs = blas.set_stream(c->handle, c->compute)) != CUBLAS_STATUS_SUCCESS ||
        (bs = blas.set_workspace(c->handle, ws, BLAS_WORKSPACE)) != CUBLAS_STATUS_SUCCESS ||
        (bs = blas.set_math_mode(c->handle, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS) {
        st = blas_fail(err, bs, "cannot configure cuBLAS");
        goto out;
    }
out:
    if (st)
        ctx_close(c);
    return st;
}

/* S (rows x cols, row-major) = A (rows x d) * B^T (B: cols x d), both row-major. In cuBLAS's
 * column-major terms S^T = B * A^T: B read transposed, A as it is. */
static qr_status gemm_abt(ctx *c, const float *A, size_t rows, const float *B, size_t cols, int d, float *S,
                          char *err)
{
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t bs = blas.sgemm(c->handle, CUBLAS_OP_T, CUBLAS_OP_N, (int)cols, (int)rows, d, &one, B, d,
                                   A, d, &zero, S, (int)cols);
    return bs == CUBLAS_STATUS_SUCCESS ? QR_OK : blas_fail(err, bs, "cuBLAS SGEMM failed");
}

/* ---- rows on the device: resident, or streamed through two buffers ---------------------------- */

typedef struct {
    const float *host;
    size_t n;
    int d;
    gpu_plan plan;
    float *dev; /* resident: n rows; streamed: two buffers of batch_rows rows */
    cudaEvent_t copied[2], freed[2];
    size_t nbatches;
} rowsrc;

static qr_status rowsrc_open(ctx *c, rowsrc *r, const float *host, size_t n, int d, const gpu_plan *plan,
                             char *err)
{
    memset(r, 0, sizeof(*r));
    r->host = host;
    r->n = n;
    r->d = d;
    r->plan = *plan;
    r->nbatches = (n + plan->batch_rows - 1) / plan->batch_rows;
    size_t rows = plan->resident ? n : 2 * plan->batch_rows;
    qr_status st = dev_alloc(c, (void **)&r->dev, rows * (size_t)d * sizeof(float), "the rows", err);
    if (st)
        return st;
    cudaError_t e = cudaSuccess;
    for (int i = 0; i < 2 && e == cudaSuccess; i++) {
        e = cudaEventCreateWithFlags(&r->copied[i], cudaEventDisableTiming);
        if (e == cudaSuccess)
            e = cudaEventCreateWithFlags(&r->freed[i], cudaEventDisableTiming);
    }
    if (e != cudaSuccess)
        return cuda_fail(err, e, "cannot create CUDA events");
    if (plan->resident) {
        e = cudaMemcpyAsync(r->dev, host, n * (size_t)d * sizeof(float), cudaMemcpyHostToDevice, c->compute);
        return e == cudaSuccess ? QR_OK : cuda_fail(err, e, "cannot upload the rows");
    }
    /* pinning the caller's rows lets every pass copy them by DMA, overlapped with compute; when
     * the system refuses, pageable copies are slower but still correct */
    if (!c->registered &&
        cudaHostRegister((void *)host, n * (size_t)d * sizeof(float), cudaHostRegisterDefault) == cudaSuccess)
        c->registered = host;
    cudaGetLastError();
    return QR_OK;
}

static void rowsrc_close(rowsrc *r)
{
    for (int i = 0; i < 2; i++) {
        if (r->copied[i])
            cudaEventDestroy(r->copied[i]);
        if (r->freed[i])
            cudaEventDestroy(r->freed[i]);
    }
    memset(r, 0, sizeof(*r));
}

static size_t rowsrc_rows(const rowsrc *r, size_t b)
{
    size_t start = b * r->plan.batch_rows;
    return r->n - start < r->plan.batch_rows ? r->n - start : r->plan.batch_rows;
}

/* Starts copying batch b into its buffer once the compute stream is done with that buffer. */
static cudaError_t rowsrc_issue(ctx *c, rowsrc *r, size_t b)
{
    int slot = (int)(b % 2);
    size_t off = b * r->plan.batch_rows * (size_t)r->d;
    cudaError_t e = cudaStreamWaitEvent(c->copy, r->freed[slot], 0);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(r->dev + (size_t)slot * r->plan.batch_rows * (size_t)r->d, r->host + off,
                            rowsrc_rows(r, b) * (size_t)r->d * sizeof(float), cudaMemcpyHostToDevice,
                            c->copy);
    if (e == cudaSuccess)
        e = cudaEventRecord(r->copied[slot], c->copy);
    return e;
}

/* Device rows of batch b, ready for work queued on the compute stream; also starts the copy of
 * batch b + 1 so that it overlaps batch b's GEMM. */
static qr_status rowsrc_get(ctx *c, rowsrc *r, size_t b, const float **rows, char *err)
{
    if (r->plan.resident) {
        *rows = r->dev + b * r->plan.batch_rows * (size_t)r->d;
        return QR_OK;
    }
    cudaError_t e = cudaSuccess;
    if (b == 0)
        e = rowsrc_issue(c, r, 0);
    if (e == cudaSuccess && b + 1 < r->nbatches)
        e = rowsrc_issue(c, r, b + 1);
    if (e == cudaSuccess)
        e = cudaStreamWaitEvent(c->compute, r->copied[b % 2], 0);
    if (e != cudaSuccess)
        return cuda_fail(err, e, "cannot stream rows to the device");
    *rows = r->dev + (b % 2) * r->plan.batch_rows * (size_t)r->d;
    return QR_OK;
}

/* Marks batch b's buffer reusable once the work queued so far on the compute stream is done. */
static qr_status rowsrc_done(ctx *c, rowsrc *r, size_t b, char *err)
{
    if (r->plan.resident)
        return QR_OK;
    cudaError_t e = cudaEventRecord(r->freed[b % 2], c->compute);
    return e == cudaSuccess ? QR_OK : cuda_fail(err, e, "cannot record a CUDA event");
}

/* ---- kernels -------------------------------------------------------------------------------- */

/* One warp per row of scores: the best column, score S - half (L2) or S (IP), ties to the smaller
 * column; for L2 also |x|^2 so that the distance |x|^2 - 2 * best can be reported. */
__global__ static void argmax_rows(const float *S, size_t rows, int k, const float *half, const float *X,
                                   int d, int32_t *label, float *dist)
{
    size_t w = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x & 31;
    if (w >= rows)
        return; /* whole warps leave together: rows are per warp */
    const float *s = S + w * (size_t)k;
    float best = -INFINITY;
    int bi = INT_MAX;
    for (int j = lane; j < k; j += 32) {
        float v = half ? s[j] - half[j] : s[j];
        if (v > best) {
            best = v;
            bi = j;
        }
    }
    for (int off = 16; off; off >>= 1) {
        float ov = __shfl_xor_sync(FULL_MASK, best, off);
        int oi = __shfl_xor_sync(FULL_MASK, bi, off);
        if (ov > best || (ov == best && oi < bi)) {
            best = ov;
            bi = oi;
        }
    }
    float xx = 0.0f;
    if (half) {
        const float *x = X + w * (size_t)d;
        for (int j = lane; j < d; j += 32)
            xx += x[j] * x[j];
        for (int off = 16; off; off >>= 1)
            xx += __shfl_xor_sync(FULL_MASK, xx, off);
    }
    if (lane == 0) {
        label[w] = bi;
        dist[w] = half ? xx - 2.0f * best : best;
    }
}

/* One block per cluster: adds the cluster's rows (perm[offsets[c]..offsets[c+1]), ascending) to
 * its running sum one after another, the order in which FAISS's compute_centroids adds them. */
__global__ static void sum_clusters(const float *X, int d, const int32_t *perm, const int32_t *offsets,
                                    float *sums)
{
    int c = blockIdx.x;
    int beg = offsets[c], end = offsets[c + 1];
    if (beg == end)
        return;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float acc = sums[(size_t)c * d + j];
        for (int p = beg; p < end; p++)
            acc += X[(size_t)perm[p] * d + j];
        sums[(size_t)c * d + j] = acc;
    }
}

/* One warp per row: 0.5 * |x|^2, the L2 term of the top-k scores. */
__global__ static void half_norm_rows(const float *X, size_t rows, int d, float *half)
{
    size_t w = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x & 31;
    if (w >= rows)
        return;
    const float *x = X + w * (size_t)d;
    float s = 0.0f;
    for (int j = lane; j < d; j += 32)
        s += x[j] * x[j];
    for (int off = 16; off; off >>= 1)
        s += __shfl_xor_sync(FULL_MASK, s, off);
    if (lane == 0)
        half[w] = 0.5f * s;
}

/* (a, ia) ranks before (b, ib): larger score, then smaller id; id -1 (empty) ranks last. */
__device__ static bool ranks_before(float a, long long ia, float b, long long ib)
{
    if (ia < 0)
        return false;
    if (ib < 0)
        return true;
    return a > b || (a == b && ia < ib);
}

template <int KP>
__device__ static void list_insert(float *v, long long *id, int &cnt, float &thr, float s, long long i)
{
    int pos;
    if (cnt < KP) {
        pos = cnt++;
    } else {
        if (!(s > thr))
            return;
        pos = KP - 1;
    }
    while (pos > 0 && v[pos - 1] < s) {
        v[pos] = v[pos - 1];
        id[pos] = id[pos - 1];
        pos--;
    }
    v[pos] = s;
    id[pos] = i;
    if (cnt == KP)
        thr = v[KP - 1];
}

/* One warp per query: merges a tile of scores (S - half for L2) into the query's running list of
 * KP best candidates. Each lane keeps a sorted list of what it saw (the running list's entries
 * dealt among the lanes, then its columns of the tile), and the warp merges the 32 lists by
 * taking the best head KP times. */
template <int KP>
__global__ static void select_topk(const float *S, int queries, int cols, const float *half, long long base0,
                                   float *run_v, long long *run_i)
{
    int w = (int)(((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32);
    int lane = threadIdx.x & 31;
    if (w >= queries)
        return;
    float v[KP];
    long long id[KP];
    int cnt = 0;
    float thr = -INFINITY;
    float *rv = run_v + (size_t)w * KP;
    long long *ri = run_i + (size_t)w * KP;
    for (int t = lane; t < KP; t += 32)
        if (ri[t] >= 0)
            list_insert<KP>(v, id, cnt, thr, rv[t], ri[t]);
    const float *row = S + (size_t)w * cols;
    for (int j = lane; j < cols; j += 32) {
        float s = half ? row[j] - half[j] : row[j];
        if (cnt < KP || s > thr)
            list_insert<KP>(v, id, cnt, thr, s, base0 + j);
    }
    __syncwarp(); /* every lane has read the running list before lane 0 rewrites it */
    int h = 0;
    for (int r = 0; r < KP; r++) {
        float hv = h < cnt ? v[h] : -INFINITY;
        long long hi = h < cnt ? id[h] : -1;
        int hl = lane;
        for (int off = 16; off; off >>= 1) {
            float ov = __shfl_xor_sync(FULL_MASK, hv, off);
            long long oi = __shfl_xor_sync(FULL_MASK, hi, off);
            int ol = __shfl_xor_sync(FULL_MASK, hl, off);
            if (ranks_before(ov, oi, hv, hi) || (oi == hi && ol < hl)) {
                hv = ov;
                hi = oi;
                hl = ol;
            }
        }
        if (lane == hl && hi >= 0)
            h++;
        if (lane == 0) {
            rv[r] = hv;
            ri[r] = hi;
        }
    }
}

static unsigned warp_blocks(size_t rows)
{
    return (unsigned)((rows + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK);
}

static qr_status launched(char *err, const char *what)
{
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? QR_OK : cuda_fail(err, e, what);
}

/* ---- assignment pass (shared by k-means and gpu_assign) ------------------------------------- */

/* Device buffers of one assignment pass over rows against k centroids. */
typedef struct {
    float *cent, *half, *scores, *dist;
    int32_t *label;
    int32_t *h_label; /* pinned */
    float *h_dist;    /* pinned */
} assign_bufs;

static size_t assign_max_batch(size_t k)
{
    size_t b = TILE_MAX_FLOATS / k;
    if (b > BATCH_MAX_ROWS)
        b = BATCH_MAX_ROWS;
    return b ? b : 1;
}

/* Scores batch b of r against the centroids, and copies its labels and distances to the pinned
 * host arrays; returns after the copy completed. */
static qr_status assign_batch(ctx *c, rowsrc *r, size_t b, const float **xb, size_t k, bool l2,
                              assign_bufs *a, char *err)
{
    size_t rows = rowsrc_rows(r, b);
    qr_status st = rowsrc_get(c, r, b, xb, err);
    if (st)
        return st;
    if ((st = gemm_abt(c, *xb, rows, a->cent, k, r->d, a->scores, err)))
        return st;
    argmax_rows<<<warp_blocks(rows), WARPS_PER_BLOCK * 32, 0, c->compute>>>(
        a->scores, rows, (int)k, l2 ? a->half : NULL, *xb, r->d, a->label, a->dist);
    if ((st = launched(err, "the argmax kernel failed")))
        return st;
    cudaError_t e =
        cudaMemcpyAsync(a->h_label, a->label, rows * sizeof(int32_t), cudaMemcpyDeviceToHost, c->compute);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(a->h_dist, a->dist, rows * sizeof(float), cudaMemcpyDeviceToHost, c->compute);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->compute);
    return e == cudaSuccess ? QR_OK : cuda_fail(err, e, "cannot read back the assignments");
}

static qr_status assign_alloc(ctx *c, size_t k, int d, size_t batch, assign_bufs *a, char *err)
{
    qr_status st;
    memset(a, 0, sizeof(*a));
    if ((st = dev_alloc(c, (void **)&a->cent, k * (size_t)d * sizeof(float), "the centroids", err)) ||
        (st = dev_alloc(c, (void **)&a->half, k * sizeof(float), "the centroid norms", err)) ||
        (st = dev_alloc(c, (void **)&a->scores, batch * k * sizeof(float), "the score tile", err)) ||
        (st = dev_alloc(c, (void **)&a->label, batch * sizeof(int32_t), "the labels", err)) ||
        (st = dev_alloc(c, (void **)&a->dist, batch * sizeof(float), "the distances", err)) ||
        (st = host_alloc(c, (void **)&a->h_label, batch * sizeof(int32_t), err)) ||
        (st = host_alloc(c, (void **)&a->h_dist, batch * sizeof(float), err)))
        return st;
    return QR_OK;
}

/* Device bytes one assignment pass holds besides the rows: fixed, and per row of a batch. */
static void assign_bytes(size_t k, int d, bool sums, size_t *fixed, size_t *per_row)
{
    *fixed = BLAS_WORKSPACE + k * (size_t)d * sizeof(float) * (sums ? 2 : 1) + k * sizeof(float) +
             (sums ? (k + 1) * sizeof(int32_t) : 0);
    *per_row = k * sizeof(float) + 2 * sizeof(int32_t) + sizeof(float) + (sums ? sizeof(int32_t) : 0);
}

static void report_plan(gpu_report *rep, const gpu_plan *plan, const ctx *c)
{
    if (!rep)
        return;
    rep->resident = plan->resident;
    rep->batch_rows = plan->batch_rows;
    rep->peak_device_bytes = c->held;
}

/* ---- k-means ------------------------------------------------------------------------------- */

extern "C" qr_status gpu_kmeans(const float *x, size_t n, int dim, size_t k, const gpu_kmeans_opts *opts,
                                float *centroids, gpu_report *rep, char *err)
{
    uint64_t t0 = qr_now_ns();
    ctx c;
    memset(&c, 0, sizeof(c));
    rowsrc r;
    memset(&r, 0, sizeof(r));
    gpu_kmeans_state s;
    memset(&s, 0, sizeof(s));
    assign_bufs a;
    memset(&a, 0, sizeof(a));
    gpu_plan plan;
    size_t *sample = NULL, nx = 0, fixed = 0, per_row = 0, batches = 0;
    float *xs = NULL, *dsums = NULL;
    int32_t *dperm = NULL, *doff = NULL, *h_perm = NULL, *h_off = NULL, *count = NULL;
    const float *train = x;
    bool done = false, l2 = false;
    int it = 0;
    size_t d = (size_t)dim;
    qr_status st = QR_OK;
    cudaError_t e;

    if (rep)
        memset(rep, 0, sizeof(*rep));
    if (!opts || opts->niter < 1)
        return qr_fail(err, QR_EINVAL, "k-means needs options with at least one iteration");
    if (!x || !centroids || dim < 1)
        return qr_fail(err, QR_EINVAL, "k-means needs rows, a dimension >= 1 and an output");
    if (gpu_device_count() == 0)
        return qr_fail(err, QR_EUNAVAILABLE, "no CUDA device available");
    l2 = opts->metric == GPU_METRIC_L2;
    if ((st = gpu_kmeans_sample(n, k, opts->max_points_per_centroid, opts->seed, &sample, &nx, err)))
        goto out;
    if (sample) {
        if (!(xs = (float *)malloc(nx * d * sizeof(float)))) {
            st = qr_fail(err, QR_ENOMEM, "out of memory for a k-means sample of %zu rows", nx);
            goto out;
        }
        for (size_t i = 0; i < nx; i++)
            memcpy(xs + i * d, x + sample[i] * d, d * sizeof(float));
        train = xs;
    }
    if ((st = gpu_kmeans_begin(&s, train, nx, dim, k, opts->metric, opts->seed, &done, err)))
        goto out;
    if (done)
        goto finish;
    if (nx > INT_MAX || k > INT_MAX) {
        st = qr_fail(err, QR_ELIMIT, "k-means on the GPU takes at most %d rows and clusters", INT_MAX);
        goto out;
    }
    if ((st = ctx_open(&c, opts->device_budget, rep, err)))
        goto out;
    assign_bytes(k, dim, true, &fixed, &per_row);
    if ((st =
             gpu_plan_pass(nx, d * sizeof(float), fixed, per_row, c.budget, assign_max_batch(k), &plan, err)))
        goto out;
    if ((st = assign_alloc(&c, k, dim, plan.batch_rows, &a, err)) ||
        (st = dev_alloc(&c, (void **)&dsums, k * d * sizeof(float), "the cluster sums", err)) ||
        (st = dev_alloc(&c, (void **)&dperm, plan.batch_rows * sizeof(int32_t), "the row order", err)) ||
        (st = dev_alloc(&c, (void **)&doff, (k + 1) * sizeof(int32_t), "the cluster offsets", err)) ||
        (st = host_alloc(&c, (void **)&h_perm, plan.batch_rows * sizeof(int32_t), err)) ||
        (st = host_alloc(&c, (void **)&h_off, (k + 1) * sizeof(int32_t), err)) ||
        (st = rowsrc_open(&c, &r, train, nx, dim, &plan, err)))
        goto out;
    if (!(count = (int32_t *)malloc((k + 1) * sizeof(int32_t)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    for (; it < opts->niter; it++) {
        e = cudaMemcpyAsync(a.cent, s.centroids, k * d * sizeof(float), cudaMemcpyHostToDevice, c.compute);
        if (e == cudaSuccess && l2)
            e = cudaMemcpyAsync(a.half, s.half_norm, k * sizeof(float), cudaMemcpyHostToDevice, c.compute);
        if (e == cudaSuccess)
            e = cudaMemsetAsync(dsums, 0, k * d * sizeof(float), c.compute);
        /* the uploads read s.centroids, which the reset below zeroes */
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(c.compute);
        if (e != cudaSuccess) {
            st = cuda_fail(err, e, "cannot upload the centroids");
            goto out;
        }
        gpu_kmeans_iteration_reset(&s);
        for (size_t b = 0; b < r.nbatches; b++, batches++) {
            size_t rows = rowsrc_rows(&r, b);
            const float *xb = NULL;
            if ((st = assign_batch(&c, &r, b, &xb, k, l2, &a, err)))
                goto out;
            /* a stable counting sort of the batch by cluster: each cluster's rows ascending */
            memset(count, 0, (k + 1) * sizeof(int32_t));
            for (size_t i = 0; i < rows; i++) {
                if (a.h_label[i] < 0 || (size_t)a.h_label[i] >= k) {
                    st = qr_fail(err, QR_EINTERNAL, "the argmax kernel returned cluster %d of %zu",
                                 a.h_label[i], k);
                    goto out;
                }
                count[a.h_label[i] + 1]++;
            }
            for (size_t j = 0; j < k; j++) {
                s.hassign[j] += (float)count[j + 1];
                count[j + 1] += count[j];
            }
            memcpy(h_off, count, (k + 1) * sizeof(int32_t));
            for (size_t i = 0; i < rows; i++)
                h_perm[count[a.h_label[i]]++] = (int32_t)i;
            for (size_t i = 0; i < rows; i++)
                s.objective += a.h_dist[i];
            e = cudaMemcpyAsync(dperm, h_perm, rows * sizeof(int32_t), cudaMemcpyHostToDevice, c.compute);
            if (e == cudaSuccess)
                e = cudaMemcpyAsync(doff, h_off, (k + 1) * sizeof(int32_t), cudaMemcpyHostToDevice,
                                    c.compute);
            if (e != cudaSuccess) {
                st = cuda_fail(err, e, "cannot upload the cluster order");
                goto out;
            }
            sum_clusters<<<(unsigned)k, 128, 0, c.compute>>>(xb, dim, dperm, doff, dsums);
            if ((st = launched(err, "the cluster sum kernel failed")) || (st = rowsrc_done(&c, &r, b, err)))
                goto out;
            /* the next batch's host work rewrites h_perm and h_off: wait for these copies */
            if ((e = cudaStreamSynchronize(c.compute)) != cudaSuccess) {
                st = cuda_fail(err, e, "k-means batch failed");
                goto out;
            }
        }
        e = cudaMemcpyAsync(s.centroids, dsums, k * d * sizeof(float), cudaMemcpyDeviceToHost, c.compute);
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(c.compute);
        if (e != cudaSuccess) {
            st = cuda_fail(err, e, "cannot read back the cluster sums");
            goto out;
        }
        gpu_kmeans_iteration_end(&s);
    }
    report_plan(rep, &plan, &c);
finish:
    memcpy(centroids, s.centroids, k * d * sizeof(float));
    if (rep) {
        rep->batches = batches;
        rep->train_rows = nx;
        rep->iterations = it;
        rep->splits = s.splits;
        rep->objective = s.objective;
        rep->seconds = (double)(qr_now_ns() - t0) / 1e9;
    }
out:
    rowsrc_close(&r);
    ctx_close(&c);
    gpu_kmeans_release(&s);
    free(sample);
    free(xs);
    free(count);
    return st;
}

/* ---- bulk assignment ------------------------------------------------------------------------ */

extern "C" qr_status gpu_assign(const float *x, size_t n, int dim, const float *centroids, size_t k,
                                gpu_metric metric, size_t budget, int64_t *labels, float *dist,
                                gpu_report *rep, char *err)
{
    uint64_t t0 = qr_now_ns();
    ctx c;
    memset(&c, 0, sizeof(c));
    rowsrc r;
    memset(&r, 0, sizeof(r));
    assign_bufs a;
    memset(&a, 0, sizeof(a));
    gpu_plan plan;
    size_t fixed = 0, per_row = 0;
    float *half = NULL;
    bool l2 = metric == GPU_METRIC_L2;
    qr_status st = QR_OK;
    cudaError_t e;

    if (rep)
        memset(rep, 0, sizeof(*rep));
    if (!x || !centroids || !labels || dim < 1 || k == 0 || n == 0)
        return qr_fail(err, QR_EINVAL, "assignment needs rows, centroids, labels and a dimension >= 1");
    if (metric != GPU_METRIC_IP && metric != GPU_METRIC_L2)
        return qr_fail(err, QR_EINVAL, "unknown assignment metric %d", (int)metric);
    if (k > INT_MAX)
        return qr_fail(err, QR_ELIMIT, "too many centroids");
    if ((st = ctx_open(&c, budget, rep, err)))
        goto out;
    assign_bytes(k, dim, false, &fixed, &per_row);
    if ((st = gpu_plan_pass(n, (size_t)dim * sizeof(float), fixed, per_row, c.budget, assign_max_batch(k),
                            &plan, err)) ||
        (st = assign_alloc(&c, k, dim, plan.batch_rows, &a, err)) ||
        (st = rowsrc_open(&c, &r, x, n, dim, &plan, err)))
        goto out;
    if (l2) {
        if (!(half = (float *)malloc(k * sizeof(float)))) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
        gpu_half_norms(centroids, k, dim, half);
    }
    e = cudaMemcpyAsync(a.cent, centroids, k * (size_t)dim * sizeof(float), cudaMemcpyHostToDevice,
                        c.compute);
    if (e == cudaSuccess && l2)
        e = cudaMemcpyAsync(a.half, half, k * sizeof(float), cudaMemcpyHostToDevice, c.compute);
    if (e != cudaSuccess) {
        st = cuda_fail(err, e, "cannot upload the centroids");
        goto out;
    }
    for (size_t b = 0; b < r.nbatches; b++) {
        size_t rows = rowsrc_rows(&r, b), start = b * plan.batch_rows;
        const float *xb = NULL;
        if ((st = assign_batch(&c, &r, b, &xb, k, l2, &a, err)) || (st = rowsrc_done(&c, &r, b, err)))
            goto out;
        for (size_t i = 0; i < rows; i++) {
            labels[start + i] = a.h_label[i];
            if (dist)
                dist[start + i] = a.h_dist[i];
        }
    }
    report_plan(rep, &plan, &c);
    if (rep) {
        rep->batches = r.nbatches;
        rep->seconds = (double)(qr_now_ns() - t0) / 1e9;
    }
out:
    rowsrc_close(&r);
    ctx_close(&c);
    free(half);
    return st;
}

/* ---- exact top-k ----------------------------------------------------------------------------- */

/* Candidates kept per query: the smallest list size with room for k and the margin. */
static int knn_list_size(size_t k)
{
    static const int sizes[] = {32, 64, 128};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        if (k + GPU_KNN_MARGIN <= (size_t)sizes[i])
            return sizes[i];
    return 0;
}

static void launch_select(int kp, unsigned blocks, cudaStream_t s, const float *S, int queries, int cols,
                          const float *half, long long base0, float *rv, long long *ri)
{
    unsigned threads = WARPS_PER_BLOCK * 32;
    if (kp == 32)
        select_topk<32><<<blocks, threads, 0, s>>>(S, queries, cols, half, base0, rv, ri);
    else if (kp == 64)
        select_topk<64><<<blocks, threads, 0, s>>>(S, queries, cols, half, base0, rv, ri);
    else
        select_topk<128><<<blocks, threads, 0, s>>>(S, queries, cols, half, base0, rv, ri);
}

extern "C" qr_status gpu_knn(const float *base, size_t nb, const float *queries, size_t nq, int dim, size_t k,
                             gpu_metric metric, size_t budget, int64_t *ids, float *scores, gpu_report *rep,
                             char *err)
{
    uint64_t t0 = qr_now_ns();
    ctx c;
    memset(&c, 0, sizeof(c));
    rowsrc r;
    memset(&r, 0, sizeof(r));
    gpu_plan plan;
    memset(&plan, 0, sizeof(plan));
    size_t d = (size_t)dim, qmax = 0, batches = 0, fixed = 0, per_row = 0, max_batch = 0;
    int kp = knn_list_size(k);
    bool l2 = metric == GPU_METRIC_L2;
    float *dq = NULL, *drv = NULL, *dscores = NULL, *dhalf = NULL;
    long long *dri = NULL;
    int64_t *cand = NULL;
    qr_status st = QR_OK;
    cudaError_t e;

    if (rep)
        memset(rep, 0, sizeof(*rep));
    if (!base || !queries || !ids || !scores || dim < 1 || nq == 0)
        return qr_fail(err, QR_EINVAL, "top-k needs base rows, queries, outputs and a dimension >= 1");
    if (metric != GPU_METRIC_IP && metric != GPU_METRIC_L2)
        return qr_fail(err, QR_EINVAL, "unknown top-k metric %d", (int)metric);
    if (k < 1 || k > nb || k > GPU_KNN_K_MAX || kp == 0)
        return qr_fail(err, QR_EINVAL, "top-k: k must be 1..%zu (got %zu for %zu base rows)",
                       nb < GPU_KNN_K_MAX ? nb : (size_t)GPU_KNN_K_MAX, k, nb);
    if ((st = ctx_open(&c, budget, rep, err)))
        goto out;
    /* the most queries per pass whose tiles still leave room for base batches */
    for (qmax = nq < QUERY_BATCH_MAX ? nq : QUERY_BATCH_MAX;; qmax = (qmax + 1) / 2) {
        fixed = BLAS_WORKSPACE + qmax * d * sizeof(float) +
                qmax * (size_t)kp * (sizeof(float) + sizeof(long long));
        per_row = qmax * sizeof(float) + sizeof(float);
        max_batch = TILE_MAX_FLOATS / qmax < BATCH_MAX_ROWS ? TILE_MAX_FLOATS / qmax : BATCH_MAX_ROWS;
        st = gpu_plan_pass(nb, d * sizeof(float), fixed, per_row, c.budget, max_batch, &plan, err);
        if (st == QR_OK || qmax == 1)
            break;
    }
    if (st)
        goto out;
    if ((st = dev_alloc(&c, (void **)&dq, qmax * d * sizeof(float), "the queries", err)) ||
        (st = dev_alloc(&c, (void **)&drv, qmax * (size_t)kp * sizeof(float), "the candidate scores", err)) ||
        (st =
             dev_alloc(&c, (void **)&dri, qmax * (size_t)kp * sizeof(long long), "the candidate ids", err)) ||
        (st = dev_alloc(&c, (void **)&dscores, qmax * plan.batch_rows * sizeof(float), "the score tile",
                        err)) ||
        (st = dev_alloc(&c, (void **)&dhalf, plan.batch_rows * sizeof(float), "the base norms", err)) ||
        (st = rowsrc_open(&c, &r, base, nb, dim, &plan, err)))
        goto out;
    if (!(cand = (int64_t *)malloc(nq * (size_t)kp * sizeof(int64_t)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for top-k candidates of %zu queries", nq);
        goto out;
    }
    for (size_t q0 = 0; q0 < nq; q0 += qmax) {
        size_t qn = nq - q0 < qmax ? nq - q0 : qmax;
        e = cudaMemcpyAsync(dq, queries + q0 * d, qn * d * sizeof(float), cudaMemcpyHostToDevice, c.compute);
        if (e == cudaSuccess) /* id -1 everywhere: an empty running list */
            e = cudaMemsetAsync(dri, 0xff, qn * (size_t)kp * sizeof(long long), c.compute);
        if (e != cudaSuccess) {
            st = cuda_fail(err, e, "cannot upload the queries");
            goto out;
        }
        for (size_t b = 0; b < r.nbatches; b++, batches++) {
            size_t rows = rowsrc_rows(&r, b);
            const float *xb = NULL;
            if ((st = rowsrc_get(&c, &r, b, &xb, err)))
                goto out;
            if (l2) {
                half_norm_rows<<<warp_blocks(rows), WARPS_PER_BLOCK * 32, 0, c.compute>>>(xb, rows, dim,
                                                                                          dhalf);
                if ((st = launched(err, "the norm kernel failed")))
                    goto out;
            }
            if ((st = gemm_abt(&c, dq, qn, xb, rows, dim, dscores, err)))
                goto out;
            launch_select(kp, warp_blocks(qn), c.compute, dscores, (int)qn, (int)rows, l2 ? dhalf : NULL,
                          (long long)(b * plan.batch_rows), drv, dri);
            if ((st = launched(err, "the top-k kernel failed")) || (st = rowsrc_done(&c, &r, b, err)))
                goto out;
        }
        e = cudaMemcpyAsync(cand + q0 * (size_t)kp, dri, qn * (size_t)kp * sizeof(long long),
                            cudaMemcpyDeviceToHost, c.compute);
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(c.compute);
        if (e != cudaSuccess) {
            st = cuda_fail(err, e, "cannot read back the top-k candidates");
            goto out;
        }
    }
    if ((st = gpu_knn_rescore(base, nb, queries, nq, dim, k, metric, cand, (size_t)kp, ids, scores, err)))
        goto out;
    report_plan(rep, &plan, &c);
    if (rep) {
        rep->batches = batches;
        rep->seconds = (double)(qr_now_ns() - t0) / 1e9;
    }
out:
    rowsrc_close(&r);
    ctx_close(&c);
    free(cand);
    return st;
}
