/*
 * The quarry command as installed: a launcher that starts the program (quarry-core, beside it in
 * a build directory, QUARRY_CORE_FROM_BIN from it once installed) with the environment quarry runs
 * with (cli/runtime_env.h). The program would otherwise start a second time to set it, having
 * loaded its fifty-odd libraries once for nothing: this costs a start of a program that links libc
 * alone (about 1 ms), that costs 20-35 ms of every command on the 2-core VM quarry is measured on
 * (bench/README.md, "The full-text index as it is written"). Everything else, arguments and exit status
 * included, is quarry-core's: the launcher replaces itself with it.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/runtime_env.h"

#ifndef QUARRY_CORE_FROM_BIN
#define QUARRY_CORE_FROM_BIN "../libexec/quarry/quarry-core"
#endif

extern char **environ;

/* <directory of this executable>/<rel> into out; false when it does not fit or /proc is missing. */
static bool beside_self(const char *rel, char *out, size_t cap)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return false;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return false;
    slash[1] = '\0';
    int len = snprintf(out, cap, "%s%s", self, rel);
    return len > 0 && (size_t)len < cap;
}

int main(int argc, char **argv)
{
    const char *add[CLI_RUNTIME_SETTINGS];
    int n = cli_runtime_missing(argc, argv, environ, add);
    size_t count = 0;
    while (environ && environ[count])
        count++;
    char **env = malloc((count + (size_t)n + 1) * sizeof(*env));
    if (!env) {
        fprintf(stderr, "quarry: out of memory\n");
        return 1;
    }
    memcpy(env, environ, count * sizeof(*env));
    for (int i = 0; i < n; i++)
        env[count + (size_t)i] = (char *)add[i];
    env[count + (size_t)n] = NULL;

    static const char *const places[] = {"quarry-core", QUARRY_CORE_FROM_BIN};
    char path[PATH_MAX];
    int first_err = 0;
    for (size_t i = 0; i < sizeof(places) / sizeof(places[0]); i++) {
        if (!beside_self(places[i], path, sizeof(path)))
            continue;
        execve(path, argv, env);
        if (!first_err || errno != ENOENT)
            first_err = errno;
    }
    free(env);
    char bin[PATH_MAX] = "";
    beside_self("", bin, sizeof(bin));
    fprintf(stderr, "quarry: cannot start the program: %s (looked for %squarry-core and %s%s)\n",
            strerror(first_err ? first_err : ENOENT), bin, bin, QUARRY_CORE_FROM_BIN);
    return 127;
}
