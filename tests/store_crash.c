/*
 * The writer of the store's crash test (test_store.c, case crash_kill_50). It opens the store in
 * the directory named on its command line and writes until it is killed: new documents, new
 * versions of them, ACL-only and title-only changes and deletes, drawn at random over a small set
 * of doc ids so that every kind of transaction is in flight at some kill.
 *
 * Every chunk it writes lets the test recognise the version it belongs to: the chunk text starts
 * with the first 12 hex digits of the document's content hash, and the chunk's vector holds its
 * ordinal and a number derived from the hash. About a third of the writes go in batches of 2 to 8
 * (store_batch_begin/commit). After every write that returned QR_OK outside a batch, and after
 * every batch commit, it prints the store's change counter on stdout (one line, unbuffered), so
 * the test can check that nothing committed is lost. Any failure other than the expected
 * QR_ENOTFOUND of a delete or set_acl ends it with exit status 3 and a message on stderr.
 *
 * Usage: store_crash DIR SEED
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index/index.h"

#define NDOCS 24
#define DIM   8

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* xorshift64*: deterministic per seed, so a failing run can be replayed */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static const char *const words[] = {"travel",    "policy",   "reimbursement", "hotel",   "running", "bridges",
                                    "expenses",  "approval", "manager",       "café",    "naïve",   "日本語",
                                    "quarterly", "budget",   "receipts",      "flights", "meals",   "limits"};

static void die(const char *what, const char *err)
{
    fprintf(stderr, "store_crash: %s: %s\n", what, err);
    exit(3);
}

static void report(store *s)
{
    char err[QR_ERR_LEN] = "";
    store_stats stats;
    if (store_get_stats(s, &stats, err))
        die("stats", err);
    char line[32];
    int n = snprintf(line, sizeof(line), "%lld\n", (long long)stats.change_counter);
    if (write(1, line, (size_t)n) != n)
        exit(4);
}

static void random_hash(char hash[65])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 64; i++)
        hash[i] = hex[rnd() % 16];
    hash[64] = '\0';
}

/* The number the test expects in vector[1] of every chunk of a version. */
static float hash_mark(const char *hash)
{
    return (float)strtol((char[5]){hash[0], hash[1], hash[2], hash[3], '\0'}, NULL, 16);
}

static size_t random_acl(const char **acl)
{
    static const char *const principals[] = {"public", "user:alice", "user:bob", "group:finance",
                                             "group:Domain Users"};
    size_t n = rnd() % 4;
    for (size_t i = 0; i < n; i++)
        acl[i] = principals[rnd() % 5];
    return n;
}

static void put_new_version(store *s, const char *doc_id)
{
    char err[QR_ERR_LEN] = "", hash[65], title[64], text[8192];
    store_chunk chunks[12];
    float vectors[12 * DIM];
    const char *acl[4];
    size_t nchunks = 1 + rnd() % 10, len = 0;
    random_hash(hash);
    snprintf(title, sizeof(title), "Title %s %s", words[rnd() % 18], doc_id);
    for (size_t i = 0; i < nchunks; i++) {
        chunks[i].start = len;
        len += (size_t)snprintf(text + len, sizeof(text) - len, "%.12s", hash);
        for (int w = 0, nw = 5 + (int)(rnd() % 40); w < nw; w++)
            len += (size_t)snprintf(text + len, sizeof(text) - len, " %s", words[rnd() % 18]);
        chunks[i].end = len;
        len += (size_t)snprintf(text + len, sizeof(text) - len, "\n");
        chunks[i].headings = i % 2 ? "Expenses > Limits" : "";
        for (int d = 0; d < DIM; d++)
            vectors[i * DIM + d] = d == 0   ? (float)i
                                   : d == 1 ? hash_mark(hash)
                                            : (float)(rnd() % 100) / 100.0f;
    }
    store_document doc = {.doc_id = doc_id,
                          .title = title,
                          .uri = "file:///crash",
                          .content_type = "text/plain",
                          .metadata_json = "{\"source\":\"crash\"}",
                          .acl = acl,
                          .nacl = random_acl(acl),
                          .content_hash = hash,
                          .text = text,
                          .text_len = len};
    store_put_result result;
    if (store_put(s, &doc, chunks, nchunks, vectors, DIM, &result, err))
        die("put", err);
}

/* Same content, new title or ACL: the paths that keep chunk ids. */
static void put_same_content(store *s, const char *doc_id, bool new_title)
{
    char err[QR_ERR_LEN] = "", hash[65], title[64];
    bool found;
    if (store_get_hash(s, doc_id, hash, &found, err))
        die("get_hash", err);
    if (!found)
        return;
    const char *acl[4];
    snprintf(title, sizeof(title), "Retitled %s %d", doc_id, (int)(rnd() % 1000));
    store_document doc = {.doc_id = doc_id,
                          .title = new_title ? title : NULL,
                          .acl = acl,
                          .nacl = random_acl(acl),
                          .content_hash = hash};
    store_put_result result;
    if (store_put(s, &doc, NULL, 0, NULL, 0, &result, err))
        die("put (same content)", err);
}

int main(int argc, char **argv)
{
    char err[QR_ERR_LEN] = "";
    store *s = NULL;
    if (argc != 3) {
        fprintf(stderr, "usage: store_crash DIR SEED\n");
        return 2;
    }
    rng_state = strtoull(argv[2], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
    if (store_open(argv[1], &s, err))
        die("open", err);
    if (store_check_embedding(s, "crash-test-model", DIM, err))
        die("check_embedding", err);
    int batch_left = 0; /* writes still to go in the open batch; 0: no batch open */
    for (;;) {
        char doc_id[32];
        if (batch_left == 0 && rnd() % 3 == 0) {
            if (store_batch_begin(s, err))
                die("batch_begin", err);
            batch_left = 2 + (int)(rnd() % 7);
        }
        snprintf(doc_id, sizeof(doc_id), "doc-%02d", (int)(rnd() % NDOCS));
        unsigned op = (unsigned)(rnd() % 10);
        if (op < 5) {
            put_new_version(s, doc_id);
        } else if (op < 7) {
            put_same_content(s, doc_id, op == 6);
        } else if (op < 9) {
            const char *acl[4];
            size_t nacl = random_acl(acl);
            qr_status st = store_set_acl(s, doc_id, acl, nacl, err);
            if (st && st != QR_ENOTFOUND)
                die("set_acl", err);
        } else {
            qr_status st = store_delete(s, doc_id, err);
            if (st && st != QR_ENOTFOUND)
                die("delete", err);
        }
        if (batch_left > 0) {
            if (--batch_left > 0)
                continue;
            if (store_batch_commit(s, err))
                die("batch_commit", err);
        }
        report(s);
    }
}
