/*
 * Helpers shared by auth's tests: a configuration built from key/value pairs and a private data
 * directory removed afterwards.
 */
#ifndef QUARRY_AUTH_TEST_UTIL_H
#define QUARRY_AUTH_TEST_UTIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/core.h"

/* A configuration with data.dir set to dir and then each "key", "value" pair (NULL-ended).
 * Aborts on an invalid pair: that is a bug in the test. */
static inline qr_config *test_config(const char *dir, ...)
{
    char err[QR_ERR_LEN];
    qr_config *cfg = qr_config_new();
    if (!cfg || qr_config_set(cfg, "data.dir", dir, QR_CFG_SRC_CLI, err)) {
        fprintf(stderr, "test_config: cannot set data.dir\n");
        abort();
    }
    va_list ap;
    va_start(ap, dir);
    const char *key;
    while ((key = va_arg(ap, const char *))) {
        const char *value = va_arg(ap, const char *);
        if (qr_config_set(cfg, key, value, QR_CFG_SRC_CLI, err)) {
            fprintf(stderr, "test_config: %s\n", err);
            abort();
        }
    }
    va_end(ap);
    return cfg;
}

/* A fresh directory under $TMPDIR (or /tmp) in dir (at least 64 bytes). */
static inline void test_tmpdir(char *dir, size_t len)
{
    const char *base = getenv("TMPDIR");
    snprintf(dir, len, "%s/quarry-auth-test.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        abort();
    }
}

static inline void test_rmdir(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

#endif
