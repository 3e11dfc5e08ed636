/*
 * The test harness's runner: registration, the main function and failure reports.
 */
#include <stdarg.h>
#include <stdlib.h>

#include "tests/harness.h"

#define HARNESS_MAX 512

static struct {
    const char *name;
    harness_fn fn;
} cases[HARNESS_MAX];
static int ncases;
static bool current_failed;

void harness_register(const char *name, harness_fn fn)
{
    if (ncases == HARNESS_MAX) {
        fprintf(stderr, "harness: too many test cases\n");
        abort();
    }
    cases[ncases].name = name;
    cases[ncases].fn = fn;
    ncases++;
}

void harness_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s:%d: check failed: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    current_failed = true;
}

bool harness_failed(void)
{
    return current_failed;
}

int main(int argc, char **argv)
{
    int failed = 0, ran = 0;
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (int i = 0; i < ncases; i++)
            printf("%s\n", cases[i].name);
        return 0;
    }
    for (int i = 0; i < ncases; i++) {
        bool wanted = argc < 2;
        for (int a = 1; a < argc; a++)
            if (strcmp(argv[a], cases[i].name) == 0)
                wanted = true;
        if (!wanted)
            continue;
        current_failed = false;
        cases[i].fn();
        ran++;
        printf("%s - %s\n", current_failed ? "not ok" : "ok", cases[i].name);
        fflush(stdout);
        if (current_failed)
            failed++;
    }
    if (ran == 0) {
        fprintf(stderr, "harness: no test case matched\n");
        return 2;
    }
    return failed ? 1 : 0;
}
