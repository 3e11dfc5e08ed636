/*
 * The settings quarry runs with: see runtime_env.h.
 */
#include <stdbool.h>
#include <string.h>

#include "cli/runtime_env.h"

/* The subcommand's name in argv: the first argument that is neither a global option nor the
 * value of one (as main reads them); NULL when there is none. */
static const char *command_name(int argc, char **argv)
{
    static const char *const takes_value[] = {"--config", "--data", "--log-level", "--set"};
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] != '-')
            return argv[i];
        for (size_t k = 0; k < sizeof(takes_value) / sizeof(takes_value[0]); k++)
            if (strcmp(argv[i], takes_value[k]) == 0)
                i++; /* "--data DIR": DIR is no command */
    }
    return NULL;
}

/* OpenBLAS picks its kernels and starts its threads, and libgomp reads its idle policy, when they
 * are loaded, before main: Debian's OpenBLAS falls back to its slowest (Prescott) kernels on some
 * virtual CPUs, and libgomp's idle threads spin, which on a busy server takes the cores that
 * requests need. So quarry sets both for itself, unless the operator did, and starts again once
 * with them (the launcher, cli/launch.c, starts it with them from the first). `quarry ingest` calls neither
 * BLAS nor OpenMP, but OpenBLAS starts its threads at load anyway (one per core beside the caller's), each
 * spinning on sched_yield for about 0.1 s of CPU before it sleeps (4% of a 23 MB ingest's samples, more than
 * starting twice costs: 35-40 ms); so ingest starts again with OPENBLAS_NUM_THREADS=1, which starts none
 * (bench/README.md, "Preparing threads and start-up"). The same start gives ingest glibc's malloc tunables,
 * which glibc reads only when a program starts: transparent huge pages for the heap (the kernel's default,
 * "madvise", gives them only to memory that asks), which it grows 16 MB at a time and keeps what is freed up
 * to 256 MB, blocks up to 32 MB included. A load touches hundreds of megabytes (SQLite's page caches, FTS5's
 * term lists, each batch's text and vectors): with 4 KiB pages it took 15,000-18,000 page
 * faults, much of them memory that malloc had given back and touched again at the next batch;
 * with these settings 4,000-5,000, and the wall about 10% less on 23 MB (bench/README.md, "Huge
 * pages for ingest"). */
#define INGEST_MALLOC_TUNABLES                                                                    \
    "glibc.malloc.hugetlb=1:glibc.malloc.top_pad=16777216:glibc.malloc.trim_threshold=268435456:" \
    "glibc.malloc.mmap_threshold=33554432"
/* Whether envp holds a variable named name. */
static bool env_has(char **envp, const char *name)
{
    size_t n = strlen(name);
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return true;
    return false;
}

int cli_runtime_missing(int argc, char **argv, char **envp, const char *out[CLI_RUNTIME_SETTINGS])
{
    int n = 0;
    if (!env_has(envp, "OMP_WAIT_POLICY"))
        out[n++] = "OMP_WAIT_POLICY=passive";
    if (!env_has(envp, "OPENBLAS_CORETYPE")) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f"))
            out[n++] = "OPENBLAS_CORETYPE=SkylakeX";
        else if (__builtin_cpu_supports("avx2"))
            out[n++] = "OPENBLAS_CORETYPE=Haswell";
    }
    const char *cmd = command_name(argc, argv);
    if (cmd && strcmp(cmd, "ingest") == 0) {
        if (!env_has(envp, "OPENBLAS_NUM_THREADS"))
            out[n++] = "OPENBLAS_NUM_THREADS=1";
        if (!env_has(envp, "GLIBC_TUNABLES"))
            out[n++] = "GLIBC_TUNABLES=" INGEST_MALLOC_TUNABLES;
    }
    return n;
}
