/* bench_load: an open-loop load generator and consistency oracle for `quarry serve`.
 *
 * It sends a mix of requests (searches as several users in BM25, hybrid, filtered and paged
 * form; chat plain, streamed and dropped mid-stream; uploads through jobs; PUTs, ACL changes and
 * deletes) at times drawn from a Poisson schedule, on libcurl's multi interface, whether or not
 * earlier requests have finished; latency is measured from the scheduled time, so a server that
 * stalls is charged for the requests that waited (coordinated omission corrected).
 *
 * The oracle keeps, for every document it writes, the history of its writes: when each was sent
 * and when it was acknowledged. A search result or citation is a LEAK when no state the document
 * could have had while the request was in flight lets that user read it (a write is certain only
 * after its acknowledgement; between request and acknowledgement both states are allowed; a write
 * that failed stays possible until a later one is acknowledged). A document acknowledged (and not
 * changed since) that an administrator's search for its unique token does not find is a LOSS; one
 * acknowledged deleted that is found again is a RESURRECTION. Exit status: 0 clean, 2 on any leak,
 * loss or resurrection, 1 when the run could not be made.
 *
 *   bench_load CONFIG     (key=value lines, every key explained in bench/load/mix.conf)
 */
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum kind {
    K_SEARCH_BM25,
    K_SEARCH_HYBRID,
    K_SEARCH_FILTER,
    K_SEARCH_PAGE,
    K_CHAT,
    K_CHAT_STREAM,
    K_CHAT_DROP,
    K_UPLOAD,
    K_PUT,
    K_ACL,
    K_DELETE,
    K_VERIFY,
    K_KEY_CREATE,
    K_SCHEDULED, /* kinds below are follow-ups, never scheduled */
    K_PAGE2 = K_SCHEDULED,
    K_JOB_POLL,
    K_VERIFY_WRITE,
    K_FINAL_SWEEP,
    K_KEY_REVOKE,
    K_COUNT
};

static const char *const kind_names[K_COUNT] = {
    "search_bm25", "search_hybrid", "search_filter", "search_page",  "chat",        "chat_stream",
    "chat_drop",   "upload_job",    "put",           "acl",          "delete",      "verify",
    "key_create",  "page2",         "job_poll",      "verify_write", "final_sweep", "key_revoke"};

#define MAX_USERS 8
#define MAX_ACLS  8
#define BATCH     3
#define BODY_CAP  (4u << 20)

struct cfg {
    char url[256], key[256], events[512];
    char admin_user[64], admin_password[128]; /* an administrator who is a person: keys are made by one */
    double duration_s, rate, drain_s, timeout_s;
    unsigned seed, max_inflight, ndocs;
    int lie; /* the oracle's self-test: 1 sends "public" ACLs it records as written, 2 deletes it records as
                not */
    double weight[K_SCHEDULED];
    char *users[MAX_USERS];
    unsigned nusers;
    char *acls[MAX_ACLS];
    unsigned nacls;
};

struct write_rec {
    double t_req, t_ack; /* t_ack < 0: failed, uncertain until a later write is acknowledged */
    int exists;
    unsigned mask;
};

struct doc {
    struct write_rec *hist;
    unsigned nhist, cap;
    int busy;
};

struct route_stats {
    unsigned long offered, done, ok, status[600];
    double *lat;
    size_t nlat, cap;
};

struct req {
    enum kind kind;
    double sched, sent;
    int user; /* -1: administrator */
    unsigned docs[BATCH], ndocs, wrec[BATCH];
    int abort_after_bytes, aborted, tries;
    char *body;
    size_t len;
    char *post;
    struct curl_slist *headers;
    char job[80];
};

struct task {
    double due;
    struct req *r; /* a prepared follow-up, sent when due */
};

static struct cfg C;
static struct doc *docs;
static struct route_stats stats[K_COUNT];
static unsigned user_mask[MAX_USERS];
static unsigned long leaks, losses, resurrections, checks, skipped;
static unsigned long jobs_succeeded, jobs_failed, jobs_unfinished;
static CURLM *multi;
static unsigned inflight;
static struct task *tasks;
static size_t ntasks, taskcap;
static struct req **backlog;
static size_t nbacklog, backlogcap;
static FILE *events;
static char run_id[16];
static double t0;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench_load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        die("out of memory");
    return q;
}

static double urand(void)
{
    return ((double)rand() + 0.5) / ((double)RAND_MAX + 1.0);
}

/* Splits S on SEP into at most MAX owned strings; returns how many. */
static unsigned split(const char *s, char sep, char **out, unsigned max)
{
    unsigned n = 0;
    while (*s && n < max) {
        const char *e = strchr(s, sep);
        size_t len = e ? (size_t)(e - s) : strlen(s);
        out[n] = xrealloc(NULL, len + 1);
        memcpy(out[n], s, len);
        out[n++][len] = '\0';
        s += len + (e ? 1 : 0);
    }
    return n;
}

static void load_config(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    if (!f)
        die("cannot open config '%s'", path);
    C.duration_s = 60, C.rate = 20, C.drain_s = 60, C.timeout_s = 30, C.seed = 1, C.max_inflight = 64;
    C.ndocs = 200;
    while (fgets(line, sizeof line, f)) {
        char *eq, *v;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || !(eq = strchr(line, '=')))
            continue;
        *eq = '\0', v = eq + 1;
        int found = 0;
        for (int k = 0; k < K_SCHEDULED; k++) {
            char name[64];
            snprintf(name, sizeof name, "weight.%s", kind_names[k]);
            if (strcmp(line, name) == 0)
                C.weight[k] = atof(v), found = 1;
        }
        if (found)
            continue;
        if (strcmp(line, "url") == 0)
            snprintf(C.url, sizeof C.url, "%s", v);
        else if (strcmp(line, "key") == 0)
            snprintf(C.key, sizeof C.key, "%s", v);
        else if (strcmp(line, "admin_user") == 0)
            snprintf(C.admin_user, sizeof C.admin_user, "%s", v);
        else if (strcmp(line, "admin_password") == 0)
            snprintf(C.admin_password, sizeof C.admin_password, "%s", v);
        else if (strcmp(line, "events") == 0)
            snprintf(C.events, sizeof C.events, "%s", v);
        else if (strcmp(line, "duration_s") == 0)
            C.duration_s = atof(v);
        else if (strcmp(line, "rate") == 0)
            C.rate = atof(v);
        else if (strcmp(line, "drain_s") == 0)
            C.drain_s = atof(v);
        else if (strcmp(line, "timeout_s") == 0)
            C.timeout_s = atof(v);
        else if (strcmp(line, "seed") == 0)
            C.seed = (unsigned)atoi(v);
        else if (strcmp(line, "max_inflight") == 0)
            C.max_inflight = (unsigned)atoi(v);
        else if (strcmp(line, "docs") == 0)
            C.ndocs = (unsigned)atoi(v);
        else if (strcmp(line, "lie") == 0)
            C.lie = strcmp(v, "leak") == 0 ? 1 : strcmp(v, "loss") == 0 ? 2 : 0;
        else if (strcmp(line, "users") == 0)
            C.nusers = split(v, ',', C.users, MAX_USERS);
        else if (strcmp(line, "acls") == 0)
            C.nacls = split(v, '|', C.acls, MAX_ACLS);
        else
            die("unknown config key '%s' in '%s'", line, path);
    }
    fclose(f);
    if (!C.url[0] || !C.key[0] || !C.nusers || !C.nacls || C.rate <= 0 || C.ndocs < 10)
        die("config '%s' needs url, key, users, acls, a positive rate and docs >= 10", path);
}

/* ---- the oracle ---- */

static int readable(const struct write_rec *w, int user)
{
    return w->exists && (user < 0 || (w->mask & user_mask[user]));
}

/* Whether USER may have been allowed to read doc D at some moment of [A, B]. */
static int may_read(unsigned d, int user, double a, double b)
{
    const struct doc *doc = &docs[d];
    int base = -1;
    for (unsigned i = 0; i < doc->nhist; i++)
        if (doc->hist[i].t_ack >= 0 && doc->hist[i].t_ack <= a)
            base = (int)i;
    if (base >= 0 && readable(&doc->hist[base], user))
        return 1;
    for (unsigned i = 0; i < doc->nhist; i++) {
        const struct write_rec *w = &doc->hist[i];
        if ((int)i <= base && w->t_ack >= 0)
            continue;
        if (w->t_req > b)
            continue;
        double end = w->t_ack;
        if (end < 0) { /* failed: possible until a later write was acknowledged */
            end = 1e300;
            for (unsigned j = i + 1; j < doc->nhist; j++)
                if (doc->hist[j].t_ack >= 0) {
                    end = doc->hist[j].t_ack;
                    break;
                }
        }
        if (end >= a && readable(w, user))
            return 1;
    }
    return 0;
}

/* The document's state when it is certain (its last write acknowledged, none in flight):
 * 1 exists, 0 absent, -1 uncertain. */
static int certain_state(unsigned d)
{
    const struct doc *doc = &docs[d];
    if (doc->busy || !doc->nhist)
        return doc->nhist || doc->busy ? -1 : 0;
    const struct write_rec *w = &doc->hist[doc->nhist - 1];
    return w->t_ack < 0 ? -1 : w->exists;
}

static unsigned add_write(unsigned d, int exists, unsigned mask)
{
    struct doc *doc = &docs[d];
    if (doc->nhist == doc->cap) {
        doc->cap = doc->cap ? doc->cap * 2 : 8;
        doc->hist = xrealloc(doc->hist, doc->cap * sizeof *doc->hist);
    }
    doc->hist[doc->nhist] = (struct write_rec){now(), -1, exists, mask};
    doc->busy = 1;
    return doc->nhist++;
}

static void doc_id(unsigned d, char *out, size_t n)
{
    snprintf(out, n, "load-%s-%04u", run_id, d);
}
static void doc_token(unsigned d, char *out, size_t n)
{
    snprintf(out, n, "lt%sq%04u", run_id, d);
}

/* Checks the doc ids of a JSON array of results or citations seen by R's user. */
static void check_results(const struct req *r, json_t *arr, double t_recv)
{
    size_t i;
    json_t *it;
    size_t plen = strlen("load-") + strlen(run_id) + 1;
    json_array_foreach(arr, i, it)
    {
        const char *id = json_string_value(json_object_get(it, "doc_id"));
        if (!id)
            continue;
        checks++;
        if (strncmp(id, "load-", 5) != 0 || strncmp(id + 5, run_id, strlen(run_id)) != 0 ||
            strlen(id) <= plen)
            continue;
        unsigned d = (unsigned)atoi(id + plen);
        if (d < C.ndocs && !may_read(d, r->user, r->sent, t_recv)) {
            leaks++;
            fprintf(stderr, "LEAK: %s returned %s to %s at %.3f (sent %.3f)\n", kind_names[r->kind], id,
                    r->user < 0 ? "admin" : C.users[r->user], t_recv - t0, r->sent - t0);
        }
    }
}

/* ---- requests ---- */

static size_t on_body(char *p, size_t sz, size_t n, void *u)
{
    struct req *r = u;
    size_t len = sz * n;
    if (r->abort_after_bytes && r->len + len >= (size_t)r->abort_after_bytes) {
        r->aborted = 1;
        return 0; /* a client that goes away mid-stream */
    }
    if (r->len + len > BODY_CAP)
        return 0;
    r->body = xrealloc(r->body, r->len + len + 1);
    memcpy(r->body + r->len, p, len);
    r->len += len;
    r->body[r->len] = '\0';
    return len;
}

static struct req *req_new(enum kind kind, double sched, int user)
{
    struct req *r = xrealloc(NULL, sizeof *r);
    memset(r, 0, sizeof *r);
    r->kind = kind, r->sched = sched, r->user = user;
    return r;
}

static void req_free(struct req *r)
{
    if (!r)
        return;
    free(r->body);
    free(r->post);
    curl_slist_free_all(r->headers);
    free(r);
}

/* Starts R now: METHOD on PATH with JSON BODY (owned; NULL for none). */
static void send_req(struct req *r, const char *method, const char *path, char *json)
{
    char h[512], url[1024];
    CURL *e = curl_easy_init();
    if (!e)
        die("curl_easy_init failed");
    snprintf(url, sizeof url, "%s%s", C.url, path);
    if (r->kind == K_KEY_CREATE) { /* HTTP Basic: the password is checked by LDAP */
        curl_easy_setopt(e, CURLOPT_USERNAME, C.admin_user);
        curl_easy_setopt(e, CURLOPT_PASSWORD, C.admin_password);
    } else {
        snprintf(h, sizeof h, "Authorization: Bearer %s", C.key);
        r->headers = curl_slist_append(r->headers, h);
    }
    if (r->user >= 0) {
        snprintf(h, sizeof h, "X-Quarry-User: %s", C.users[r->user]);
        r->headers = curl_slist_append(r->headers, h);
    }
    r->headers = curl_slist_append(r->headers, "Content-Type: application/json");
    r->headers = curl_slist_append(r->headers, "Expect:");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (json) {
        r->post = json;
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->post);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(r->post));
    }
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(C.timeout_s * 1000));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    r->sent = now();
    curl_multi_add_handle(multi, e);
    inflight++;
}

static char *dumps(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        die("cannot encode a request body");
    return s;
}

static const char *const words[] = {"survey", "drainage", "bench", "haul", "road", "pit", "wall", "marker"};

static void text_for(unsigned d, char *out, size_t n)
{
    char tok[32];
    doc_token(d, tok, sizeof tok);
    snprintf(out, n, "Note %u records the %s of %s: %s heights, %s roads and the %s. Token %s.", d,
             words[d % 8], tok, words[(d / 8) % 8], words[(d / 3) % 8], words[(d / 5) % 8], tok);
}

static json_t *acl_json(unsigned mask)
{
    json_t *a = json_array();
    for (unsigned i = 0; i < C.nacls; i++)
        if (mask & (1u << i))
            json_array_append_new(a, json_string(C.acls[i]));
    return a;
}

static unsigned random_mask(void)
{
    unsigned m = 1u << (rand() % C.nacls);
    if (urand() < 0.3)
        m |= 1u << (rand() % C.nacls);
    return m;
}

/* A document no write is in flight for, or -1 (WANT_EXISTING: one whose last write made it). */
static int pick_free_doc(int want_existing)
{
    for (int tries = 0; tries < 32; tries++) {
        unsigned d = (unsigned)rand() % C.ndocs;
        if (docs[d].busy)
            continue;
        if (want_existing && certain_state(d) != 1)
            continue;
        return (int)d;
    }
    return -1;
}

static void search_body(struct req *r, const char *query, const char *mode, int k, json_t *filters,
                        const char *cursor)
{
    json_t *b = json_pack("{s:s,s:i}", "query", query, "k", k);
    if (mode)
        json_object_set_new(b, "mode", json_string(mode));
    if (filters)
        json_object_set_new(b, "filters", filters);
    if (cursor)
        json_object_set_new(b, "cursor", json_string(cursor));
    send_req(r, "POST", "/v1/search", dumps(b));
}

static void send_verify(struct req *r, unsigned d)
{
    char tok[32];
    doc_token(d, tok, sizeof tok);
    r->docs[0] = d, r->ndocs = 1;
    search_body(r, tok, "bm25", 5, NULL, NULL);
}

static void defer(struct req *r, double due)
{
    if (ntasks == taskcap) {
        taskcap = taskcap ? taskcap * 2 : 64;
        tasks = xrealloc(tasks, taskcap * sizeof *tasks);
    }
    tasks[ntasks++] = (struct task){due, r};
}

/* Starts a scheduled request of kind K; returns 0 when no document was free for a write. */
static int start_scheduled(struct req *r)
{
    char tok[32], id[64], path[256], text[512];
    int d;
    r->user = (int)((unsigned)rand() % C.nusers);
    switch (r->kind) {
    case K_SEARCH_BM25:
    case K_SEARCH_HYBRID: {
        doc_token((unsigned)rand() % C.ndocs, tok, sizeof tok);
        snprintf(text, sizeof text, "%s %s", tok, words[rand() % 8]);
        search_body(r, text, r->kind == K_SEARCH_BM25 ? "bm25" : "hybrid", 10, NULL, NULL);
        return 1;
    }
    case K_SEARCH_FILTER: {
        json_t *ids = json_array();
        for (int i = 0; i < 3; i++) {
            doc_id((unsigned)rand() % C.ndocs, id, sizeof id);
            json_array_append_new(ids, json_string(id));
        }
        search_body(r, words[rand() % 8], "bm25", 10, json_pack("{s:o}", "doc_ids", ids), NULL);
        return 1;
    }
    case K_SEARCH_PAGE:
        snprintf(text, sizeof text, "%s %s", words[rand() % 8], words[rand() % 8]);
        search_body(r, text, "bm25", 3, NULL, NULL);
        return 1;
    case K_CHAT:
    case K_CHAT_STREAM:
    case K_CHAT_DROP: {
        doc_token((unsigned)rand() % C.ndocs, tok, sizeof tok);
        snprintf(text, sizeof text, "What does the note with %s say about the %s?", tok, words[rand() % 8]);
        json_t *b = json_pack("{s:[{s:s,s:s}],s:b}", "messages", "role", "user", "content", text, "stream",
                              r->kind != K_CHAT);
        if (r->kind == K_CHAT_DROP)
            r->abort_after_bytes = 64;
        send_req(r, "POST", "/v1/chat/completions", dumps(b));
        return 1;
    }
    case K_UPLOAD: {
        json_t *arr = json_array();
        r->user = -1;
        for (unsigned i = 0; i < BATCH; i++) {
            if ((d = pick_free_doc(0)) < 0)
                break;
            unsigned mask = random_mask();
            r->docs[r->ndocs] = (unsigned)d;
            r->wrec[r->ndocs++] = add_write((unsigned)d, 1, mask);
            doc_id((unsigned)d, id, sizeof id);
            text_for((unsigned)d, text, sizeof text);
            json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:o}", "doc_id", id, "title", id, "text", text,
                                                 "acl", acl_json(mask)));
        }
        if (r->ndocs < 2) { /* one document is written at once, not as a job */
            for (unsigned i = 0; i < r->ndocs; i++)
                docs[r->docs[i]].nhist--, docs[r->docs[i]].busy = 0;
            json_decref(arr);
            return 0;
        }
        send_req(r, "POST", "/v1/documents", dumps(json_pack("{s:o}", "documents", arr)));
        return 1;
    }
    case K_PUT: {
        if ((d = pick_free_doc(0)) < 0)
            return 0;
        unsigned mask = random_mask();
        r->user = -1, r->docs[0] = (unsigned)d, r->ndocs = 1;
        r->wrec[0] = add_write((unsigned)d, 1, mask);
        doc_id((unsigned)d, id, sizeof id);
        text_for((unsigned)d, text, sizeof text);
        snprintf(path, sizeof path, "/v1/documents/%s?refresh=wait_for", id);
        send_req(r, "PUT", path,
                 dumps(json_pack("{s:s,s:s,s:o}", "title", id, "text", text, "acl",
                                 C.lie == 1 ? json_pack("[s]", "public") : acl_json(mask))));
        return 1;
    }
    case K_ACL:
    case K_DELETE: {
        if ((d = pick_free_doc(1)) < 0)
            return 0;
        const struct write_rec *last = &docs[d].hist[docs[d].nhist - 1];
        unsigned mask = r->kind == K_ACL ? random_mask() : last->mask;
        r->user = -1, r->docs[0] = (unsigned)d, r->ndocs = 1;
        r->wrec[0] = add_write((unsigned)d, r->kind == K_ACL || C.lie == 2, mask);
        doc_id((unsigned)d, id, sizeof id);
        if (r->kind == K_ACL) {
            snprintf(path, sizeof path, "/v1/documents/%s/acl?refresh=wait_for", id);
            send_req(r, "PATCH", path, dumps(json_pack("{s:o}", "acl", acl_json(mask))));
        } else {
            snprintf(path, sizeof path, "/v1/documents/%s?refresh=wait_for", id);
            send_req(r, "DELETE", path, NULL);
        }
        return 1;
    }
    case K_KEY_CREATE: {
        if (!C.admin_user[0])
            return 0;
        r->user = -1;
        snprintf(text, sizeof text, "load-%s-%lu", run_id, stats[K_KEY_CREATE].offered);
        send_req(r, "POST", "/v1/keys", dumps(json_pack("{s:s,s:[s]}", "name", text, "scopes", "search")));
        return 1;
    }
    case K_VERIFY:
        for (int tries = 0; tries < 32; tries++) {
            unsigned v = (unsigned)rand() % C.ndocs;
            if (certain_state(v) >= 0 && docs[v].nhist) {
                r->user = -1;
                send_verify(r, v);
                return 1;
            }
        }
        return 0;
    default: return 0;
    }
}

/* DEGRADED: a chat answered by the extractive fallback (quarry.mode), which recovery does not count */
static void record(const struct req *r, long status, double t_done, int degraded)
{
    struct route_stats *s = &stats[r->kind];
    s->done++;
    if (status >= 0 && status < 600)
        s->status[status]++;
    if (status >= 200 && status < 300) {
        s->ok++;
        if (s->nlat == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 1024;
            s->lat = xrealloc(s->lat, s->cap * sizeof *s->lat);
        }
        s->lat[s->nlat++] = (t_done - r->sched) * 1000.0;
    }
    if (events)
        fprintf(events, "%.3f %ld %s%s\n", t_done, status, kind_names[r->kind],
                degraded ? " extractive" : "");
}

static void finish_writes(struct req *r, int ok, double t)
{
    for (unsigned i = 0; i < r->ndocs; i++) {
        struct doc *doc = &docs[r->docs[i]];
        if (ok)
            doc->hist[r->wrec[i]].t_ack = t;
        doc->busy = 0;
    }
}

/* Judges a verify search: D acknowledged and unchanged since R was sent must be found exactly
 * when it exists. */
static void judge_verify(struct req *r, json_t *res)
{
    unsigned d = r->docs[0];
    char id[64];
    size_t i;
    json_t *it;
    int found = 0;
    doc_id(d, id, sizeof id);
    json_array_foreach(res, i, it)
    {
        const char *rid = json_string_value(json_object_get(it, "doc_id"));
        if (rid && strcmp(rid, id) == 0)
            found = 1;
    }
    const struct doc *doc = &docs[d];
    if (doc->busy || !doc->nhist)
        return;
    const struct write_rec *w = &doc->hist[doc->nhist - 1];
    if (w->t_ack < 0 || w->t_req > r->sent || w->t_ack > r->sent)
        return; /* changed meanwhile, or uncertain: nothing to judge */
    checks++;
    if (w->exists && !found) {
        if (r->tries < 3) { /* the visibility bound: index.refresh_ms, retried up to 3 s later */
            struct req *again = req_new(r->kind, now() + 1.0, -1);
            again->tries = r->tries + 1, again->docs[0] = d, again->ndocs = 1;
            defer(again, again->sched);
            checks--;
            return;
        }
        losses++;
        fprintf(stderr, "LOSS: %s acknowledged at %.3f not found at %.3f\n", id, w->t_ack - t0, r->sent - t0);
    } else if (!w->exists && found) {
        resurrections++;
        fprintf(stderr, "RESURRECTION: %s deleted at %.3f found at %.3f\n", id, w->t_ack - t0, r->sent - t0);
    }
}

static void complete(struct req *r, long status, CURLcode cc)
{
    double t = now();
    int ok = status >= 200 && status < 300 && cc == CURLE_OK;
    json_t *j = NULL;
    if (r->aborted)
        status = 299; /* dropped by us on purpose */
    if (ok && r->body && r->kind != K_CHAT_STREAM && r->kind != K_CHAT_DROP)
        j = json_loads(r->body, 0, NULL);
    const char *mode = json_string_value(json_object_get(json_object_get(j, "quarry"), "mode"));
    record(r, cc == CURLE_OK || r->aborted ? status : 0, t, mode && strcmp(mode, "extractive") == 0);
    switch (r->kind) {
    case K_SEARCH_BM25:
    case K_SEARCH_HYBRID:
    case K_SEARCH_FILTER:
    case K_SEARCH_PAGE:
    case K_PAGE2:
        if (j) {
            check_results(r, json_object_get(j, "results"), t);
            const char *cur = json_string_value(json_object_get(j, "next_cursor"));
            if (r->kind == K_SEARCH_PAGE && cur) {
                /* the next page, same query: rebuild it from the request we sent */
                json_t *q = json_loads(r->post, 0, NULL);
                if (q) {
                    struct req *p2 = req_new(K_PAGE2, t, r->user);
                    search_body(p2, json_string_value(json_object_get(q, "query")), "bm25", 3, NULL, cur);
                    json_decref(q);
                }
            }
        }
        break;
    case K_CHAT:
        if (j)
            check_results(r, json_object_get(j, "citations"), t);
        break;
    case K_CHAT_STREAM:
    case K_CHAT_DROP:
        if (r->body) { /* every data: line's citations */
            char *line = r->body, *nl;
            for (; line && *line; line = nl ? nl + 1 : NULL) {
                nl = strchr(line, '\n');
                if (nl)
                    *nl = '\0';
                if (strncmp(line, "data: {", 7) == 0) {
                    json_t *ev = json_loads(line + 6, 0, NULL);
                    if (ev)
                        check_results(r, json_object_get(ev, "citations"), t);
                    json_decref(ev);
                }
            }
        }
        break;
    case K_PUT:
    case K_ACL:
    case K_DELETE:
        /* a 404 on delete or ACL change cannot happen: only existing documents are picked */
        finish_writes(r, ok, t);
        if (ok) {
            struct req *v = req_new(K_VERIFY_WRITE, t, -1);
            send_verify(v, r->docs[0]);
        }
        break;
    case K_UPLOAD:
        if (ok && j && json_string_value(json_object_get(j, "job_id"))) {
            struct req *p = req_new(K_JOB_POLL, t + 0.2, -1);
            snprintf(p->job, sizeof p->job, "%s", json_string_value(json_object_get(j, "job_id")));
            memcpy(p->docs, r->docs, sizeof r->docs);
            memcpy(p->wrec, r->wrec, sizeof r->wrec);
            p->ndocs = r->ndocs;
            defer(p, p->sched);
        } else {
            finish_writes(r, 0, t);
        }
        break;
    case K_JOB_POLL: {
        const char *state = j ? json_string_value(json_object_get(j, "state")) : NULL;
        struct req *p = NULL;
        if (state && strcmp(state, "succeeded") == 0) {
            jobs_succeeded++;
            finish_writes(r, 1, t);
            for (unsigned i = 0; i < r->ndocs; i++) {
                struct req *v = req_new(K_VERIFY_WRITE, t, -1);
                send_verify(v, r->docs[i]);
            }
        } else if (state && strcmp(state, "failed") == 0) {
            jobs_failed++;
            finish_writes(r, 0, t);
        } else if (r->tries < 600) { /* queued, running, interrupted, or unreachable: poll again */
            p = req_new(K_JOB_POLL, t + 0.25, -1);
            snprintf(p->job, sizeof p->job, "%s", r->job);
            memcpy(p->docs, r->docs, sizeof r->docs);
            memcpy(p->wrec, r->wrec, sizeof r->wrec);
            p->ndocs = r->ndocs, p->tries = r->tries + 1;
            defer(p, p->sched);
        } else {
            jobs_unfinished++;
            finish_writes(r, 0, t);
        }
        break;
    }
    case K_KEY_CREATE: /* revoked at once, so that keys.json holds only revoked load keys */
        if (j && json_string_value(json_object_get(j, "id"))) {
            char path[128];
            struct req *k = req_new(K_KEY_REVOKE, t, -1);
            snprintf(path, sizeof path, "/v1/keys/%s", json_string_value(json_object_get(j, "id")));
            send_req(k, "DELETE", path, NULL);
        }
        break;
    case K_VERIFY:
    case K_VERIFY_WRITE:
    case K_FINAL_SWEEP:
        if (j)
            judge_verify(r, json_object_get(j, "results"));
        else if (r->kind == K_FINAL_SWEEP && r->tries < 20) { /* the sweep must get an answer */
            struct req *again = req_new(K_FINAL_SWEEP, t + 0.5, -1);
            again->docs[0] = r->docs[0], again->ndocs = 1, again->tries = r->tries + 1;
            defer(again, again->sched);
        }
        break;
    default: break;
    }
    json_decref(j);
}

static void start_task(struct req *r)
{
    char path[256];
    if (r->kind == K_JOB_POLL) {
        snprintf(path, sizeof path, "/v1/jobs/%s", r->job);
        send_req(r, "GET", path, NULL);
    } else {
        send_verify(r, r->docs[0]);
    }
}

static void pump(double until_ms)
{
    int running, n;
    CURLMsg *m;
    curl_multi_poll(multi, NULL, 0, until_ms < 0 ? 0 : (int)until_ms, NULL);
    curl_multi_perform(multi, &running);
    while ((m = curl_multi_info_read(multi, &n))) {
        struct req *r;
        long status = 0;
        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        complete(r, status, m->data.result);
        curl_multi_remove_handle(multi, m->easy_handle);
        curl_easy_cleanup(m->easy_handle);
        inflight--;
        req_free(r);
    }
}

static void run_due_tasks(double t)
{
    for (size_t i = 0; i < ntasks;) {
        if (tasks[i].due <= t && inflight < C.max_inflight * 2) {
            struct req *r = tasks[i].r;
            tasks[i] = tasks[--ntasks];
            start_task(r);
        } else {
            i++;
        }
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const struct route_stats *s, double p)
{
    if (!s->nlat)
        return NAN;
    size_t i = (size_t)ceil(p * (double)s->nlat) - 1;
    return s->lat[i < s->nlat ? i : s->nlat - 1];
}

static void report(double elapsed)
{
    printf("| route | offered/s | achieved/s | requests | ok | p50 ms | p99 ms | p99.9 ms | not ok, by "
           "status |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    for (int k = 0; k < K_COUNT; k++) {
        struct route_stats *s = &stats[k];
        char errs[512] = "";
        size_t off = 0;
        if (!s->done && !s->offered)
            continue;
        if (s->nlat) /* a route offered but never answered has no samples (and lat is NULL) */
            qsort(s->lat, s->nlat, sizeof *s->lat, cmp_double);
        for (int st = 0; st < 600; st++)
            if (s->status[st] && (st < 200 || st >= 300) && off < sizeof errs - 32) {
                if (st)
                    off += (size_t)snprintf(errs + off, sizeof errs - off, "%s%d:%lu", off ? " " : "", st,
                                            s->status[st]);
                else
                    off += (size_t)snprintf(errs + off, sizeof errs - off, "%sconn:%lu", off ? " " : "",
                                            s->status[st]);
            }
        if (s->status[299])
            off += (size_t)snprintf(errs + off, sizeof errs - off, "%sdropped:%lu", off ? " " : "",
                                    s->status[299]);
        printf("| %s | %.2f | %.2f | %lu | %lu | %.1f | %.1f | %.1f | %s |\n", kind_names[k],
               k < K_SCHEDULED ? (double)s->offered / elapsed : 0.0, (double)s->ok / elapsed, s->done, s->ok,
               pct(s, 0.5), pct(s, 0.99), pct(s, 0.999), off ? errs : "-");
    }
    for (size_t i = 0; i < ntasks; i++)
        jobs_unfinished += tasks[i].r->kind == K_JOB_POLL;
    printf("\nchecks %lu, leaks %lu, losses %lu, resurrections %lu, writes skipped (no free document) %lu\n",
           checks, leaks, losses, resurrections, skipped);
    printf("upload jobs: %lu succeeded, %lu failed, %lu unfinished at the end\n", jobs_succeeded, jobs_failed,
           jobs_unfinished);
}

/* Reads each user's ACL principals from GET /v1/me; the oracle's only source of who may read. */
static void load_principals(void)
{
    for (unsigned u = 0; u < C.nusers; u++) {
        for (int attempt = 0;; attempt++) {
            struct req *r = req_new(K_VERIFY, now(), (int)u);
            long status = 0;
            send_req(r, "GET", "/v1/me", NULL);
            while (inflight) {
                int running, n;
                CURLMsg *m;
                curl_multi_poll(multi, NULL, 0, 100, NULL);
                curl_multi_perform(multi, &running);
                while ((m = curl_multi_info_read(multi, &n))) {
                    curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
                    curl_multi_remove_handle(multi, m->easy_handle);
                    curl_easy_cleanup(m->easy_handle);
                    inflight--;
                }
            }
            json_t *j = status == 200 && r->body ? json_loads(r->body, 0, NULL) : NULL;
            json_t *ps = json_object_get(j, "principals");
            if (json_is_array(ps)) {
                size_t i;
                json_t *p;
                json_array_foreach(ps, i, p) for (unsigned a = 0; a < C.nacls;
                                                  a++) if (json_string_value(p) &&
                                                           strcmp(json_string_value(p), C.acls[a]) == 0)
                    user_mask[u] |= 1u << a;
                json_decref(j);
                req_free(r);
                break;
            }
            json_decref(j);
            req_free(r);
            if (attempt >= 300) /* a minute: a sanitizer build on a loaded machine starts slowly */
                die("GET /v1/me as %s answered %ld for a minute", C.users[u], status);
            struct timespec ts = {0, 200000000};
            nanosleep(&ts, NULL);
        }
        fprintf(stderr, "bench_load: %s reads ACL mask 0x%x\n", C.users[u], user_mask[u]);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2)
        die("usage: bench_load CONFIG");
    load_config(argv[1]);
    srand(C.seed);
    snprintf(run_id, sizeof run_id, "%04x%04x", (unsigned)rand() & 0xffff, (unsigned)time(NULL) & 0xffff);
    docs = xrealloc(NULL, C.ndocs * sizeof *docs);
    memset(docs, 0, C.ndocs * sizeof *docs);
    if (C.events[0] && !(events = fopen(C.events, "w")))
        die("cannot open events file '%s'", C.events);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)C.max_inflight);
    load_principals();

    double wsum = 0;
    for (int k = 0; k < K_SCHEDULED; k++)
        wsum += C.weight[k];
    if (wsum <= 0)
        die("every weight is 0");
    t0 = now();
    double next = t0, end = t0 + C.duration_s;
    while (now() < end) {
        double t = now();
        while (next <= t && next < end) {
            double x = urand() * wsum;
            int k = 0;
            while (k < K_SCHEDULED - 1 && x >= C.weight[k])
                x -= C.weight[k++];
            stats[k].offered++;
            struct req *r = req_new((enum kind)k, next, -1);
            if (nbacklog == backlogcap) {
                backlogcap = backlogcap ? backlogcap * 2 : 256;
                backlog = xrealloc(backlog, backlogcap * sizeof *backlog);
            }
            backlog[nbacklog++] = r;
            next += -log(urand()) / C.rate;
        }
        /* requests wait here only when max_inflight is reached; their latency still counts
         * from the scheduled time */
        size_t started = 0;
        while (started < nbacklog && inflight < C.max_inflight) {
            struct req *r = backlog[started++];
            if (!start_scheduled(r)) {
                skipped++;
                req_free(r);
            }
        }
        memmove(backlog, backlog + started, (nbacklog - started) * sizeof *backlog);
        nbacklog -= started;
        run_due_tasks(t);
        double wait = (next - now()) * 1000.0;
        pump(wait > 50 ? 50 : wait);
    }
    /* drain: what is queued and in flight, job polls and verifies, then a sweep of every document */
    double drain_end = now() + C.drain_s;
    while ((nbacklog || inflight || ntasks) && now() < drain_end) {
        while (nbacklog && inflight < C.max_inflight) {
            struct req *r = backlog[--nbacklog];
            if (!start_scheduled(r)) {
                skipped++;
                req_free(r);
            }
        }
        run_due_tasks(now());
        pump(20);
    }
    double elapsed = C.duration_s; /* rates over the scheduled window; the drain adds stragglers */
    for (unsigned d = 0; d < C.ndocs; d++) {
        if (certain_state(d) < 0 || !docs[d].nhist)
            continue;
        struct req *r = req_new(K_FINAL_SWEEP, now(), -1);
        r->docs[0] = d, r->ndocs = 1;
        defer(r, r->sched);
    }
    drain_end = now() + C.drain_s;
    while ((inflight || ntasks) && now() < drain_end) {
        run_due_tasks(now());
        pump(20);
    }
    report(elapsed);
    if (inflight || ntasks || nbacklog)
        printf("not drained within %.0f s: %u in flight, %zu follow-ups left\n", C.drain_s, inflight,
               ntasks + nbacklog);
    if (events)
        fclose(events);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
    return leaks || losses || resurrections ? 2 : 0;
}
