/*
 * `quarry models`: asks the configured inference backend which models it serves, one id per
 * line, so that an operator can check inference.base_url, the key and the model name before
 * users ask anything.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "inference/inference.h"

int cli_cmd_models(cli_ctx *ctx)
{
    if (ctx->argc > 1)
        return cli_usage_error(ctx, "unknown argument '%s'", ctx->argv[1]);
    char err[QR_ERR_LEN];
    infer_client *client = NULL;
    infer_models models = {NULL, 0};
    int rc = CLI_EXIT_FAILURE;
    if (infer_client_new(ctx->cfg, &client, err)) {
        fprintf(stderr, "quarry models: %s\n", err);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    if (!infer_client_configured(client)) {
        fprintf(stderr, "quarry models: no inference backend is configured; set inference.base_url\n");
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    if (infer_list_models(client, &models, err)) {
        fprintf(stderr, "quarry models: %s\n", err);
        goto out;
    }
    for (size_t i = 0; i < models.count; i++)
        printf("%s\n", models.ids[i]);
    rc = CLI_EXIT_OK;
out:
    infer_models_release(&models);
    infer_client_free(client);
    return rc;
}
