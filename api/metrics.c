/*
 * Prometheus metrics: counters and histograms kept in process, rendered in the text exposition
 * format (version 0.0.4) at GET /metrics. Request series are labelled by route pattern (never the
 * raw path, so ids cannot blow up the label space), method and status; the store, LDAP and the
 * inference client are read at render time from their own counters. One mutex guards the
 * counters: an update is a few additions, far cheaper than the request it records. Also here:
 * quarry_build_info and the standard process_* series, read from /proc/self at render time. The
 * exposition passes `promtool check metrics` (a test scrapes a live server with it).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "api/api_int.h"

static const double buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
#define NBUCKETS     (sizeof(buckets) / sizeof(buckets[0]))
#define SERIES_MAX   512
#define CODES_MAX    64
#define INGEST_KINDS 6

typedef struct {
    uint64_t count;
    double sum;
    uint64_t bucket[NBUCKETS];
} histogram;

typedef struct {
    size_t route; /* SIZE_MAX: no route matched */
    int status;
    histogram h;
} req_series;

static const char *const ingest_kinds[INGEST_KINDS] = {"added",     "updated", "acl_updated",
                                                       "unchanged", "deleted", "failed"};

struct api_metrics {
    pthread_mutex_t lock;
    req_series series[SERIES_MAX];
    size_t nseries;
    uint64_t series_dropped;
    histogram answer[2]; /* generative, extractive */
    uint64_t answer_failed;
    uint64_t ingest[INGEST_KINDS];
    uint64_t ingest_chunks;
    uint64_t bm25[2];                     /* searches whose BM25 list FTS5 ranked, the pruned index ranked */
    uint64_t stage_ns[API_SEARCH_STAGES]; /* answered searches' time per stage */
    uint64_t staged;                      /* ... and how many searches */
    struct {
        char code[48];
        uint64_t count;
    } errors[CODES_MAX];
    size_t nerrors;
};

api_metrics *api_metrics_new(void)
{
    api_metrics *m = calloc(1, sizeof(*m));
    if (m)
        pthread_mutex_init(&m->lock, NULL);
    return m;
}

void api_metrics_free(api_metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static void observe(histogram *h, double v)
{
    h->count++;
    h->sum += v;
    for (size_t i = 0; i < NBUCKETS; i++)
        if (v <= buckets[i])
            h->bucket[i]++;
}

void api_metrics_request(api_metrics *m, size_t route_index, int status, double seconds)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    req_series *s = NULL;
    for (size_t i = 0; i < m->nseries; i++)
        if (m->series[i].route == route_index && m->series[i].status == status)
            s = &m->series[i];
    if (!s && m->nseries < SERIES_MAX) {
        s = &m->series[m->nseries++];
        s->route = route_index;
        s->status = status;
    }
    if (s)
        observe(&s->h, seconds);
    else
        m->series_dropped++;
    pthread_mutex_unlock(&m->lock);
}

void api_metrics_answer(api_metrics *m, double seconds, bool extractive, bool failed)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    if (failed)
        m->answer_failed++;
    else
        observe(&m->answer[extractive ? 1 : 0], seconds);
    pthread_mutex_unlock(&m->lock);
}

void api_metrics_ingest(api_metrics *m, const char *kind, size_t chunks)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < INGEST_KINDS; i++)
        if (strcmp(kind, ingest_kinds[i]) == 0)
            m->ingest[i]++;
    m->ingest_chunks += chunks;
    pthread_mutex_unlock(&m->lock);
}

void api_metrics_bm25(api_metrics *m, bool pruned)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->bm25[pruned]++;
    pthread_mutex_unlock(&m->lock);
}

const char *const api_metrics_stage_names[API_SEARCH_STAGES] = {
    "auth", "embed", "parse", "bm25", "vector", "fusion", "hydrate", "rerank", "snippets", "permit", "json"};

void api_metrics_search_stages(api_metrics *m, const uint64_t ns[API_SEARCH_STAGES])
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < API_SEARCH_STAGES; i++)
        m->stage_ns[i] += ns[i];
    m->staged++;
    pthread_mutex_unlock(&m->lock);
}

void api_metrics_error(api_metrics *m, const char *code)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    size_t i = 0;
    while (i < m->nerrors && strcmp(m->errors[i].code, code) != 0)
        i++;
    if (i == m->nerrors && m->nerrors < CODES_MAX)
        snprintf(m->errors[m->nerrors++].code, sizeof(m->errors[0].code), "%s", code);
    if (i < m->nerrors)
        m->errors[i].count++;
    pthread_mutex_unlock(&m->lock);
}

static void head(qr_buf *o, const char *name, const char *type, const char *help)
{
    qr_buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_histogram(qr_buf *o, const char *name, const char *labels, const histogram *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        cum = h->bucket[i];
        qr_buf_printf(o, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, *labels ? "," : "", buckets[i],
                      (unsigned long long)cum);
    }
    qr_buf_printf(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, *labels ? "," : "",
                  (unsigned long long)h->count);
    qr_buf_printf(o, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, labels, h->sum, name, labels,
                  (unsigned long long)h->count);
}

/* The backend client's counters, plus those of the clients reloads replaced (so that counters
 * never go down); the breaker and requests in flight are the current client's. */
static void infer_stats_all(api_server *srv, infer_stats *out)
{
    pthread_mutex_lock(&srv->reload_lock);
    infer_client_stats(api_infer(srv), out);
    for (size_t i = 0; i < srv->nretired; i++) {
        if (!srv->retired_infer[i])
            continue;
        infer_stats old;
        infer_client_stats(srv->retired_infer[i], &old);
        out->calls += old.calls;
        out->attempts += old.attempts;
        out->retries += old.retries;
        out->failures += old.failures;
        out->rejected += old.rejected;
        out->in_flight += old.in_flight;
    }
    pthread_mutex_unlock(&srv->reload_lock);
}

/* A label value as the exposition format wants it: backslash, quote and newline escaped. */
static void label_value(qr_buf *o, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            qr_buf_printf(o, "\\%c", *v);
        else if (*v == '\n')
            qr_buf_puts(o, "\\n");
        else
            qr_buf_putc(o, *v);
    }
}

static void build_info(qr_buf *o)
{
    head(o, "quarry_build_info", "gauge",
         "Always 1; the labels say which versions this binary was built with.");
    const char *names[] = {"version", "faiss", "sqlite", "curl", "ldap", "microhttpd", "cuda"};
    const char *values[] = {QUARRY_VERSION,
                            index_faiss_version(),
                            index_sqlite_version(),
                            infer_curl_version(),
                            auth_ldap_version(),
                            api_mhd_version(),
                            index_gpu_compiled() ? index_gpu_cuda_version() : "none"};
    qr_buf_puts(o, "quarry_build_info{");
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        qr_buf_printf(o, "%s%s=\"", i ? "," : "", names[i]);
        label_value(o, values[i] ? values[i] : "unknown");
        qr_buf_putc(o, '"');
    }
    qr_buf_puts(o, "} 1\n");
}

/* The process collector's series as Prometheus' client libraries name them, from /proc/self. A
 * value that cannot be read is left out (its HELP and TYPE stay). */
static void process_series(qr_buf *o)
{
    long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    unsigned long long utime = 0, stime = 0, starttime = 0, vsize = 0;
    long long rss = 0;
    bool have_stat = false;
    char buf[2048];
    FILE *f = fopen("/proc/self/stat", "re");
    if (f) {
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        /* the command name, in parentheses, may hold spaces: fields count from the last ')' */
        char *p = strrchr(buf, ')');
        have_stat =
            p && sscanf(p + 2,
                        "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d "
                        "%llu %llu %lld",
                        &utime, &stime, &starttime, &vsize, &rss) == 5;
    }
    double boot = -1;
    if ((f = fopen("/proc/stat", "re"))) {
        while (fgets(buf, sizeof(buf), f))
            if (sscanf(buf, "btime %lf", &boot) == 1)
                break;
        fclose(f);
    }
    head(o, "process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.");
    if (have_stat && ticks > 0)
        qr_buf_printf(o, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)ticks);
    head(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    if (have_stat && page > 0)
        qr_buf_printf(o, "process_resident_memory_bytes %lld\n", rss * page);
    head(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    if (have_stat)
        qr_buf_printf(o, "process_virtual_memory_bytes %llu\n", vsize);
    head(o, "process_start_time_seconds", "gauge",
         "Start time of the process since the Unix epoch, in seconds.");
    if (have_stat && boot >= 0 && ticks > 0)
        qr_buf_printf(o, "process_start_time_seconds %.2f\n", boot + (double)starttime / (double)ticks);
    long fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.')
                fds++;
        closedir(d);
        fds--; /* the directory stream's own descriptor */
    }
    head(o, "quarry_sqlite_memory_bytes", "gauge",
         "Heap memory SQLite holds, every store handle together (bounded near data.cache_mib).");
    qr_buf_printf(o, "quarry_sqlite_memory_bytes %lld\n", (long long)store_memory_used());
    head(o, "process_open_fds", "gauge", "Number of open file descriptors.");
    if (d)
        qr_buf_printf(o, "process_open_fds %ld\n", fds);
    struct rlimit rl;
    head(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        qr_buf_printf(o, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
}

qr_status api_metrics_render(api_server *srv, qr_buf *o, char *err)
{
    api_metrics *m = srv->metrics;
    /* Snapshot under the lock, format outside it. */
    api_metrics *snap = malloc(sizeof(*snap));
    if (!snap)
        return qr_fail(err, QR_ENOMEM, "out of memory rendering metrics");
    pthread_mutex_lock(&m->lock);
    memcpy(snap, m, sizeof(*snap));
    pthread_mutex_unlock(&m->lock);

    head(o, "quarry_http_requests_total", "counter", "HTTP requests answered, by route, method and status.");
    for (size_t i = 0; i < snap->nseries; i++) {
        const req_series *s = &snap->series[i];
        const char *route = s->route < api_route_count ? api_route_table[s->route].pattern : "unmatched";
        const char *method = s->route < api_route_count ? api_route_table[s->route].method : "-";
        qr_buf_printf(o, "quarry_http_requests_total{route=\"%s\",method=\"%s\",status=\"%d\"} %llu\n", route,
                      method, s->status, (unsigned long long)s->h.count);
    }
    head(o, "quarry_http_request_duration_seconds", "histogram",
         "Time from the first header to the end of the answer, by route, method and status.");
    for (size_t i = 0; i < snap->nseries; i++) {
        const req_series *s = &snap->series[i];
        char labels[256];
        snprintf(labels, sizeof(labels), "route=\"%s\",method=\"%s\",status=\"%d\"",
                 s->route < api_route_count ? api_route_table[s->route].pattern : "unmatched",
                 s->route < api_route_count ? api_route_table[s->route].method : "-", s->status);
        render_histogram(o, "quarry_http_request_duration_seconds", labels, &s->h);
    }
    pthread_mutex_lock(&srv->lock);
    int in_flight = srv->in_flight;
    pthread_mutex_unlock(&srv->lock);
    head(o, "quarry_http_requests_in_flight", "gauge", "Requests being read, worked on or written.");
    qr_buf_printf(o, "quarry_http_requests_in_flight %d\n", in_flight);
    head(o, "quarry_errors_total", "counter", "Error answers, by error code.");
    for (size_t i = 0; i < snap->nerrors; i++)
        qr_buf_printf(o, "quarry_errors_total{code=\"%s\"} %llu\n", snap->errors[i].code,
                      (unsigned long long)snap->errors[i].count);

    head(o, "quarry_ingest_documents_total", "counter", "Documents written through the API, by outcome.");
    for (size_t i = 0; i < INGEST_KINDS; i++)
        qr_buf_printf(o, "quarry_ingest_documents_total{outcome=\"%s\"} %llu\n", ingest_kinds[i],
                      (unsigned long long)snap->ingest[i]);
    head(o, "quarry_ingest_chunks_total", "counter", "Chunks written through the API.");
    qr_buf_printf(o, "quarry_ingest_chunks_total %llu\n", (unsigned long long)snap->ingest_chunks);

    store_stats st;
    store *s = api_store_acquire(srv);
    qr_status rc = store_get_stats(s, &st, err);
    api_store_release(srv, s);
    if (!rc) {
        head(o, "quarry_index_documents", "gauge", "Documents in the store.");
        qr_buf_printf(o, "quarry_index_documents %lld\n", (long long)st.documents);
        head(o, "quarry_index_chunks", "gauge", "Chunks in the store (and the vector index once built).");
        qr_buf_printf(o, "quarry_index_chunks %lld\n", (long long)st.chunks);
        head(o, "quarry_index_text_bytes", "gauge", "Bytes of normalised text in the store.");
        qr_buf_printf(o, "quarry_index_text_bytes %lld\n", (long long)st.text_bytes);
        head(o, "quarry_index_generation", "gauge", "Generation of the vector index last published.");
        qr_buf_printf(o, "quarry_index_generation %lld\n", (long long)st.index_generation);
        head(o, "quarry_store_changes", "gauge", "The store's change counter (grows with every write).");
        qr_buf_printf(o, "quarry_store_changes %lld\n", (long long)st.change_counter);
        head(o, "quarry_fulltext_applied_change", "gauge",
             "The change the full-text index (quarry.fts) reflects: quarry_store_changes minus it is the "
             "index's lag, 0 once each write's call returned.");
        qr_buf_printf(o, "quarry_fulltext_applied_change %lld\n", (long long)st.fts_applied);
    }

    head(o, "quarry_search_bm25_total", "counter",
         "Searches with a BM25 list, by what ranked it: the pruned index or FTS5 (phrases, exclusions, "
         "filters, retrieval.bm25_path=fts5, or the index waiting for a rebuild).");
    qr_buf_printf(o, "quarry_search_bm25_total{path=\"pruned\"} %llu\n", (unsigned long long)snap->bm25[1]);
    qr_buf_printf(o, "quarry_search_bm25_total{path=\"fts5\"} %llu\n", (unsigned long long)snap->bm25[0]);
    head(o, "quarry_search_stage_seconds_total", "counter",
         "Time answered POST /v1/search requests spent in each stage: authentication, the query's "
         "embedding, parsing, the BM25 list, the vector list, fusion, reading the page, reranking, "
         "snippets, the second permission check and the JSON answer.");
    for (size_t i = 0; i < API_SEARCH_STAGES; i++)
        qr_buf_printf(o, "quarry_search_stage_seconds_total{stage=\"%s\"} %.9f\n", api_metrics_stage_names[i],
                      (double)snap->stage_ns[i] / 1e9);
    head(o, "quarry_search_staged_total", "counter",
         "Answered POST /v1/search requests counted in quarry_search_stage_seconds_total.");
    qr_buf_printf(o, "quarry_search_staged_total %llu\n", (unsigned long long)snap->staged);
    head(o, "quarry_bm25_index_open", "gauge", "1 when the pruned BM25 index is open.");
    bm25_index *bm25 = index_maintainer_bm25(api_service_maintainer(srv->svc));
    qr_buf_printf(o, "quarry_bm25_index_open %d\n", bm25 != NULL);
    if (bm25) {
        bm25_info bi;
        bm25_get_info(bm25, &bi);
        head(o, "quarry_bm25_index_chunks", "gauge", "Live chunks in the pruned BM25 index.");
        qr_buf_printf(o, "quarry_bm25_index_chunks %zu\n", bi.rows);
        head(o, "quarry_bm25_index_delta_chunks", "gauge",
             "Chunks added since the BM25 index's generation was built (held in memory).");
        qr_buf_printf(o, "quarry_bm25_index_delta_chunks %zu\n", bi.delta_rows);
        head(o, "quarry_bm25_index_tombstones", "gauge",
             "Chunks deleted since the BM25 generation was built.");
        qr_buf_printf(o, "quarry_bm25_index_tombstones %zu\n", bi.tombstones);
        head(o, "quarry_bm25_index_file_bytes", "gauge", "Size of the BM25 generation file (mapped).");
        qr_buf_printf(o, "quarry_bm25_index_file_bytes %llu\n", (unsigned long long)bi.file_bytes);
        head(o, "quarry_bm25_index_memory_bytes", "gauge",
             "Heap the BM25 index holds besides its file (delta, permission sets, caches).");
        qr_buf_printf(o, "quarry_bm25_index_memory_bytes %llu\n", (unsigned long long)bi.memory_bytes);
        head(o, "quarry_bm25_index_changes_applied", "gauge",
             "The store change counter the BM25 index reflects.");
        qr_buf_printf(o, "quarry_bm25_index_changes_applied %lld\n", (long long)bi.counter);
    }

    index_maintainer_status ms;
    index_maintainer_get_status(api_service_maintainer(srv->svc), &ms);
    head(o, "quarry_index_maintainer_passes_total", "counter", "Catch-up passes the index maintainer ran.");
    qr_buf_printf(o, "quarry_index_maintainer_passes_total %llu\n", (unsigned long long)ms.passes);
    head(o, "quarry_index_maintainer_builds_total", "counter",
         "Maintainer passes that built a new generation of an index.");
    qr_buf_printf(o, "quarry_index_maintainer_builds_total %llu\n", (unsigned long long)ms.builds);
    head(o, "quarry_index_maintainer_busy", "gauge", "1 while the maintainer runs a pass.");
    qr_buf_printf(o, "quarry_index_maintainer_busy %d\n", ms.busy);
    head(o, "quarry_index_visible_change", "gauge",
         "The store change both indexes reflect (-1 before the first pass).");
    qr_buf_printf(o, "quarry_index_visible_change %lld\n", (long long)ms.visible);
    head(o, "quarry_index_last_pass_seconds", "gauge", "Duration of the maintainer's last pass.");
    qr_buf_printf(o, "quarry_index_last_pass_seconds %.6f\n", ms.last_pass_s);
    head(o, "quarry_index_failed_passes", "gauge",
         "Consecutive maintainer passes that could not bring the index up to date (0: the last one did).");
    qr_buf_printf(o, "quarry_index_failed_passes{index=\"vector\"} %llu\n",
                  (unsigned long long)ms.vector_failures);
    qr_buf_printf(o, "quarry_index_failed_passes{index=\"bm25\"} %llu\n",
                  (unsigned long long)ms.bm25_failures);
    vindex *v = index_maintainer_vindex(api_service_maintainer(srv->svc));
    vindex_info vi;
    memset(&vi, 0, sizeof(vi));
    if (v)
        vindex_get_info(v, &vi);
    head(o, "quarry_index_vectors_skipped", "gauge",
         "Chunks left out of vector search: their vector is zero, not finite or of another dimension.");
    qr_buf_printf(o, "quarry_index_vectors_skipped %zu\n", vi.skipped);

    auth_stats as;
    auth_get_stats(srv->auth, &as);
    head(o, "quarry_ldap_cache_hits_total", "counter", "Principals served fresh from the LDAP cache.");
    qr_buf_printf(o, "quarry_ldap_cache_hits_total %llu\n", (unsigned long long)as.cache_hits);
    head(o, "quarry_ldap_cache_misses_total", "counter", "Principal resolutions that went to LDAP.");
    qr_buf_printf(o, "quarry_ldap_cache_misses_total %llu\n", (unsigned long long)as.cache_misses);
    head(o, "quarry_ldap_stale_served_total", "counter", "Expired principals served because LDAP was down.");
    qr_buf_printf(o, "quarry_ldap_stale_served_total %llu\n", (unsigned long long)as.stale_served);
    head(o, "quarry_ldap_connects_total", "counter", "LDAP connections opened.");
    qr_buf_printf(o, "quarry_ldap_connects_total %llu\n", (unsigned long long)as.connects);
    head(o, "quarry_ldap_binds_total", "counter", "LDAP simple binds sent.");
    qr_buf_printf(o, "quarry_ldap_binds_total %llu\n", (unsigned long long)as.binds);
    head(o, "quarry_ldap_searches_total", "counter", "LDAP searches sent.");
    qr_buf_printf(o, "quarry_ldap_searches_total %llu\n", (unsigned long long)as.searches);
    head(o, "quarry_auth_login_failures_total", "counter", "Rejected credentials.");
    qr_buf_printf(o, "quarry_auth_login_failures_total %llu\n", (unsigned long long)as.login_failures);
    head(o, "quarry_auth_rate_limited_total", "counter", "Logins refused by the failed-login limits.");
    qr_buf_printf(o, "quarry_auth_rate_limited_total %llu\n", (unsigned long long)as.rate_limited);

    head(o, "quarry_answer_duration_seconds", "histogram", "Time to draft one answer, by mode.");
    render_histogram(o, "quarry_answer_duration_seconds", "mode=\"generative\"", &snap->answer[0]);
    render_histogram(o, "quarry_answer_duration_seconds", "mode=\"extractive\"", &snap->answer[1]);
    head(o, "quarry_answer_failures_total", "counter", "Answers that failed (after streaming had begun).");
    qr_buf_printf(o, "quarry_answer_failures_total %llu\n", (unsigned long long)snap->answer_failed);

    infer_stats is;
    infer_stats_all(srv, &is);
    head(o, "quarry_inference_calls_total", "counter", "Calls made to the inference backend.");
    qr_buf_printf(o, "quarry_inference_calls_total %llu\n", (unsigned long long)is.calls);
    head(o, "quarry_inference_attempts_total", "counter",
         "HTTP requests sent to the backend (retries included).");
    qr_buf_printf(o, "quarry_inference_attempts_total %llu\n", (unsigned long long)is.attempts);
    head(o, "quarry_inference_retries_total", "counter", "Backend requests that were retries.");
    qr_buf_printf(o, "quarry_inference_retries_total %llu\n", (unsigned long long)is.retries);
    head(o, "quarry_inference_failures_total", "counter", "Backend calls that ended in an error.");
    qr_buf_printf(o, "quarry_inference_failures_total %llu\n", (unsigned long long)is.failures);
    head(o, "quarry_inference_rejected_total", "counter",
         "Backend calls refused because the breaker was open.");
    qr_buf_printf(o, "quarry_inference_rejected_total %llu\n", (unsigned long long)is.rejected);
    head(o, "quarry_inference_in_flight", "gauge", "Backend requests running now.");
    qr_buf_printf(o, "quarry_inference_in_flight %d\n", is.in_flight);
    head(o, "quarry_inference_breaker_state", "gauge", "1 for the circuit breaker's current state.");
    for (int b = INFER_BREAKER_CLOSED; b <= INFER_BREAKER_HALF_OPEN; b++)
        qr_buf_printf(o, "quarry_inference_breaker_state{state=\"%s\"} %d\n",
                      infer_breaker_state_name((infer_breaker_state)b), is.breaker == (infer_breaker_state)b);

    infer_reranker *rr = api_service_reranker(srv->svc);
    if (rr) {
        /* only with rerank.backend set: the reranker's own client, breaker and counters */
        infer_stats rs;
        infer_reranker_stats(rr, &rs);
        head(o, "quarry_rerank_calls_total", "counter",
             "Calls made to the reranker (one per reranked page).");
        qr_buf_printf(o, "quarry_rerank_calls_total %llu\n", (unsigned long long)rs.calls);
        head(o, "quarry_rerank_retries_total", "counter", "Reranker requests that were retries.");
        qr_buf_printf(o, "quarry_rerank_retries_total %llu\n", (unsigned long long)rs.retries);
        head(o, "quarry_rerank_failures_total", "counter",
             "Reranker calls that ended in an error (the page kept its first-stage order); refusals apart.");
        qr_buf_printf(o, "quarry_rerank_failures_total %llu\n", (unsigned long long)rs.failures);
        head(o, "quarry_rerank_rejected_total", "counter",
             "Reranker calls refused because its breaker was open.");
        qr_buf_printf(o, "quarry_rerank_rejected_total %llu\n", (unsigned long long)rs.rejected);
        head(o, "quarry_rerank_breaker_state", "gauge",
             "1 for the reranker's circuit breaker's current state.");
        for (int b = INFER_BREAKER_CLOSED; b <= INFER_BREAKER_HALF_OPEN; b++)
            qr_buf_printf(o, "quarry_rerank_breaker_state{state=\"%s\"} %d\n",
                          infer_breaker_state_name((infer_breaker_state)b),
                          rs.breaker == (infer_breaker_state)b);
    }

    head(o, "quarry_uptime_seconds", "gauge", "Seconds since the server started.");
    qr_buf_printf(o, "quarry_uptime_seconds %.3f\n", (double)(qr_wall_ms() - srv->started_ms) / 1000.0);
    head(o, "quarry_metrics_series_dropped_total", "counter",
         "Request observations beyond the series limit.");
    qr_buf_printf(o, "quarry_metrics_series_dropped_total %llu\n", (unsigned long long)snap->series_dropped);
    bool ldap_ok = false;
    bool ready = api_ready(srv, &ldap_ok);
    head(o, "quarry_ready", "gauge", "1 when /readyz answers 200 (store, indexes and LDAP are fine).");
    qr_buf_printf(o, "quarry_ready %d\n", ready);
    head(o, "quarry_ldap_reachable", "gauge",
         "1 when LDAP answered the last readiness check (or none is set).");
    qr_buf_printf(o, "quarry_ldap_reachable %d\n", ldap_ok);
    struct statvfs vfs;
    head(o, "quarry_data_dir_free_bytes", "gauge",
         "Bytes available to quarry on the data directory's file system.");
    if (statvfs(qr_config_settings(srv->cfg)->data_dir, &vfs) == 0)
        qr_buf_printf(o, "quarry_data_dir_free_bytes %llu\n",
                      (unsigned long long)vfs.f_bavail * vfs.f_frsize);
    head(o, "quarry_data_dir_size_bytes", "gauge", "Size of the data directory's file system.");
    if (statvfs(qr_config_settings(srv->cfg)->data_dir, &vfs) == 0)
        qr_buf_printf(o, "quarry_data_dir_size_bytes %llu\n",
                      (unsigned long long)vfs.f_blocks * vfs.f_frsize);
    pthread_mutex_lock(&srv->reload_lock);
    uint64_t reloads = srv->reloads, reload_failures = srv->reload_failures;
    pthread_mutex_unlock(&srv->reload_lock);
    head(o, "quarry_config_reloads_total", "counter", "Configuration reloads (SIGHUP) applied.");
    qr_buf_printf(o, "quarry_config_reloads_total %llu\n", (unsigned long long)reloads);
    head(o, "quarry_config_reload_failures_total", "counter",
         "SIGHUP reloads that changed nothing because the configuration was refused.");
    qr_buf_printf(o, "quarry_config_reload_failures_total %llu\n", (unsigned long long)reload_failures);
    build_info(o);
    process_series(o);
    free(snap);
    /* appends fail stickily: one check says whether the exposition is whole */
    qr_status failed = qr_buf_failed(o);
    if (failed)
        return qr_fail(err, failed, "the metrics exposition exceeds %zu bytes or memory ran out",
                       qr_buf_cap(o));
    return QR_OK;
}

void api_h_metrics(api_req *r)
{
    qr_buf out;
    qr_buf_init(&out, 16 << 20);
    char err[QR_ERR_LEN];
    qr_status st = api_metrics_render(r->srv, &out, err);
    if (st)
        api_reply_status(r, st, err);
    else
        api_reply_raw(r, 200, "text/plain; version=0.0.4; charset=utf-8", qr_buf_str(&out), qr_buf_len(&out));
    qr_buf_release(&out);
}
