/*
 * `quarry serve`: runs the HTTP API until SIGTERM or SIGINT; SIGHUP reloads. The signals are
 * blocked in every thread (they are blocked here before the server starts its threads, which
 * inherit the mask) and taken synchronously with sigwait, so no handler runs in an arbitrary
 * thread. SIGHUP reopens the log files and reads the configuration again (file, environment and
 * the same --set arguments), which the server applies to the keys that may change while it runs;
 * a file that fails to load changes nothing. The first stop signal starts a graceful shutdown
 * (server.shutdown_grace_s for requests in flight); a second one during it exits at once.
 */
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "cli/cli.h"

static sigset_t stop_signals;

/* Waits for a second stop signal while the first one's graceful shutdown runs. */
static void *second_signal(void *arg)
{
    (void)arg;
    int sig = 0;
    if (sigwait(&stop_signals, &sig) == 0) {
        static const char msg[] = "quarry serve: second signal, exiting without waiting\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
        (void)w;
        _exit(1);
    }
    return NULL;
}

/*
 * glibc gives a thread that finds the heap busy an arena of its own, up to eight per core, and
 * memory freed into an arena stays there for the threads that use it; it also raises its mmap
 * threshold each time a large block is freed, so that later large blocks come from the arenas
 * too. With the server's many workers the process's resident memory climbed with the traffic
 * (bench/README.md, "Where the RSS growth went": in 15 minutes at 40 requests/s RSS grew 21%
 * after warm-up with glibc's defaults, 15% with two arenas and the threshold fixed). So: one
 * arena per core (at least two), and blocks of 128 KiB and more mapped on their own and returned
 * when freed. MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_ or a glibc.malloc tunable in the
 * environment wins.
 */
static void tune_malloc(void)
{
    const char *tunables = getenv("GLIBC_TUNABLES");
    if (getenv("MALLOC_ARENA_MAX") || getenv("MALLOC_MMAP_THRESHOLD_") ||
        (tunables && strstr(tunables, "glibc.malloc.")))
        return;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    mallopt(M_ARENA_MAX, cores > 2 ? (int)cores : 2);
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
}

int cli_cmd_serve(cli_ctx *ctx)
{
    if (ctx->argc > 1)
        return cli_usage_error(
            ctx, "unexpected argument '%s' (use --set server.listen=HOST:PORT and the like)", ctx->argv[1]);
    char err[QR_ERR_LEN];
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigset_t waited = stop_signals; /* during the shutdown a SIGHUP stays blocked and waits */
    sigaddset(&waited, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &waited, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client that hangs up must not kill the server */
    /* a file size limit (RLIMIT_FSIZE, systemd's LimitFSIZE=) refuses the write like a full disk:
     * the request gets 507, the server goes on */
    signal(SIGXFSZ, SIG_IGN);
    tune_malloc(); /* before the server starts its threads */

    api_server *srv = NULL;
    if (api_server_new(ctx->cfg, &srv, err) || api_server_start(srv, err)) {
        fprintf(stderr, "quarry serve: %s\n", err);
        api_server_free(srv);
        return CLI_EXIT_FAILURE;
    }
    printf("quarry serve: listening on %s (data %s); SIGTERM or Ctrl-C stops\n", api_server_url(srv),
           qr_config_settings(ctx->cfg)->data_dir);
    fflush(stdout);

    int sig = 0;
    while (sigwait(&waited, &sig) == 0 && sig == SIGHUP) {
        qr_config *loaded = NULL;
        char lerr[QR_ERR_LEN];
        if (cli_load_config(ctx->config_file, ctx->sets, ctx->nsets, &loaded, lerr))
            qr_log(QR_LOG_ERROR, "reload", "SIGHUP: the configuration was not reloaded, nothing changed: %s",
                   lerr);
        /* with loaded NULL only the log files are reopened */
        if (api_server_reload(srv, loaded, err) && loaded)
            qr_log(QR_LOG_ERROR, "reload", "SIGHUP: nothing changed: %s", err);
        qr_config_free(loaded);
    }
    fprintf(stderr, "quarry serve: %s received, finishing requests in flight (up to %lld s)\n",
            strsignal(sig), (long long)qr_config_settings(ctx->cfg)->server_shutdown_grace_s);
    pthread_t watcher;
    bool watching = pthread_create(&watcher, NULL, second_signal, NULL) == 0;
    int cancelled = api_server_stop(srv, -1);
    api_server_free(srv);
    if (watching) {
        pthread_cancel(watcher);
        pthread_join(watcher, NULL);
    }
    printf("quarry serve: stopped%s\n",
           cancelled ? " (requests still running at the deadline were cancelled)" : "");
    return CLI_EXIT_OK;
}
