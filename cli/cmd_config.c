/*
 * `quarry config` and `quarry selfcheck`: what the configuration is and whether the libraries
 * under quarry work on this machine.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "index/index.h"

int cli_cmd_config(cli_ctx *ctx)
{
    bool json = false, keys = false;
    for (int i = 1; i < ctx->argc; i++) {
        if (strcmp(ctx->argv[i], "--json") == 0)
            json = true;
        else if (strcmp(ctx->argv[i], "--keys") == 0)
            keys = true;
        else
            return cli_usage_error(ctx, "unknown argument '%s'", ctx->argv[i]);
    }
    if (keys) {
        size_t n;
        const qr_cfg_key *table = qr_config_keys(&n);
        static const char *const type_names[] = {"string", "int", "number", "bool"};
        for (size_t i = 0; i < n; i++)
            printf("%-24s %-7s default %-12s %s%s%s\n", table[i].name, type_names[table[i].type],
                   *table[i].default_str ? table[i].default_str : "\"\"", table[i].help,
                   table[i].secret ? " (secret)" : "", table[i].reload ? " (reloads on SIGHUP)" : "");
        return CLI_EXIT_OK;
    }
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    qr_status st = qr_config_dump(ctx->cfg, json, &out);
    if (!st)
        fputs(qr_buf_str(&out), stdout);
    qr_buf_release(&out);
    return st ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
}

int cli_cmd_selfcheck(cli_ctx *ctx)
{
    if (ctx->argc > 1)
        return cli_usage_error(ctx, "unknown argument '%s'", ctx->argv[1]);
    char err[QR_ERR_LEN];
    if (index_selfcheck(err)) {
        fprintf(stderr, "quarry selfcheck: %s\n", err);
        return CLI_EXIT_FAILURE;
    }
    printf("SQLite %s: FTS5 with porter unicode61: ok\n", index_sqlite_version());
    printf("FAISS %s: inner-product search: ok\n", index_faiss_version());
    if (index_gpu_compiled())
        printf("CUDA %s: compiled, %d device(s) visible\n", index_gpu_cuda_version(),
               index_gpu_device_count());
    else
        printf("CUDA: not compiled\n");
    return CLI_EXIT_OK;
}
