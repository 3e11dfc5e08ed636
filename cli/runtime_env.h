/*
 * The environment quarry runs with (cli/runtime_env.c): the settings OpenBLAS, libgomp and glibc's
 * malloc read only when a program starts, which quarry sets for itself unless the operator did.
 * Shared by the quarry launcher (cli/launch.c), which starts the program with them, and by the
 * program itself (cli/main.c), which starts again with them when it was started without them.
 * Nothing here uses more than libc: the launcher links nothing else.
 */
#ifndef QUARRY_CLI_RUNTIME_ENV_H
#define QUARRY_CLI_RUNTIME_ENV_H

/* The most settings cli_runtime_missing gives. */
#define CLI_RUNTIME_SETTINGS 4

/* The settings that envp lacks for the command in argv, as NAME=value strings (static), at most
 * CLI_RUNTIME_SETTINGS; returns how many. */
int cli_runtime_missing(int argc, char **argv, char **envp, const char *out[CLI_RUNTIME_SETTINGS]);

#endif
