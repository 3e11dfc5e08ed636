/*
 * The quarry command: one binary for the server, ingestion, search and maintenance. This file
 * parses the global options (--data, --config, --set, --log-level), loads the configuration in
 * its order of precedence and dispatches to a subcommand. A subcommand whose module is not built
 * yet says so and exits with CLI_EXIT_NOT_BUILT; nothing pretends to succeed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "auth/auth.h"
#include "cli/cli.h"
#include "cli/runtime_env.h"
#include "core/core.h"
#include "index/index.h"
#include "inference/inference.h"
#include "ingest/ingest.h"
#include "retrieval/retrieval.h"

typedef struct {
    const char *name;
    const char *usage;
    const char *summary;
    const char *issue; /* the issue that builds it, NULL when built */
    int (*run)(cli_ctx *ctx);
} cli_command;

static const cli_command commands[] = {
    {"serve", "quarry serve", "Run the HTTP API server (chat, search, ingestion, metrics).", NULL,
     cli_cmd_serve},
    {"ingest", "quarry ingest [--acl PRINCIPAL]... [--jsonl FILE] PATH...",
     "Ingest files, folders or a JSON-lines collection into the store.", NULL, cli_cmd_ingest},
    {"delete", "quarry delete DOC_ID...", "Delete documents by id.", NULL, cli_cmd_delete},
    {"search", "quarry search [--as UID] [--mode hybrid|bm25|vector] [-k N] [--json] QUERY",
     "Search with a user's permissions; the mode defaults to retrieval.mode (auto: bm25 with the local "
     "embedder, hybrid with a real one; see quarry stats) (also: --cursor C, --doc ID, --source PREFIX, "
     "--type TYPE, --after DATE, --max-per-doc N, --plain, --explain).",
     NULL, cli_cmd_search},
    {"ask", "quarry ask [--as UID] QUESTION",
     "Answer a question with citations from permitted passages (--json).", NULL, cli_cmd_ask},
    {"index", "quarry index build [--gpu auto|on|off]",
     "Build the vector index and publish a new generation.", NULL, cli_cmd_index},
    {"eval",
     "quarry eval --queries FILE --qrels FILE [--mode M | --compare] [--json] [--k N] [--repeat R] [--run "
     "FILE]",
     "Measure retrieval quality (nDCG@10, recall@100, MAP@100, MRR@10, latency); --compare: every mode "
     "and fusion in one table.",
     NULL, cli_cmd_eval},
    {"stats", "quarry stats [--json]",
     "Show document, chunk and index counts, and the search default and why.", NULL, cli_cmd_stats},
    {"backup", "quarry backup DEST",
     "Copy the data directory (store, published indexes, auth state) into DEST with a checksummed "
     "MANIFEST; safe while serving.",
     NULL, cli_cmd_backup},
    {"restore", "quarry restore SRC [--force]",
     "Check a backup, restore it into the data directory (--force moves a non-empty one aside) and verify "
     "it. Exit 3: backup damaged, 4: target not empty, 5: restored copy failed its checks.",
     NULL, cli_cmd_restore},
    {"models", "quarry models", "List the models the inference backend serves (inference.base_url).", NULL,
     cli_cmd_models},
    {"keys", "quarry keys create --name NAME --scopes LIST | list [--json] | revoke ID",
     "Create, list or revoke service API keys (scopes: search, chat, admin, on_behalf_of).", NULL,
     cli_cmd_keys},
    {"auth",
     "quarry auth login UID [--token] [--json] | whoami (--as UID | --token JWT|-) [--json] | flush | "
     "audit-hash QUERY",
     "Check a password (read from stdin), show a user's principal, flush the principal cache, or print the "
     "audit log's keyed hash of a query.",
     NULL, cli_cmd_auth},
    {"config", "quarry config [--json] [--keys]",
     "Print the effective configuration (secrets masked), or the table of keys.", NULL, cli_cmd_config},
    {"selfcheck", "quarry selfcheck", "Check that SQLite has FTS5, FAISS searches and report the GPU path.",
     NULL, cli_cmd_selfcheck},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const cli_command *find_command(const char *name);

static const char global_usage[] =
    "Global options (before or after the subcommand):\n"
    "  --data DIR          data directory (data.dir, default ./data)\n"
    "  --config FILE       JSON configuration file (default: $QUARRY_CONFIG if set)\n"
    "  --set KEY=VALUE     set a configuration key; repeatable; overrides file and environment\n"
    "  --log-level LEVEL   trace, debug, info, warn, error or off (log.level)\n"
    "  -h, --help          this help, or a subcommand's usage\n"
    "  --version           quarry's version and the versions of its libraries\n";

static void print_help(FILE *out)
{
    fprintf(out,
            "quarry %s - retrieval-augmented answers over your documents, trimmed to each user's "
            "permissions\n\nUsage: quarry [OPTIONS] COMMAND [ARGS]\n\nCommands:\n",
            QUARRY_VERSION);
    for (size_t i = 0; i < NCOMMANDS; i++) {
        fprintf(out, "  %-10s %s", commands[i].name, commands[i].summary);
        if (commands[i].issue)
            fprintf(out, " (not built yet: %s)", commands[i].issue);
        fputc('\n', out);
    }
    fprintf(out, "\n%s\nRun 'quarry COMMAND --help' for a command's usage.\n", global_usage);
}

static void print_version(void)
{
    printf("quarry %s\n", QUARRY_VERSION);
    printf("  FAISS          %s, C API\n", index_faiss_version());
    printf("  SQLite         %s\n", index_sqlite_version());
    printf("  libcurl        %s\n", infer_curl_version());
    printf("  OpenLDAP       %s\n", auth_ldap_version());
    printf("  OpenSSL        %s\n", auth_crypto_version());
    printf("  jansson        %s\n", qr_jansson_version());
    printf("  libmicrohttpd  %s\n", api_mhd_version());
    if (index_gpu_compiled())
        printf("  CUDA           %s (GPU build path compiled)\n", index_gpu_cuda_version());
    else
        printf("  CUDA           not compiled (QUARRY_CUDA=OFF or no nvcc/cuBLAS)\n");
}

int cli_usage_error(const cli_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "quarry %s: ", ctx->argv[0]);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nusage: %s\n", ctx->usage);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

static const cli_command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* Takes the value of an option given as "--opt VALUE" or "--opt=VALUE"; advances *i. */
static const char *option_value(int argc, char **argv, int *i, const char *opt)
{
    size_t len = strlen(opt);
    if (strncmp(argv[*i], opt, len) == 0 && argv[*i][len] == '=')
        return argv[*i] + len + 1;
    if (strcmp(argv[*i], opt) == 0 && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

/* "key=value" in a new string (free() it), or NULL when out of memory. */
static char *make_assignment(const char *key, const char *value)
{
    size_t len = strlen(key) + strlen(value) + 2;
    char *s = malloc(len);
    if (s)
        snprintf(s, len, "%s=%s", key, value);
    return s;
}

static bool is_option(const char *arg, const char *opt)
{
    size_t len = strlen(opt);
    return strncmp(arg, opt, len) == 0 && (arg[len] == '\0' || arg[len] == '=');
}

/* The start again happens before any library's constructor runs: ELF's preinit functions are
 * called after the loader has mapped and relocated every library and before their
 * initialisers, so the first start costs the loading alone, not OpenBLAS starting its threads
 * nor the rest of main (from exec to exec again: 28-35 ms before, 21-26 ms so, 7 runs each of
 * `quarry ingest` under strace --seccomp-bpf). glibc's own environment (getenv, setenv) is not
 * set up yet there (setenv made a new one that glibc then replaced): the new environment is made
 * from envp in a static array. */
#define PREINIT_ENV_MAX 4096
static char *preinit_env[PREINIT_ENV_MAX + CLI_RUNTIME_SETTINGS + 1];

static void preinit_tune(int argc, char **argv, char **envp)
{
    const char *add[CLI_RUNTIME_SETTINGS];
    int n = cli_runtime_missing(argc, argv, envp, add);
    if (!n)
        return;
    size_t k = 0;
    for (char **e = envp; e && *e; e++) {
        if (k == PREINIT_ENV_MAX)
            return; /* main starts again with setenv instead */
        preinit_env[k++] = *e;
    }
    for (int i = 0; i < n; i++)
        preinit_env[k++] = (char *)add[i];
    preinit_env[k] = NULL;
    execve("/proc/self/exe", argv, preinit_env); /* on failure main tries once more */
}

__attribute__((section(".preinit_array"), used)) static void (*const preinit_tune_p)(int, char **,
                                                                                     char **) = preinit_tune;

/* What preinit_tune could not do (an environment too long for its array, or no start again):
 * the same with glibc's environment, before main reads any setting. */
static void tune_runtime_and_reexec(int argc, char **argv)
{
    extern char **environ;
    const char *add[CLI_RUNTIME_SETTINGS];
    int n = cli_runtime_missing(argc, argv, environ, add);
    for (int i = 0; i < n; i++) {
        char name[64];
        const char *eq = strchr(add[i], '=');
        snprintf(name, sizeof(name), "%.*s", (int)(eq - add[i]), add[i]);
        setenv(name, eq + 1, 1);
    }
    if (n)
        execv("/proc/self/exe", argv); /* on failure quarry simply runs untuned */
}

qr_status cli_load_config(const char *config_file, char *const *sets, int nsets, qr_config **out, char *err)
{
    *out = NULL;
    qr_config *cfg = qr_config_new();
    if (!cfg)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    qr_status st = QR_OK;
    if (config_file && *config_file)
        st = qr_config_load_file(cfg, config_file, err);
    if (!st)
        st = qr_config_load_env(cfg, NULL, err);
    for (int i = 0; i < nsets && !st; i++)
        st = qr_config_set_arg(cfg, sets[i], err);
    if (st) {
        qr_config_free(cfg);
        return st;
    }
    *out = cfg;
    return QR_OK;
}

int main(int argc, char **argv)
{
    tune_runtime_and_reexec(argc, argv);
    char err[QR_ERR_LEN];
    int rc = CLI_EXIT_USAGE;
    qr_config *cfg = NULL;
    const char *config_file = getenv("QUARRY_CONFIG");
    char **rest = calloc((size_t)argc + 1, sizeof(char *));
    char **sets = calloc((size_t)argc + 1, sizeof(char *));
    int nrest = 0, nsets = 0;
    bool help = false;
    if (!rest || !sets) {
        fprintf(stderr, "quarry: out of memory\n");
        rc = CLI_EXIT_FAILURE;
        goto out;
    }

    /* Global options may appear anywhere; everything else belongs to the subcommand. */
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (strcmp(argv[i], "--version") == 0 && nrest == 0) {
            print_version();
            rc = CLI_EXIT_OK;
            goto out;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            help = true;
        } else if (is_option(argv[i], "--config")) {
            if (!(config_file = option_value(argc, argv, &i, "--config")))
                goto missing;
        } else if (is_option(argv[i], "--data")) {
            if (!(v = option_value(argc, argv, &i, "--data")))
                goto missing;
            if (!(sets[nsets++] = make_assignment("data.dir", v)))
                goto nomem;
        } else if (is_option(argv[i], "--log-level")) {
            if (!(v = option_value(argc, argv, &i, "--log-level")))
                goto missing;
            if (!(sets[nsets++] = make_assignment("log.level", v)))
                goto nomem;
        } else if (is_option(argv[i], "--set")) {
            if (!(v = option_value(argc, argv, &i, "--set")))
                goto missing;
            if (!(sets[nsets++] = strdup(v)))
                goto nomem;
        } else {
            rest[nrest++] = argv[i];
        }
        continue;
    missing:
        fprintf(stderr, "quarry: option '%s' needs a value\n", argv[i]);
        goto out;
    nomem:
        fprintf(stderr, "quarry: out of memory\n");
        rc = CLI_EXIT_FAILURE;
        goto out;
    }

    const cli_command *cmd = nrest ? find_command(rest[0]) : NULL;
    if (nrest == 0) {
        print_help(help ? stdout : stderr);
        rc = help ? CLI_EXIT_OK : CLI_EXIT_USAGE;
        goto out;
    }
    if (!cmd) {
        fprintf(stderr, "quarry: unknown command '%s'; run 'quarry --help' for the list\n", rest[0]);
        goto out;
    }
    if (help) {
        printf("usage: %s\n\n%s\n", cmd->usage, cmd->summary);
        if (cmd->issue)
            printf("Not built yet: it lands with the %s issue.\n", cmd->issue);
        printf("\n%s", global_usage);
        rc = CLI_EXIT_OK;
        goto out;
    }

    qr_status lst = cli_load_config(config_file, sets, nsets, &cfg, err);
    if (lst) {
        fprintf(stderr, "quarry: %s\n", err);
        if (lst == QR_ENOMEM)
            rc = CLI_EXIT_FAILURE;
        goto out;
    }
    if (qr_config_apply_logging(cfg, err)) {
        fprintf(stderr, "quarry: %s\n", err);
        goto out;
    }
    /* store.backend = postgres: every store handle this process opens writes to PostgreSQL and
     * follows its feed (index/store.h, store_set_primary) */
    const qr_settings *qs = qr_config_settings(cfg);
    if (strcmp(qs->store_backend, "postgres") == 0 &&
        (store_set_primary(qs->store_postgres, qs->store_postgres_read, qs->store_fence_ms, err) ||
         store_set_members(qs->store_postgres_members, err))) {
        fprintf(stderr, "quarry: %s\n", err);
        goto out;
    }
    if (!cmd->run) {
        fprintf(stderr, "quarry %s: not built yet; it lands with the %s issue\n", cmd->name, cmd->issue);
        rc = CLI_EXIT_NOT_BUILT;
        goto out;
    }
    cli_ctx ctx = {cfg, nrest, rest, cmd->usage, config_file, sets, nsets};
    rc = cmd->run(&ctx);
out:
    if (sets)
        for (int i = 0; i < nsets; i++)
            free(sets[i]);
    free(sets);
    free(rest);
    qr_config_free(cfg);
    return rc;
}
