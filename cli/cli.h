/*
 * The quarry command's shared pieces: the context each subcommand gets and the exit statuses.
 * Each module's subcommands live in their own file (cli/cmd_<module>.c) and are listed in the
 * command table in cli/main.c.
 */
#ifndef QUARRY_CLI_H
#define QUARRY_CLI_H

#include "core/core.h"

enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILURE = 1,
    CLI_EXIT_USAGE = 2,
    CLI_EXIT_NOT_BUILT = 69, /* EX_UNAVAILABLE: the module behind the command is not built yet */
};

typedef struct {
    const qr_config *cfg; /* the effective configuration */
    int argc;             /* the subcommand's own arguments; argv[0] is its name */
    char **argv;
    const char *usage; /* the subcommand's usage line, for error messages */
    /* where the configuration came from, so that `quarry serve` can read it again on SIGHUP */
    const char *config_file; /* NULL or "" for none */
    char **sets;             /* --set assignments, in order */
    int nsets;
} cli_ctx;

/* Reads the configuration as quarry starts: defaults, the file (when set), the environment, then
 * the --set assignments. On error *out is NULL and err names the key and where it came from. */
qr_status cli_load_config(const char *config_file, char *const *sets, int nsets, qr_config **out, char *err);

/* Prints "quarry NAME: message" and the usage line to stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const cli_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Subcommands (cli/cmd_*.c). Each returns a CLI_EXIT_* status. */
int cli_cmd_config(cli_ctx *ctx);
int cli_cmd_selfcheck(cli_ctx *ctx);
int cli_cmd_ingest(cli_ctx *ctx);
int cli_cmd_delete(cli_ctx *ctx);
int cli_cmd_stats(cli_ctx *ctx);
int cli_cmd_ask(cli_ctx *ctx);
int cli_cmd_keys(cli_ctx *ctx);
int cli_cmd_auth(cli_ctx *ctx);
int cli_cmd_models(cli_ctx *ctx);
int cli_cmd_serve(cli_ctx *ctx);
int cli_cmd_search(cli_ctx *ctx);
int cli_cmd_eval(cli_ctx *ctx);
int cli_cmd_index(cli_ctx *ctx);
int cli_cmd_backup(cli_ctx *ctx);
int cli_cmd_restore(cli_ctx *ctx);

#endif
