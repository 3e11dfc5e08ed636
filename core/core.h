/*
 * core: the pieces every quarry module stands on. Status codes with caller-supplied message
 * buffers, logging (levels, text or JSON lines, per-component levels, secret scrubbing), the
 * configuration table (file, then environment, then command line), growable buffers with size
 * caps, a per-request arena, monotonic time, cancellation tokens with deadlines, UTF-8 checks,
 * JSON string escaping and a small worker pool. core depends on libc, pthreads and jansson (for the JSON
 * config file) only.
 */
#ifndef QUARRY_CORE_H
#define QUARRY_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config_keys.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QUARRY_VERSION "0.1.0"

/* ---- status codes ------------------------------------------------------------------------ */

/* Every fallible function returns a qr_status and, when it fails, writes a human-readable
 * reason into a caller-supplied buffer of QR_ERR_LEN bytes (which may be NULL). */
#define QR_ERR_LEN 512

typedef enum {
    QR_OK = 0,
    QR_EINVAL,       /* bad argument or malformed input */
    QR_ENOMEM,       /* allocation failed */
    QR_ELIMIT,       /* a size, depth or count limit was reached */
    QR_EIO,          /* file or network I/O failed */
    QR_ENOTFOUND,    /* the named thing does not exist */
    QR_EEXIST,       /* the named thing already exists */
    QR_EPERM,        /* the caller may not do this */
    QR_EAUTH,        /* authentication failed */
    QR_EUNAVAILABLE, /* a dependency (LDAP, backend) cannot be reached */
    QR_ETIMEOUT,     /* a deadline passed */
    QR_ECANCELED,    /* the work was called off (its client went away, the server is stopping) */
    QR_ENOTIMPL,     /* not built yet */
    QR_ENOSPC,       /* the file system is full (or a file size or quota limit was reached) */
    QR_EINTERNAL,    /* a bug or an unexpected library failure */
} qr_status;

/* QR_ENOSPC for an errno that means no room to write (ENOSPC, EDQUOT, EFBIG), else QR_EIO. */
qr_status qr_errno_status(int e);

/* Whether a write to path may have failed for want of room when its errno is lost (SQLite
 * reports an I/O error without it): the file system holding path has under 1 MiB free, or path
 * (or its SQLite WAL, path-wal) is within 1 MiB of this process's file size limit (RLIMIT_FSIZE). */
bool qr_fs_full(const char *path);

/* Stable snake_case name of a status ("invalid_argument"), for logs and HTTP error codes. */
const char *qr_status_name(qr_status st);

/* Formats a message into err (if not NULL, truncated to QR_ERR_LEN) and returns st, so that
 * a failure reads `return qr_fail(err, QR_EINVAL, "bad key '%s'", key);`. */
qr_status qr_fail(char *err, qr_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- time -------------------------------------------------------------------------------- */

/* Monotonic clock in nanoseconds (CLOCK_MONOTONIC); never goes backwards. */
uint64_t qr_now_ns(void);
/* Wall-clock time in milliseconds since the Unix epoch. */
int64_t qr_wall_ms(void);
/* Writes the current UTC time as "2026-11-26T13:31:21.123Z" into out (at least 32 bytes). */
void qr_wall_iso8601(char *out, size_t len);

/* ---- cancellation and deadlines (cancel.c) ---------------------------------------------- */

/*
 * A cancellation token: the deadline of one piece of work and a flag that any thread may raise,
 * checked by the work's own loops (retrieval hands it to the store's progress handler and to the
 * BM25 and vector loops). An optional probe asks the outside world -- the HTTP server: has the
 * client closed its connection? -- at most once per probe interval, from the checking thread; a
 * probe that answers yes raises the flag. Callers keep the struct (a request holds one), but its
 * fields are private to core/cancel.c.
 *
 * Threads: qr_cancel_cancel and qr_cancel_cancelled from any thread; qr_cancel_check from the one
 * thread doing the work (it runs the probe and keeps the probe's schedule). Cost of a check: a
 * clock read and an atomic load, plus the probe when it is due.
 */
typedef bool (*qr_cancel_probe_fn)(void *ctx);

typedef struct {
    uint64_t deadline_ns_; /* qr_now_ns() clock; 0: none */
    uint64_t timeout_ms_;  /* what the deadline was set from, for messages */
    int cancelled_;        /* read and written with __atomic builtins */
    qr_cancel_probe_fn probe_;
    void *probe_ctx_;
    uint64_t probe_every_ns_, next_probe_ns_;
} qr_cancel;

/* No deadline, no probe, not cancelled. */
void qr_cancel_init(qr_cancel *c);
/* The work must end timeout_ms after start_ns (a qr_now_ns() time); timeout_ms 0: no deadline. */
void qr_cancel_set_deadline(qr_cancel *c, uint64_t start_ns, uint64_t timeout_ms);
/* Asks fn(ctx) at most every every_ms from qr_cancel_check (fn NULL: no probe); fn returning true
 * cancels the token. fn runs on the checking thread and must be cheap (a poll(2) with no wait). */
void qr_cancel_set_probe(qr_cancel *c, qr_cancel_probe_fn fn, void *ctx, uint64_t every_ms);
/* Raises the flag; it stays up. Any thread. */
void qr_cancel_cancel(qr_cancel *c);
/* Whether the flag is up (the deadline and the probe are not consulted). Any thread; NULL: false. */
bool qr_cancel_cancelled(const qr_cancel *c);
/* QR_OK while the work may go on (always for NULL); QR_ECANCELED once the flag is up (the probe
 * is asked first when due); QR_ETIMEOUT once the deadline passed, with a message naming it. Once
 * it failed it keeps failing. */
qr_status qr_cancel_check(qr_cancel *c, char *err);

/* ---- growable buffer with a size cap ----------------------------------------------------- */

/* A byte buffer that is always NUL-terminated and never grows past `cap` bytes of content,
 * so hostile input cannot grow it without bound. Like curl's dynbuf, a failure is sticky: once
 * an append fails (over the cap, out of memory), every later append fails with the same status
 * until qr_buf_reset or qr_buf_release, so a capped line can never lose a piece in the middle
 * and still be emitted as if whole. Callers keep the struct (on the stack or in their own
 * structs), so its fields are visible, but they are private to core/buf.c: read a buffer only
 * through the functions below. */
typedef struct {
    char *data_;
    size_t len_;
    size_t alloc_;
    size_t cap_;
    qr_status failed_;
} qr_buf;

/* Initialises an empty buffer (no allocation) whose content may not exceed cap bytes. */
void qr_buf_init(qr_buf *b, size_t cap);
/* Frees the contents; the buffer is empty, no longer failed, and reusable afterwards. */
void qr_buf_release(qr_buf *b);
/* Empties the buffer and forgets a failure, without freeing its memory. */
void qr_buf_reset(qr_buf *b);
/* Appends n bytes. Returns QR_ELIMIT past the cap, QR_ENOMEM on allocation failure, or the
 * status of an earlier failed append (see qr_buf_failed); on error the contents are unchanged
 * and the buffer stays failed. */
qr_status qr_buf_append(qr_buf *b, const void *p, size_t n);
qr_status qr_buf_puts(qr_buf *b, const char *s);
qr_status qr_buf_putc(qr_buf *b, char c);
qr_status qr_buf_printf(qr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
qr_status qr_buf_vprintf(qr_buf *b, const char *fmt, va_list ap);
/* QR_OK while every append since the last init, reset or release succeeded; otherwise the
 * status of the first one that failed. Check it before emitting a buffer built by appends whose
 * statuses were not checked one by one: the contents then stop where the first failure was. */
qr_status qr_buf_failed(const qr_buf *b);
/* Contents as a string: "" for an empty buffer, never NULL. Valid until the next change. */
const char *qr_buf_str(const qr_buf *b);
size_t qr_buf_len(const qr_buf *b);
/* The most bytes of content the buffer accepts, as given to qr_buf_init. */
size_t qr_buf_cap(const qr_buf *b);
/* Overwrites every byte the buffer holds (content and spare room) with zeros, then resets it,
 * for contents that must not linger in freed memory (credentials). Copies left behind by an
 * earlier growth are not reached: size the buffer up front for such contents. */
void qr_buf_wipe(qr_buf *b);
/* Hands the contents to the caller (free() them) and empties the buffer, which is no longer
 * failed. Returns NULL on allocation failure for an empty buffer. */
char *qr_buf_detach(qr_buf *b);

/* ---- arena ------------------------------------------------------------------------------- */

/* A per-request arena: many small allocations freed together. Blocks grow geometrically; the
 * total is capped. Fields are private to core. */
typedef struct qr_arena_block qr_arena_block;
typedef struct {
    qr_arena_block *head;
    size_t used_total;
    size_t cap;
    size_t next_block;
} qr_arena;

void qr_arena_init(qr_arena *a, size_t cap);
/* Returns 16-byte aligned, uninitialised memory, or NULL when the cap is reached or
 * allocation fails (the arena is unchanged then). n == 0 returns a valid unique pointer. */
void *qr_arena_alloc(qr_arena *a, size_t n);
/* Like qr_arena_alloc but zeroed; NULL on overflow of n * size. */
void *qr_arena_calloc(qr_arena *a, size_t n, size_t size);
char *qr_arena_strdup(qr_arena *a, const char *s);
char *qr_arena_strndup(qr_arena *a, const char *s, size_t n);
char *qr_arena_printf(qr_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Bytes handed out so far. */
size_t qr_arena_used(const qr_arena *a);
/* Frees everything but the first block, which is kept for reuse. */
void qr_arena_reset(qr_arena *a);
/* Frees everything. */
void qr_arena_release(qr_arena *a);

/* ---- UTF-8 and JSON text ----------------------------------------------------------------- */

/* True when s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF). */
bool qr_utf8_valid(const char *s, size_t n);
/* Length of the well-formed UTF-8 sequence at s (n >= 1 bytes there), 0 when it is malformed:
 * the table of well-formed sequences in Unicode 15, section 3.9 (D92). */
size_t qr_utf8_seq_len(const unsigned char *s, size_t n);
/* The value of hex digit c (0-9, a-f, A-F), or -1 for any other character. */
int qr_hex_digit(int c);
/* Appends s[0..n) as a JSON string literal with quotes; invalid UTF-8 becomes U+FFFD and
 * control characters are escaped. */
qr_status qr_json_escape(qr_buf *out, const char *s, size_t n);

/* ---- logging ----------------------------------------------------------------------------- */

typedef enum {
    QR_LOG_TRACE = 0,
    QR_LOG_DEBUG,
    QR_LOG_INFO,
    QR_LOG_WARN,
    QR_LOG_ERROR,
    QR_LOG_OFF,
} qr_log_level;

typedef enum { QR_LOG_TEXT = 0, QR_LOG_JSON } qr_log_format;

/* Parses "trace".."error" or "off". Returns QR_EINVAL with a message for anything else. */
qr_status qr_log_level_parse(const char *s, qr_log_level *out, char *err);
const char *qr_log_level_name(qr_log_level level);

/* Sets the default level, the format and per-component levels given as
 * "component=level,component=level" (e.g. "auth=debug,index=warn"). Thread-safe; on error
 * nothing changes. */
qr_status qr_log_configure(qr_log_level level, qr_log_format format, const char *components, char *err);
/* Where log lines go (default stderr). The stream is not closed by core. */
void qr_log_set_stream(void *file_stream);
/* Sends log lines to the file at path (appended; created 0640) instead of stderr. Called once
 * more with the same path it does nothing. */
qr_status qr_log_open_file(const char *path, char *err);
/* Reopens log.file at its path (after logrotate moved it); nothing without a log file. */
qr_status qr_log_reopen(char *err);
/* Points the open descriptor fd, an append-only log, at a new file at path: the file there, or
 * one created with fd's current mode when there is none (logrotate moved the old one away).
 * Atomic for writers using fd (dup2): a write lands in the old file or the new, whole. On error
 * fd still writes to the old file. */
qr_status qr_reopen_append(int fd, const char *path, char *err);
/* True when a message of this level from this component would be written. */
bool qr_log_enabled(const char *component, qr_log_level level);
/* Writes one line. Values that look like secrets (password=..., token=..., Authorization:
 * Bearer ..., api_key=...) are masked before the line is written, whatever the caller passed. */
void qr_log(qr_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void qr_logv(qr_log_level level, const char *component, const char *fmt, va_list ap);
/* Masks secret values in s in place (the scrubbing qr_log applies); exposed for tests and for
 * modules that log third-party text. */
void qr_log_scrub(char *s);

/* ---- configuration ----------------------------------------------------------------------- */

typedef enum { QR_CFG_STRING = 0, QR_CFG_INT, QR_CFG_DOUBLE, QR_CFG_BOOL } qr_cfg_type;

/* Where a value came from, lowest to highest precedence. */
typedef enum {
    QR_CFG_SRC_DEFAULT = 0,
    QR_CFG_SRC_FILE,
    QR_CFG_SRC_ENV,
    QR_CFG_SRC_CLI,
} qr_cfg_source;

/* The reload column of config_keys.h: whether `quarry serve` applies a changed value on SIGHUP
 * (QR_RELOAD) or reports that it needs a restart (QR_RESTART). */
#define QR_RELOAD  true
#define QR_RESTART false

/* One configuration key's description, from the table in config.c. */
typedef struct {
    const char *name; /* "section.key" */
    qr_cfg_type type;
    const char *default_str; /* default as text ("" for an empty string) */
    double min, max;         /* for numbers; ignored when min > max */
    const char *choices;     /* for strings: "a|b|c" or NULL for free text */
    bool secret;             /* masked by qr_config_dump and never logged */
    bool reload;             /* QR_RELOAD: a running server applies a new value on SIGHUP */
    const char *help;
    size_t offset; /* where the value lives in qr_settings */
} qr_cfg_key;

/* The effective values, one field per key of config_keys.h, named section_key
 * (ldap.uri is ldap_uri): strings, int64_t, double or bool by the key's type. Read it through
 * qr_config_settings, so that a misspelt key or a wrong type fails to compile. */
#define QR_CFG_CTYPE_STRING                   const char *
#define QR_CFG_CTYPE_INT                      int64_t
#define QR_CFG_CTYPE_DOUBLE                   double
#define QR_CFG_CTYPE_BOOL                     bool
#define QR_CFG_FIELD(type, section, key, ...) QR_CFG_CTYPE_##type section##_##key;
typedef struct {
    QR_CONFIG_KEYS(QR_CFG_FIELD)
} qr_settings;
#undef QR_CFG_FIELD

/* The effective configuration. Values are owned by the struct (qr_config_release frees). */
typedef struct qr_config qr_config;

/* Returns the whole table and its length (for documentation and `quarry config`). */
const qr_cfg_key *qr_config_keys(size_t *count);

/* Allocates a configuration holding the defaults. Returns NULL on allocation failure. */
qr_config *qr_config_new(void);
void qr_config_free(qr_config *cfg);

/* Loads a JSON config file: an object of sections, each an object of keys
 * ({"ldap": {"uri": "ldap://..."}}); dotted keys at the top level ("ldap.uri": ...) are
 * accepted too. Unknown keys, wrong types and out-of-range values are errors naming the key
 * and the file; on error the configuration is unchanged. */
qr_status qr_config_load_file(qr_config *cfg, const char *path, char *err);
/* Applies QUARRY_SECTION_KEY variables from the environment (ldap.bind_password is
 * QUARRY_LDAP_BIND_PASSWORD). envp NULL means the process environment. Same error rules. */
qr_status qr_config_load_env(qr_config *cfg, char *const *envp, char *err);
/* Sets one key from text ("section.key", "value") with the given source. Validates. */
qr_status qr_config_set(qr_config *cfg, const char *name, const char *value, qr_cfg_source src, char *err);
/* Parses "section.key=value" (a command-line --set argument). */
qr_status qr_config_set_arg(qr_config *cfg, const char *assignment, char *err);

/* The typed values (qr_config_settings(cfg)->server_threads). Strings are owned by the
 * configuration, never NULL, and valid until the key is set again or the configuration freed.
 * Any thread may read; setting keys while another thread reads is the caller's to prevent. */
const qr_settings *qr_config_settings(const qr_config *cfg);
/* Where a key's value came from, by its text name (as the user spells it); an unknown name reads
 * as the default. */
qr_cfg_source qr_config_source(const qr_config *cfg, const char *name);

/* Writes the effective configuration as "section.key = value  # source" lines (or a JSON object
 * when json is true) with secrets masked as "********" when set. */
qr_status qr_config_dump(const qr_config *cfg, bool json, qr_buf *out);

/* Applies log.level, log.format and log.components to the logger, and opens log.file (once:
 * a later call keeps the file open, SIGHUP's qr_log_reopen moves to a new one). */
qr_status qr_config_apply_logging(const qr_config *cfg, char *err);

/* A copy of cfg, values and sources. NULL when memory runs out. */
qr_config *qr_config_clone(const qr_config *cfg);
/* What a reload changes: takes from `loaded` the value of every reloadable key (QR_RELOAD) that
 * differs from live's, and names them, comma-separated, in `changed`; the keys that differ but
 * need a restart are named in `restart` and keep live's value. Values compare by type ("05" and
 * "5" are the same number). QR_ENOMEM leaves live unchanged. */
qr_status qr_config_reload(qr_config *live, const qr_config *loaded, qr_buf *changed, qr_buf *restart);

/* ---- worker pool ------------------------------------------------------------------------- */

typedef struct qr_pool qr_pool;
typedef void (*qr_task_fn)(void *arg);

/* Starts `threads` workers with a queue of at most `queue_cap` waiting tasks. Returns NULL and
 * fills err on failure. */
qr_pool *qr_pool_new(int threads, size_t queue_cap, char *err);
/* Queues fn(arg). Returns QR_ELIMIT when the queue is full (fn is not called), QR_EINVAL after
 * shutdown began. The task runs on one of the pool's threads. */
qr_status qr_pool_submit(qr_pool *pool, qr_task_fn fn, void *arg);
/* Blocks until every queued and running task has finished. */
void qr_pool_wait(qr_pool *pool);
/* Runs the queued tasks to completion, stops the workers and frees the pool. NULL is a no-op. */
void qr_pool_free(qr_pool *pool);

/* ---- writing files atomically (file.c) --------------------------------------------------- */

/*
 * A file is replaced by writing a temporary file in its directory, syncing it, renaming it over
 * the target and syncing the directory: readers and a crash see the old file or the new one,
 * never part of one. qr_file_write does all of it for content in memory; writers that stream a
 * large file use qr_file_temp (or a name of their own), qr_write_all, then qr_file_finish, which
 * keeps the same order and fsync policy. Every step reports its failure (QR_EIO with the path and
 * errno's text, QR_ENOMEM); the file sync and rename cost a disk flush each. Any thread may call
 * them; two writers of the same target must be serialised by their caller (the last rename wins).
 */

/* Writes data to path with mode (e.g. 0600) that way. replace false creates path only when it
 * does not exist (a link instead of a rename): QR_EEXIST otherwise, path untouched. On error the
 * temporary file is removed and path is as it was (unless only the final directory sync failed:
 * then the new content is in place but its name may not survive a power cut). */
qr_status qr_file_write(const char *path, const void *data, size_t len, unsigned mode, bool replace,
                        char *err);

/* Creates and opens for writing a temporary file beside path, "<dir>/.<name>.<pid>.<n>.tmp",
 * with mode, under a name no other file has (O_EXCL). *tmp is the name (free() it). On error *fd
 * is -1 and *tmp NULL. */
qr_status qr_file_temp(const char *path, unsigned mode, int *fd, char **tmp, char *err);
/* Writes all n bytes to fd (path names it in the error), retrying short writes and EINTR. */
qr_status qr_write_all(int fd, const void *data, size_t n, const char *path, char *err);
/* Syncs and closes fd (always closed), then qr_file_commit. The caller removes tmp on error. */
qr_status qr_file_finish(int fd, const char *tmp, const char *path, bool replace, char *err);
/* The steps of qr_file_finish, for writers that must act between them: fsync and close fd
 * (always closed; path names it in the error); the rename of tmp to path (or, with replace
 * false, a link that fails with QR_EEXIST when path exists, and tmp's removal); and the two
 * together with the sync of path's directory after the rename. */
qr_status qr_file_sync_close(int fd, const char *path, char *err);
qr_status qr_file_rename(const char *tmp, const char *path, bool replace, char *err);
qr_status qr_file_commit(const char *tmp, const char *path, bool replace, char *err);
/* fsync of a file, or of a directory (dir) after a rename in it. */
qr_status qr_fsync_path(const char *path, bool dir, char *err);
/* fsync of the directory that holds path. */
qr_status qr_fsync_dir_of(const char *path, char *err);

/* ---- small helpers ----------------------------------------------------------------------- */

/* strdup that returns NULL for NULL. */
char *qr_strdup(const char *s);
/* Reads a whole file of at most max_bytes into *out (NUL-terminated, free() it). */
qr_status qr_read_file(const char *path, size_t max_bytes, char **out, size_t *len, char *err);
/* Version string of the jansson library core was built with. */
const char *qr_jansson_version(void);

#ifdef __cplusplus
}
#endif

#endif
