/*
 * Helpers shared by tests that run programs (see test_util.h).
 */
#include <stdio.h>
#include <sys/wait.h>

#include "tests/test_util.h"

int test_capture(const char *cmd, qr_buf *out)
{
    if (out)
        qr_buf_reset(out);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0)
        if (out)
            qr_buf_append(out, chunk, n);
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
