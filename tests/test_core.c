/*
 * Unit tests of core: status codes, buffers, arena, UTF-8 and JSON escaping, logging and its
 * secret scrubbing, time, file reading, atomic file writes and the worker pool.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "tests/harness.h"

TEST(status_names_are_distinct)
{
    CHECK_STR(qr_status_name(QR_OK), "ok");
    CHECK_STR(qr_status_name(QR_EINVAL), "invalid_argument");
    CHECK_STR(qr_status_name(QR_EUNAVAILABLE), "unavailable");
    for (int a = QR_OK; a <= QR_EINTERNAL; a++)
        for (int b = a + 1; b <= QR_EINTERNAL; b++)
            CHECK(strcmp(qr_status_name((qr_status)a), qr_status_name((qr_status)b)) != 0);
    char err[QR_ERR_LEN];
    CHECK_INT(qr_fail(err, QR_ENOTFOUND, "cannot open '%s'", "x.db"), QR_ENOTFOUND);
    CHECK_STR(err, "cannot open 'x.db'");
    CHECK_INT(qr_fail(NULL, QR_EIO, "ignored"), QR_EIO); /* a NULL buffer is allowed */
    /* no room to write: ENOSPC, a quota, a file size limit; other errors stay I/O errors */
    CHECK_INT(qr_errno_status(ENOSPC), QR_ENOSPC);
    CHECK_INT(qr_errno_status(EDQUOT), QR_ENOSPC);
    CHECK_INT(qr_errno_status(EFBIG), QR_ENOSPC);
    CHECK_INT(qr_errno_status(EIO), QR_EIO);
    CHECK_STR(qr_status_name(QR_ENOSPC), "no_space");
    /* long messages are truncated, never overflow */
    char big[2000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    qr_fail(err, QR_EINVAL, "%s", big);
    CHECK_INT(strlen(err), QR_ERR_LEN - 1);
}

TEST(buf_append_and_printf)
{
    qr_buf b;
    qr_buf_init(&b, 1 << 20);
    CHECK_STR(qr_buf_str(&b), "");
    CHECK_INT(qr_buf_len(&b), 0);
    CHECK_INT(qr_buf_puts(&b, "hello"), QR_OK);
    CHECK_INT(qr_buf_putc(&b, ' '), QR_OK);
    CHECK_INT(qr_buf_printf(&b, "%d-%s", 42, "x"), QR_OK);
    CHECK_STR(qr_buf_str(&b), "hello 42-x");
    for (int i = 0; i < 10000; i++)
        CHECK_INT(qr_buf_putc(&b, 'z'), QR_OK);
    CHECK_INT(qr_buf_len(&b), 10 + 10000);
    qr_buf_reset(&b);
    CHECK_STR(qr_buf_str(&b), "");
    CHECK_INT(qr_buf_append(&b, "a\0b", 3), QR_OK); /* binary-safe */
    CHECK_INT(qr_buf_len(&b), 3);
    char *s = qr_buf_detach(&b);
    CHECK(s && s[0] == 'a' && s[1] == '\0' && s[2] == 'b');
    free(s);
    CHECK_INT(qr_buf_len(&b), 0);
    qr_buf_release(&b);
}

TEST(buf_cap_is_enforced_and_leaves_buffer_unchanged)
{
    qr_buf b;
    qr_buf_init(&b, 8);
    CHECK_INT(qr_buf_puts(&b, "12345678"), QR_OK);
    CHECK_INT(qr_buf_putc(&b, '9'), QR_ELIMIT);
    CHECK_STR(qr_buf_str(&b), "12345678");
    qr_buf_reset(&b);
    CHECK_INT(qr_buf_printf(&b, "%s", "0123456789"), QR_ELIMIT);
    CHECK_STR(qr_buf_str(&b), "");
    CHECK_INT(qr_buf_append(&b, "x", SIZE_MAX), QR_ELIMIT); /* no overflow on huge lengths */
    qr_buf_release(&b);
}

TEST(buf_failure_is_sticky_until_reset)
{
    qr_buf b;
    qr_buf_init(&b, 16);
    CHECK_INT(qr_buf_failed(&b), QR_OK);
    CHECK_INT(qr_buf_cap(&b), 16);
    CHECK_INT(qr_buf_puts(&b, "{\"a\":"), QR_OK);
    /* the escaped \u0001 does not fit; the closing brace alone would, and once did, making the
     * invalid line {"a":"abcdefg} */
    CHECK_INT(qr_json_escape(&b, "abcdefg\x01", 8), QR_ELIMIT);
    CHECK_INT(qr_buf_failed(&b), QR_ELIMIT);
    CHECK_INT(qr_buf_len(&b), 13);
    CHECK_INT(qr_buf_putc(&b, '}'), QR_ELIMIT);
    CHECK_INT(qr_buf_puts(&b, ""), QR_ELIMIT);
    CHECK_INT(qr_buf_append(&b, "x", 0), QR_ELIMIT);
    CHECK_INT(qr_buf_printf(&b, "%d", 1), QR_ELIMIT);
    CHECK_STR(qr_buf_str(&b), "{\"a\":\"abcdefg"); /* where the first failure left it */
    CHECK_INT(qr_buf_failed(&b), QR_ELIMIT);
    qr_buf_reset(&b);
    CHECK_INT(qr_buf_failed(&b), QR_OK);
    CHECK_INT(qr_buf_puts(&b, "ok"), QR_OK);
    CHECK_STR(qr_buf_str(&b), "ok");
    /* release and detach forget a failure too */
    CHECK_INT(qr_buf_puts(&b, "0123456789abcdefg"), QR_ELIMIT);
    qr_buf_release(&b);
    CHECK_INT(qr_buf_failed(&b), QR_OK);
    CHECK_INT(qr_buf_puts(&b, "x"), QR_OK);
    CHECK_INT(qr_buf_puts(&b, "0123456789abcdefg"), QR_ELIMIT);
    char *s = qr_buf_detach(&b);
    CHECK_STR(s, "x");
    free(s);
    CHECK_INT(qr_buf_failed(&b), QR_OK);
    CHECK_INT(qr_buf_puts(&b, "y"), QR_OK);
    /* wipe zeroes and resets */
    CHECK_INT(qr_buf_puts(&b, "0123456789abcdefg"), QR_ELIMIT);
    qr_buf_wipe(&b);
    CHECK_INT(qr_buf_len(&b), 0);
    CHECK_STR(qr_buf_str(&b), "");
    CHECK_INT(qr_buf_failed(&b), QR_OK);
    qr_buf_release(&b);
}

TEST(arena_alignment_cap_and_reset)
{
    qr_arena a;
    qr_arena_init(&a, 1 << 20);
    for (int i = 1; i < 200; i++) {
        void *p = qr_arena_alloc(&a, (size_t)i);
        CHECK(p != NULL);
        CHECK_INT((uintptr_t)p % 16, 0);
        memset(p, 0xAB, (size_t)i);
    }
    char *s = qr_arena_strdup(&a, "quarry");
    CHECK_STR(s, "quarry");
    CHECK_STR(qr_arena_printf(&a, "%s-%d", "gen", 7), "gen-7");
    CHECK_STR(qr_arena_strndup(&a, "abcdef", 3), "abc");
    int *z = qr_arena_calloc(&a, 100, sizeof(int));
    CHECK(z != NULL);
    for (int i = 0; i < 100; i++)
        CHECK_INT(z[i], 0);
    CHECK(qr_arena_calloc(&a, SIZE_MAX / 2, 4) == NULL); /* multiplication overflow */
    CHECK(qr_arena_alloc(&a, 2 << 20) == NULL);          /* over the cap */
    size_t used = qr_arena_used(&a);
    CHECK(used > 0);
    void *big = qr_arena_alloc(&a, 100000); /* larger than a block: gets its own */
    CHECK(big != NULL);
    memset(big, 1, 100000);
    qr_arena_reset(&a);
    CHECK_INT(qr_arena_used(&a), 0);
    CHECK(qr_arena_alloc(&a, 64) != NULL);
    qr_arena_release(&a);
    CHECK_INT(qr_arena_used(&a), 0);
}

TEST(arena_total_cap_counts_every_allocation)
{
    qr_arena a;
    qr_arena_init(&a, 1024);
    int n = 0;
    while (qr_arena_alloc(&a, 100))
        n++;
    CHECK_INT(n, 1024 / 112); /* 100 rounds up to 112 */
    qr_arena_release(&a);
}

TEST(utf8_validation)
{
    CHECK(qr_utf8_valid("", 0));
    CHECK(qr_utf8_valid("plain ascii", 11));
    CHECK(qr_utf8_valid("caf\xC3\xA9 \xE6\x9D\xB1 \xF0\x9F\x99\x82", 14));
    CHECK(!qr_utf8_valid("\xC3", 1));             /* truncated */
    CHECK(!qr_utf8_valid("\xC0\xAF", 2));         /* overlong '/' */
    CHECK(!qr_utf8_valid("\xE0\x80\xAF", 3));     /* overlong */
    CHECK(!qr_utf8_valid("\xED\xA0\x80", 3));     /* surrogate U+D800 */
    CHECK(!qr_utf8_valid("\xF4\x90\x80\x80", 4)); /* above U+10FFFF */
    CHECK(!qr_utf8_valid("\x80", 1));             /* stray continuation */
    CHECK(!qr_utf8_valid("\xFF", 1));
    CHECK(qr_utf8_valid("\xF4\x8F\xBF\xBF", 4)); /* U+10FFFF itself */
    CHECK(qr_utf8_valid("\xEF\xBF\xBD", 3));     /* U+FFFD */
    /* ASCII runs are checked eight bytes at a time: a bad or truncated sequence is found at any
     * offset and after runs of any length, and a good one is accepted there */
    for (size_t at = 0; at < 24; at++) {
        char t[32];
        memset(t, 'a', sizeof(t));
        memcpy(t + at, "\xC3\xA9", 2);
        CHECK(qr_utf8_valid(t, sizeof(t)));
        CHECK(qr_utf8_valid(t, at + 2));
        CHECK(!qr_utf8_valid(t, at + 1)); /* cut inside the character */
        t[at] = (char)0xFF;
        CHECK(!qr_utf8_valid(t, sizeof(t)));
        t[at] = (char)0x80;
        CHECK(!qr_utf8_valid(t, sizeof(t)));
    }
}

TEST(json_escape_handles_controls_quotes_and_bad_utf8)
{
    qr_buf b;
    qr_buf_init(&b, 4096);
    const char in[] = "a\"b\\c\n\t\x01\x7f caf\xC3\xA9 \xFF end";
    CHECK_INT(qr_json_escape(&b, in, sizeof(in) - 1), QR_OK);
    CHECK_STR(qr_buf_str(&b), "\"a\\\"b\\\\c\\n\\t\\u0001\\u007f caf\xC3\xA9 \xEF\xBF\xBD end\"");
    CHECK(qr_utf8_valid(qr_buf_str(&b), qr_buf_len(&b)));
    qr_buf_release(&b);
}

/* Captures log output in a temporary file and returns its contents (static buffer). */
static char log_text[1 << 17];
static FILE *log_file;

static void log_capture_begin(void)
{
    log_file = tmpfile();
    qr_log_set_stream(log_file);
}

static const char *log_capture_end(void)
{
    qr_log_set_stream(NULL);
    rewind(log_file);
    size_t n = fread(log_text, 1, sizeof(log_text) - 1, log_file);
    log_text[n] = '\0';
    fclose(log_file);
    return log_text;
}

TEST(log_levels_and_components)
{
    char err[QR_ERR_LEN];
    CHECK_OK(qr_log_configure(QR_LOG_WARN, QR_LOG_TEXT, "auth=debug,index=error", err), err);
    CHECK(!qr_log_enabled("core", QR_LOG_INFO));
    CHECK(qr_log_enabled("core", QR_LOG_WARN));
    CHECK(qr_log_enabled("auth", QR_LOG_DEBUG));
    CHECK(!qr_log_enabled("auth", QR_LOG_TRACE));
    CHECK(!qr_log_enabled("index", QR_LOG_WARN));
    log_capture_begin();
    qr_log(QR_LOG_INFO, "core", "hidden");
    qr_log(QR_LOG_DEBUG, "auth", "visible %d", 1);
    qr_log(QR_LOG_WARN, "index", "hidden too");
    const char *text = log_capture_end();
    CHECK(strstr(text, "visible 1") != NULL);
    CHECK(strstr(text, "[auth]") != NULL);
    CHECK(strstr(text, "hidden") == NULL);
    /* bad settings are refused and change nothing */
    CHECK_INT(qr_log_configure(QR_LOG_INFO, QR_LOG_TEXT, "auth", err), QR_EINVAL);
    CHECK_INT(qr_log_configure(QR_LOG_INFO, QR_LOG_TEXT, "auth=loud", err), QR_EINVAL);
    CHECK(strstr(err, "loud") != NULL);
    CHECK(qr_log_enabled("auth", QR_LOG_DEBUG));
    qr_log_level level;
    CHECK_INT(qr_log_level_parse("WARN", &level, err), QR_OK);
    CHECK_INT(level, QR_LOG_WARN);
    CHECK_INT(qr_log_level_parse("verbose", &level, err), QR_EINVAL);
    CHECK_OK(qr_log_configure(QR_LOG_INFO, QR_LOG_TEXT, "", err), err);
}

TEST(log_json_lines_are_valid_and_one_per_message)
{
    char err[QR_ERR_LEN];
    CHECK_OK(qr_log_configure(QR_LOG_INFO, QR_LOG_JSON, NULL, err), err);
    log_capture_begin();
    qr_log(QR_LOG_INFO, "api", "line one\nforged \"quote\"");
    const char *text = log_capture_end();
    CHECK_OK(qr_log_configure(QR_LOG_INFO, QR_LOG_TEXT, NULL, err), err);
    CHECK(strncmp(text, "{\"ts\":\"", 7) == 0);
    CHECK(strstr(text, "\"level\":\"info\"") != NULL);
    CHECK(strstr(text, "\"component\":\"api\"") != NULL);
    CHECK(strstr(text, "\"msg\":\"line one\\nforged \\\"quote\\\"\"}") != NULL);
    CHECK_INT(strchr(text, '\n') - text + 1, (long long)strlen(text)); /* exactly one line */
}

TEST(log_json_line_of_a_long_escaped_message_is_whole)
{
    char err[QR_ERR_LEN];
    CHECK_OK(qr_log_configure(QR_LOG_INFO, QR_LOG_JSON, NULL, err), err);
    /* 5000 control characters escape to 30000 bytes: once over the line's cap, the line was cut
     * without its closing brace and newline, and the next record ran into it */
    char msg[5001];
    memset(msg, '\x01', 5000);
    msg[5000] = '\0';
    log_capture_begin();
    qr_log(QR_LOG_INFO, "api", "%s", msg);
    qr_log(QR_LOG_INFO, "api", "next");
    const char *text = log_capture_end();
    CHECK_OK(qr_log_configure(QR_LOG_INFO, QR_LOG_TEXT, NULL, err), err);
    const char *nl = strchr(text, '\n');
    CHECK(nl && strncmp(text, "{\"ts\":\"", 7) == 0 && strncmp(nl - 2, "\"}", 2) == 0);
    size_t escapes = 0;
    for (const char *p = text; (p = strstr(p, "\\u0001")) && p < nl; p += 6)
        escapes++;
    CHECK_INT(escapes, 5000);
    CHECK(strncmp(nl + 1, "{\"ts\":\"", 7) == 0 && strstr(nl + 1, "\"msg\":\"next\"}\n") != NULL);
    CHECK_INT(strchr(nl + 1, '\n') - text + 1, (long long)strlen(text)); /* exactly two lines */
}

TEST(log_text_lines_cannot_be_forged_with_newlines)
{
    log_capture_begin();
    qr_log(QR_LOG_ERROR, "api", "user said: x\n2026-01-01 error [auth] fake");
    const char *text = log_capture_end();
    CHECK_INT(strchr(text, '\n') - text + 1, (long long)strlen(text));
}

TEST(log_scrubs_secrets)
{
    struct {
        const char *in, *secret;
    } cases[] = {
        {"bind failed for password=hunter2 at host", "hunter2"},
        {"Authorization: Bearer sk-live-abcdef123", "sk-live-abcdef123"},
        {"{\"api_key\":\"k-123456\",\"model\":\"m\"}", "k-123456"},
        {"ldap.bind_password = s3cr3t!", "s3cr3t!"},
        {"token: eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"},
        {"url?user=bob&passwd=topsecret&x=1", "topsecret"},
        {"API-KEY: azurekey987", "azurekey987"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char line[256];
        snprintf(line, sizeof(line), "%s", cases[i].in);
        qr_log_scrub(line);
        CHECK_MSG(strstr(line, cases[i].secret) == NULL, "secret survived: %s", line);
        CHECK_MSG(strstr(line, "***") != NULL, "no mask in: %s", line);
    }
    char plain[] = "indexed 12 documents for user alice in 3 ms";
    qr_log_scrub(plain);
    CHECK_STR(plain, "indexed 12 documents for user alice in 3 ms");
    /* and through qr_log itself */
    log_capture_begin();
    qr_log(QR_LOG_ERROR, "auth", "login failed: password=correct-horse");
    const char *text = log_capture_end();
    CHECK(strstr(text, "correct-horse") == NULL);
}

TEST(time_is_monotonic)
{
    uint64_t a = qr_now_ns();
    usleep(2000);
    uint64_t b = qr_now_ns();
    CHECK(b > a);
    CHECK(b - a >= 1000000u);
    CHECK(qr_wall_ms() > 1700000000000LL);
    char ts[40];
    qr_wall_iso8601(ts, sizeof(ts));
    CHECK_INT(strlen(ts), 24);
    CHECK(ts[10] == 'T' && ts[23] == 'Z');
}

static bool probe_count_to_two(void *ctx)
{
    int *calls = ctx;
    return ++*calls >= 2;
}

TEST(cancel_tokens)
{
    char err[QR_ERR_LEN] = "";
    CHECK_INT(qr_cancel_check(NULL, err), QR_OK); /* no token: nothing to stop */
    CHECK(!qr_cancel_cancelled(NULL));
    qr_cancel c;
    qr_cancel_init(&c);
    CHECK_INT(qr_cancel_check(&c, err), QR_OK);
    /* a deadline in the future holds; one in the past fails, naming its length, and keeps failing */
    qr_cancel_set_deadline(&c, qr_now_ns(), 600000);
    CHECK_INT(qr_cancel_check(&c, err), QR_OK);
    qr_cancel_set_deadline(&c, qr_now_ns() - 5000000, 3);
    CHECK_INT(qr_cancel_check(&c, err), QR_ETIMEOUT);
    CHECK(strstr(err, "deadline of 3 ms") != NULL);
    CHECK_INT(qr_cancel_check(&c, err), QR_ETIMEOUT);
    CHECK(!qr_cancel_cancelled(&c)); /* a deadline is not the flag */
    qr_cancel_set_deadline(&c, 0, 0);
    CHECK_INT(qr_cancel_check(&c, err), QR_OK);
    /* the flag wins over the deadline and stays up */
    qr_cancel_cancel(&c);
    CHECK(qr_cancel_cancelled(&c));
    CHECK_INT(qr_cancel_check(&c, err), QR_ECANCELED);
    CHECK(strstr(err, "cancelled") != NULL);
    /* a probe runs at most once per interval and raises the flag when it answers yes */
    int calls = 0;
    qr_cancel_init(&c);
    qr_cancel_set_probe(&c, probe_count_to_two, &calls, 600000);
    CHECK_INT(qr_cancel_check(&c, err), QR_OK);
    CHECK_INT(qr_cancel_check(&c, err), QR_OK);
    CHECK_INT(calls, 1); /* the second check came before the interval was over */
    qr_cancel_set_probe(&c, probe_count_to_two, &calls, 0);
    CHECK_INT(qr_cancel_check(&c, err), QR_ECANCELED);
    CHECK(calls == 2 && qr_cancel_cancelled(&c));
    CHECK_INT(qr_cancel_check(&c, err), QR_ECANCELED);
    CHECK_INT(calls, 2); /* once cancelled, the probe is not asked again */
}

TEST(read_file_limits_and_errors)
{
    char path[] = "/tmp/quarry-test-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK_INT(write(fd, "0123456789", 10), 10);
    close(fd);
    char err[QR_ERR_LEN];
    char *data = NULL;
    size_t len = 0;
    CHECK_OK(qr_read_file(path, 10, &data, &len, err), err);
    CHECK_STR(data, "0123456789");
    CHECK_INT(len, 10);
    free(data);
    CHECK_INT(qr_read_file(path, 9, &data, &len, err), QR_ELIMIT);
    CHECK(data == NULL);
    CHECK(strstr(err, path) != NULL);
    unlink(path);
    CHECK_INT(qr_read_file(path, 100, &data, &len, err), QR_ENOTFOUND);
    CHECK_INT(qr_read_file("/tmp", 100, &data, &len, err), QR_EINVAL);
}

/* Files of a directory other than . and .., counted; names joined into out. */
static int dir_entries(const char *dir, char *out, size_t n)
{
    DIR *d = opendir(dir);
    int count = 0;
    out[0] = '\0';
    for (struct dirent *e; d && (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        count++;
        strncat(out, e->d_name, n - strlen(out) - 1);
        strncat(out, " ", n - strlen(out) - 1);
    }
    if (d)
        closedir(d);
    return count;
}

TEST(file_write_replaces_atomically_and_leaves_no_temporary)
{
    char dir[] = "/tmp/quarry-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256], names[512], err[QR_ERR_LEN];
    snprintf(path, sizeof(path), "%s/state", dir);
    char *data = NULL;
    size_t len = 0;

    CHECK_OK(qr_file_write(path, "first", 5, 0600, true, err), err);
    CHECK_OK(qr_file_write(path, "second", 6, 0600, true, err), err);
    CHECK_OK(qr_read_file(path, 100, &data, &len, err), err);
    CHECK_STR(data, "second");
    free(data);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    /* create-only: an existing file is kept and reported */
    CHECK_INT(qr_file_write(path, "third", 5, 0600, false, err), QR_EEXIST);
    CHECK_OK(qr_read_file(path, 100, &data, &len, err), err);
    CHECK_STR(data, "second");
    free(data);
    CHECK_INT(dir_entries(dir, names, sizeof(names)), 1);

    /* a streamed writer: temporary name beside the target, then the same finish */
    int fd = -1;
    char *tmp = NULL;
    CHECK_OK(qr_file_temp(path, 0600, &fd, &tmp, err), err);
    CHECK(strncmp(tmp, dir, strlen(dir)) == 0 && strstr(tmp, "/.state.") && strstr(tmp, ".tmp"));
    CHECK_OK(qr_write_all(fd, "streamed", 8, tmp, err), err);
    CHECK_OK(qr_file_finish(fd, tmp, path, true, err), err);
    free(tmp);
    CHECK_OK(qr_read_file(path, 100, &data, &len, err), err);
    CHECK_STR(data, "streamed");
    free(data);
    CHECK_INT(dir_entries(dir, names, sizeof(names)), 1);

    /* a failure is reported with the path, and the target is as it was */
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/no/such/file", dir);
    CHECK_INT(qr_file_write(missing, "x", 1, 0600, true, err), QR_EIO);
    CHECK(strstr(err, missing) != NULL);
    char sub[300];
    snprintf(sub, sizeof(sub), "%s/state/x", dir); /* a file as the directory */
    CHECK_INT(qr_file_write(sub, "x", 1, 0600, true, err), QR_EIO);
    CHECK_INT(dir_entries(dir, names, sizeof(names)), 1);

    unlink(path);
    rmdir(dir);
}

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static int pool_sum;

static void pool_add(void *arg)
{
    usleep(100);
    pthread_mutex_lock(&pool_lock);
    pool_sum += (int)(intptr_t)arg;
    pthread_mutex_unlock(&pool_lock);
}

TEST(pool_runs_every_task)
{
    char err[QR_ERR_LEN];
    qr_pool *pool = qr_pool_new(4, 1000, err);
    CHECK_MSG(pool != NULL, "%s", err);
    pool_sum = 0;
    for (int i = 1; i <= 500; i++)
        CHECK_INT(qr_pool_submit(pool, pool_add, (void *)(intptr_t)i), QR_OK);
    qr_pool_wait(pool);
    CHECK_INT(pool_sum, 500 * 501 / 2);
    for (int i = 1; i <= 10; i++)
        CHECK_INT(qr_pool_submit(pool, pool_add, (void *)(intptr_t)i), QR_OK);
    qr_pool_free(pool); /* drains the queue before stopping */
    CHECK_INT(pool_sum, 500 * 501 / 2 + 55);
    qr_pool_free(NULL);
    CHECK(qr_pool_new(0, 10, err) == NULL);
    CHECK(strstr(err, "threads") != NULL);
}

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static int gate_entered;

static void pool_block(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&gate_lock);
    gate_entered++;
    pthread_cond_broadcast(&gate_cond);
    while (!gate_open)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
}

TEST(pool_queue_is_bounded)
{
    char err[QR_ERR_LEN];
    qr_pool *pool = qr_pool_new(1, 2, err);
    CHECK_MSG(pool != NULL, "%s", err);
    gate_open = false;
    gate_entered = 0;
    CHECK_INT(qr_pool_submit(pool, pool_block, NULL), QR_OK);
    /* wait until the only worker holds the first task, so the queue is empty */
    pthread_mutex_lock(&gate_lock);
    while (gate_entered == 0)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    int ok = 0, limited = 0;
    for (int i = 0; i < 10; i++) {
        qr_status st = qr_pool_submit(pool, pool_block, NULL);
        ok += st == QR_OK;
        limited += st == QR_ELIMIT;
    }
    CHECK_INT(ok, 2);
    CHECK_INT(limited, 8);
    pthread_mutex_lock(&gate_lock);
    gate_open = true;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
    qr_pool_free(pool);
}

/* logrotate moves a log away; reopening points the same descriptor at a new file with the old
 * one's mode, and later writes land there, whole. */
TEST(reopen_append_follows_a_moved_log)
{
    char err[QR_ERR_LEN], path[64], moved[80];
    snprintf(path, sizeof(path), "/tmp/quarry-reopen-XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    fd = open(path, O_WRONLY | O_APPEND);
    CHECK(fd >= 0);
    CHECK(fchmod(fd, 0604) == 0);
    CHECK(write(fd, "one\n", 4) == 4);
    snprintf(moved, sizeof(moved), "%s.1", path);
    CHECK(rename(path, moved) == 0);
    CHECK_OK(qr_reopen_append(fd, path, err), err);
    CHECK(write(fd, "two\n", 4) == 4);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    CHECK_INT(st.st_mode & 07777, 0604);
    char *a = NULL, *b = NULL;
    CHECK_OK(qr_read_file(moved, 1024, &a, NULL, err), err);
    CHECK_OK(qr_read_file(path, 1024, &b, NULL, err), err);
    CHECK_STR(a, "one\n");
    CHECK_STR(b, "two\n");
    /* not moved: the same file goes on */
    CHECK_OK(qr_reopen_append(fd, path, err), err);
    CHECK(write(fd, "three\n", 6) == 6);
    free(b);
    CHECK_OK(qr_read_file(path, 1024, &b, NULL, err), err);
    CHECK_STR(b, "two\nthree\n");
    /* a directory that is gone: an error naming the path, the old file still written */
    char gone[96];
    snprintf(gone, sizeof(gone), "%s.d/x.log", path);
    CHECK_INT(qr_reopen_append(fd, gone, err), QR_EIO);
    CHECK(strstr(err, gone) != NULL);
    CHECK(write(fd, "four\n", 5) == 5);
    close(fd);
    free(a);
    free(b);
    unlink(path);
    unlink(moved);
}
