/*
 * End-to-end tests of ingestion as an administrator runs it: `quarry ingest` over folders of real
 * files and over JSON lines, then `quarry stats` and `quarry delete`, against a real store in a
 * temporary data directory. Covers re-runs (unchanged), content and ACL changes, hidden files,
 * symbolic links leaving the tree, malformed lines and the exit status when anything failed.
 */
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/core.h"
#include "index/index.h"
#include "tests/harness.h"
#include "tests/test_util.h"

static char tmp[64];

/* A fresh temporary folder for one case's documents and data. */
static bool make_tmp(void)
{
    snprintf(tmp, sizeof(tmp), "/tmp/quarry-pipeline-XXXXXX");
    return mkdtemp(tmp) != NULL;
}

static void cleanup(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", tmp);
}

static bool write_bytes(const char *rel, const char *text, size_t len)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", tmp, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", path);
    if (system(cmd) != 0)
        return false;
    *slash = '/';
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = fwrite(text, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

static bool write_file(const char *rel, const char *text)
{
    return write_bytes(rel, text, strlen(text));
}

/* Runs quarry with --data <tmp>/data and the given arguments; output in out. */
static int quarry(qr_buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int quarry(qr_buf *out, const char *fmt, ...)
{
    char args[1024], cmd[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), "cd '%s' && env -u QUARRY_CONFIG %s --data '%s/data' %s 2>&1", tmp, QUARRY_BIN,
             tmp, args);
    return test_capture(cmd, out);
}

static bool has(const qr_buf *out, const char *needle)
{
    return strstr(qr_buf_str(out), needle) != NULL;
}

/* Opens the case's store to look at a document directly. */
static store_doc_info *get_doc(const char *doc_id)
{
    char dir[128], err[QR_ERR_LEN];
    snprintf(dir, sizeof(dir), "%s/data", tmp);
    store *s = NULL;
    store_doc_info *info = NULL;
    if (store_open(dir, &s, err) == QR_OK)
        store_get_document(s, doc_id, true, &info, err);
    store_close(s);
    return info;
}

TEST(folder_ingest_rerun_update_and_delete)
{
    CHECK(make_tmp());
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK(write_file("docs/travel.md",
                     "# Travel policy\n\nBook trains.\n\n## Reimbursement\n\nKeep receipts."));
    CHECK(write_file("docs/notes.txt", "Plain notes about the quarterly budget."));
    CHECK(write_file("docs/site/index.html",
                     "<html><head><title>Intranet</title><script>evil()</script></head>"
                     "<body><nav>menu</nav><h1>Welcome</h1><p>Hello staff.</p></body></html>"));
    CHECK(write_file("docs/.hidden/secret.txt", "must not be ingested"));
    CHECK(write_file("docs/.dotfile", "must not be ingested either"));
    CHECK_INT(quarry(&out, "ingest --acl group:staff --acl user:alice docs"), 0);
    CHECK_MSG(has(&out, "3 added, 0 updated, 0 acl/metadata updated, 0 unchanged, 0 failed"), "%s",
              qr_buf_str(&out));
    CHECK_INT(quarry(&out, "stats --json"), 0);
    CHECK_MSG(has(&out, "\"documents\":3"), "%s", qr_buf_str(&out));
    CHECK(has(&out, "\"embedding_model\":\"local-hash-v1\""));

    /* doc ids are paths relative to the ingested root; headings and ACL are kept */
    store_doc_info *info = get_doc("travel.md");
    CHECK(info != NULL);
    CHECK_STR(info->content_type, "text/markdown");
    CHECK_INT(info->nacl, 2);
    bool reimbursement = false;
    for (size_t i = 0; i < info->nchunks; i++)
        if (strstr(info->chunks[i].headings, "Travel policy > Reimbursement"))
            reimbursement = true;
    CHECK(reimbursement);
    store_doc_info_free(info);
    info = get_doc("site/index.html");
    CHECK(info != NULL);
    CHECK_STR(info->title, "Intranet");
    for (size_t i = 0; i < info->nchunks; i++) {
        CHECK(strstr(info->chunks[i].text, "evil") == NULL);
        CHECK(strstr(info->chunks[i].text, "menu") == NULL);
    }
    store_doc_info_free(info);
    CHECK(get_doc(".hidden/secret.txt") == NULL);

    /* a second run changes nothing */
    CHECK_INT(quarry(&out, "ingest --acl group:staff --acl user:alice docs"), 0);
    CHECK_MSG(has(&out, "0 added, 0 updated, 0 acl/metadata updated, 3 unchanged"), "%s", qr_buf_str(&out));
    /* an ACL change touches only ACLs; a content change replaces the chunks */
    info = get_doc("notes.txt");
    CHECK(info && info->nchunks == 1);
    int64_t old_chunk = info->chunks[0].chunk_id;
    store_doc_info_free(info);
    CHECK_INT(quarry(&out, "ingest --acl group:finance docs"), 0);
    CHECK_MSG(has(&out, "3 acl/metadata updated"), "%s", qr_buf_str(&out));
    info = get_doc("notes.txt");
    CHECK(info && info->nacl == 1 && strcmp(info->acl[0], "group:finance") == 0);
    CHECK_INT(info->chunks[0].chunk_id, old_chunk);
    store_doc_info_free(info);
    CHECK(write_file("docs/notes.txt", "Revised notes about the annual budget."));
    CHECK_INT(quarry(&out, "ingest --acl group:finance docs"), 0);
    CHECK_MSG(has(&out, "1 updated") && has(&out, "2 unchanged"), "%s", qr_buf_str(&out));
    info = get_doc("notes.txt");
    CHECK(info && info->nchunks == 1 && info->chunks[0].chunk_id > old_chunk);
    CHECK(strstr(info->chunks[0].text, "annual") != NULL);
    store_doc_info_free(info);

    CHECK_INT(quarry(&out, "delete notes.txt"), 0);
    CHECK(get_doc("notes.txt") == NULL);
    CHECK_INT(quarry(&out, "delete notes.txt"), 1);
    CHECK(has(&out, "notes.txt"));
    CHECK_INT(quarry(&out, "stats"), 0);
    CHECK(has(&out, "documents         2"));
    qr_buf_release(&out);
    cleanup();
}

TEST(bad_input_is_reported_and_counted)
{
    CHECK(make_tmp());
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK(write_file("docs/good.txt", "A good document."));
    CHECK(write_bytes("docs/blob.bin", "\x01\x02\x03\x00\xff binary junk", 18));
    CHECK(write_file("docs/latin1.txt", "caf\xe9 cr\xe8me: not UTF-8 \xc3\xa9"));
    CHECK(write_file("outside.txt", "outside the tree"));
    char link[128];
    snprintf(link, sizeof(link), "%s/docs/escape.txt", tmp);
    CHECK(symlink("../outside.txt", link) == 0);
    CHECK_INT(quarry(&out, "ingest --acl public docs"), 1);
    CHECK_MSG(has(&out, "2 added") && has(&out, "2 failed"), "%s", qr_buf_str(&out));
    CHECK(has(&out, "escape.txt: symbolic link leaves the ingested tree"));
    CHECK(has(&out, "blob.bin:"));
    CHECK(get_doc("escape.txt") == NULL);
    CHECK(get_doc("blob.bin") == NULL);
    store_doc_info *info = get_doc("latin1.txt"); /* invalid UTF-8 repaired, never stored invalid */
    CHECK(info != NULL && info->nchunks == 1);
    CHECK(qr_utf8_valid(info->chunks[0].text, info->chunks[0].text_len));
    CHECK(strstr(info->chunks[0].text, "caf\xEF\xBF\xBD cr\xEF\xBF\xBDme") != NULL);
    store_doc_info_free(info);

    /* usage errors change nothing */
    CHECK_INT(quarry(&out, "ingest --acl 'admins' docs"), 2);
    CHECK(has(&out, "invalid principal 'admins'"));
    CHECK_INT(quarry(&out, "ingest --acl 'user: ava' docs"), 2);
    CHECK_MSG(has(&out, "invalid principal 'user: ava': the name starts or ends with a space"), "%s",
              qr_buf_str(&out));
    /* a name in capitals is stored as login spells it */
    CHECK_INT(quarry(&out, "ingest --acl group:Engineering --acl user:AVA docs/good.txt"), 0);
    info = get_doc("good.txt");
    CHECK(info && info->nacl == 2 && strcmp(info->acl[0], "group:engineering") == 0 &&
          strcmp(info->acl[1], "user:ava") == 0);
    store_doc_info_free(info);
    CHECK_INT(quarry(&out, "ingest"), 2);
    CHECK_INT(quarry(&out, "ingest --bogus docs"), 2);
    CHECK_INT(quarry(&out, "delete"), 2);
    CHECK(has(&out, "give at least one DOC_ID"));
    CHECK_INT(quarry(&out, "stats --bogus"), 2);
    CHECK(has(&out, "unknown argument '--bogus'"));
    CHECK_INT(quarry(&out, "ingest --acl public no-such-folder"), 1);
    CHECK(has(&out, "no-such-folder"));
    qr_buf_release(&out);
    cleanup();
}

TEST(jsonl_ingest_with_malformed_lines)
{
    CHECK(make_tmp());
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK(write_file("corpus.jsonl",
                     "{\"_id\":\"d1\",\"title\":\"Wings\",\"text\":\"Lift on swept wings at high speed.\"}\n"
                     "{\"_id\":\"d2\",\"title\":\"Heat\",\"text\":\"Heat transfer in boundary layers.\","
                     "\"acl\":[\"group:AERO\"],\"metadata\":{\"year\":1962}}\n"
                     "not json at all\n"
                     "{\"title\":\"no id\",\"text\":\"x\"}\n"
                     "{\"_id\":\"d3\",\"text\":\"bad acl\",\"acl\":[\"root\"]}\n"
                     "\n"
                     "{\"_id\":\"d4\",\"text\":\"caf\xc3\xa9 and broken \xff bytes\"}\n"));
    CHECK_INT(quarry(&out, "ingest --acl public --jsonl corpus.jsonl"), 1);
    CHECK_MSG(has(&out, "2 added") && has(&out, "4 failed"), "%s", qr_buf_str(&out));
    CHECK_MSG(has(&out, "corpus.jsonl:7: unable to decode byte"), "%s",
              qr_buf_str(&out)); /* JSON must be UTF-8 */
    CHECK(has(&out, "corpus.jsonl:3:"));
    CHECK(has(&out, "corpus.jsonl:4: expected an object"));
    CHECK(has(&out, "invalid principal 'root'"));
    store_doc_info *info = get_doc("d2");
    CHECK(info != NULL);
    CHECK_STR(info->title, "Heat");
    CHECK(info->nacl == 1 && strcmp(info->acl[0], "group:aero") == 0); /* as login spells the group */
    CHECK(strstr(info->metadata_json, "1962") != NULL);
    store_doc_info_free(info);
    CHECK(get_doc("d4") == NULL);
    CHECK_INT(quarry(&out, "ingest --jsonl missing.jsonl"), 1);
    CHECK(has(&out, "missing.jsonl"));
    qr_buf_release(&out);
    cleanup();
}

TEST(cranfield_loads_then_is_unchanged)
{
    const char *corpus = QUARRY_DATASETS "/cranfield/corpus.jsonl";
    if (access(corpus, R_OK) != 0) {
        printf("skipped: %s not found (set QUARRY_DATASETS when configuring)\n", corpus);
        exit(77);
    }
    CHECK(make_tmp());
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK_INT(quarry(&out, "ingest --acl public --jsonl %s", corpus), 0);
    CHECK_MSG(has(&out, "1400 added"), "%s", qr_buf_str(&out));
    CHECK_INT(quarry(&out, "stats --json"), 0);
    CHECK(has(&out, "\"documents\":1400"));
    CHECK_INT(quarry(&out, "ingest --acl public --jsonl %s", corpus), 0);
    CHECK_MSG(has(&out, "1400 unchanged"), "%s", qr_buf_str(&out));
    qr_buf_release(&out);
    cleanup();
}
