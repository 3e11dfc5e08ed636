/*
 * Administrators' document routes: create or replace documents (JSON with text, JSON with base64
 * bytes and a content type, or multipart/form-data uploads), change ACLs, delete, read and list
 * with cursor pagination. One document small enough is written before the answer (201 or 200,
 * with what changed); several documents, or more bytes than server.job_threshold_bytes, become
 * a background job (202 and GET /v1/jobs/{id}). Every write goes through the one ingestion
 * session, so a document is wholly written or not at all, and the vector index takes in the
 * change before the answer: searches see it at once.
 *
 * Ids come from the path percent-decoded by the router; they are store keys, never file names,
 * so "../" in an id reaches no file: it is only a document that does not exist.
 */
#define _GNU_SOURCE /* asprintf, memmem, strptime, timegm, explicit_bzero */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api/api_int.h"
#include "api/multipart.h"

#define LIST_DEFAULT 50
#define LIST_MAX     1000

static char *dup_str(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Checks and copies an ACL list. */
static qr_status acl_from_json(json_t *acl, api_job_doc *d, char *err)
{
    if (!json_is_array(acl))
        return qr_fail(err, QR_EINVAL,
                       "'acl' must be a list of principals (\"public\", \"user:<uid>\", "
                       "\"group:<name>\")");
    size_t n = json_array_size(acl);
    if (n > STORE_ACL_MAX)
        return qr_fail(err, QR_ELIMIT, "'acl' holds %zu principals, more than %d", n, STORE_ACL_MAX);
    d->acl = calloc(n ? n : 1, sizeof(*d->acl));
    if (!d->acl)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_array_get(acl, i);
        if (!json_is_string(p) || strlen(json_string_value(p)) != json_string_length(p))
            return qr_fail(err, QR_EINVAL,
                           "acl[%zu] is not a principal (\"public\", \"user:<uid>\" or "
                           "\"group:<name>\")",
                           i);
        /* kept as the store keeps it (group:Engineering as group:engineering), so that replies
         * show what is stored; one that cannot be made valid is refused by name */
        const char *given = json_string_value(p);
        char why[QR_ERR_LEN];
        char *canonical = malloc(strlen(given) + 1);
        if (!canonical)
            return qr_fail(err, QR_ENOMEM, "out of memory");
        if (store_principal_canonical(given, canonical, strlen(given) + 1, why)) {
            free(canonical);
            return qr_fail(err, QR_EINVAL, "acl[%zu]: %s", i, why);
        }
        d->acl[d->nacl++] = canonical;
    }
    return QR_OK;
}

static qr_status check_doc_id(const char *id, char *err)
{
    size_t n = strlen(id);
    if (n == 0 || n > STORE_DOC_ID_MAX || !qr_utf8_valid(id, n))
        return qr_fail(err, QR_EINVAL, "a document id is 1 to %d bytes of UTF-8", STORE_DOC_ID_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] < 0x20 || id[i] == 0x7f)
            return qr_fail(err, QR_EINVAL, "a document id may not contain control characters");
    return QR_OK;
}

/* One document from a JSON object. path_id, when set, is the id from the URL. */
static qr_status doc_from_json(json_t *o, const char *path_id, api_job_doc *d, bool *has_acl, char *err)
{
    memset(d, 0, sizeof(*d));
    const char *doc_id, *text, *b64, *type, *filename, *title, *uri;
    if (!json_is_object(o))
        return qr_fail(err, QR_EINVAL, "a document must be a JSON object");
    if (!api_get_str(o, "doc_id", &doc_id, STORE_DOC_ID_MAX, path_id == NULL, err) ||
        !api_get_str(o, "text", &text, (size_t)1 << 40, false, err) ||
        !api_get_str(o, "content_base64", &b64, (size_t)1 << 40, false, err) ||
        !api_get_str(o, "content_type", &type, 256, false, err) ||
        !api_get_str(o, "filename", &filename, 1024, false, err) ||
        !api_get_str(o, "title", &title, STORE_FIELD_MAX, false, err) ||
        !api_get_str(o, "uri", &uri, STORE_FIELD_MAX, false, err))
        return QR_EINVAL;
    if (path_id && doc_id && strcmp(path_id, doc_id) != 0)
        return qr_fail(err, QR_EINVAL, "'doc_id' in the body differs from the id in the path");
    if (!path_id && check_doc_id(doc_id, err))
        return QR_EINVAL;
    if ((text != NULL) == (b64 != NULL))
        return qr_fail(err, QR_EINVAL, "give exactly one of 'text' and 'content_base64'");
    if (text) {
        d->len = strlen(text);
        d->bytes = malloc(d->len + 1);
        if (d->bytes)
            memcpy(d->bytes, text, d->len + 1);
        if (!type)
            type = "text/plain";
    } else {
        d->bytes = (char *)api_base64_decode(b64, strlen(b64), &d->len);
        if (!d->bytes)
            return qr_fail(err, QR_EINVAL, "'content_base64' is not valid base64");
    }
    json_t *meta = json_object_get(o, "metadata");
    if (meta && !json_is_null(meta)) {
        if (!json_is_object(meta))
            return qr_fail(err, QR_EINVAL, "'metadata' must be a JSON object");
        if (!(d->metadata_json = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS)))
            return qr_fail(err, QR_ENOMEM, "out of memory");
    }
    json_t *acl = json_object_get(o, "acl");
    *has_acl = acl && !json_is_null(acl);
    if (*has_acl) {
        qr_status st = acl_from_json(acl, d, err);
        if (st)
            return st;
    }
    d->doc_id = strdup(path_id ? path_id : doc_id);
    d->content_type = dup_str(type);
    d->filename = dup_str(filename);
    d->title = dup_str(title);
    d->uri = dup_str(uri);
    if (!d->doc_id || !d->bytes)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    return QR_OK;
}

/* The last path component of an uploaded file's name: it names the document, never a file. */
static const char *base_name(const char *name)
{
    const char *slash = strrchr(name, '/'), *back = strrchr(name, '\\');
    const char *b = slash > back ? slash : back;
    return b ? b + 1 : name;
}

/* Documents from a multipart/form-data upload: each part with a filename is a document; the
 * fields doc_id (one file only), title, uri, metadata (a JSON object) and acl (repeated, one
 * principal each) apply to all of them. */
static qr_status docs_from_multipart(api_req *r, const char *path_id, api_job_doc **out, size_t *nout,
                                     bool *has_acl, char *err)
{
    api_part *parts = NULL;
    size_t n = 0, nfiles = 0;
    *out = NULL;
    *nout = 0;
    *has_acl = false;
    qr_status st = api_multipart_parse(qr_buf_str(&r->body), qr_buf_len(&r->body),
                                       api_header(r, "Content-Type"), &parts, &n, err);
    if (st)
        return st;
    api_job_doc common = {0};
    json_t *acl = json_array();
    api_job_doc *docs = NULL;
    for (size_t i = 0; i < n; i++) {
        api_part *p = &parts[i];
        if (p->filename) {
            nfiles++;
            continue;
        }
        char *value = strndup(p->data, p->len);
        if (!value) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
        if (!qr_utf8_valid(value, strlen(value)) || strlen(value) != p->len) {
            free(value);
            st = qr_fail(err, QR_EINVAL, "form field '%.64s' is not UTF-8 text", p->name);
            goto out;
        }
        char **slot = strcmp(p->name, "doc_id") == 0  ? &common.doc_id
                      : strcmp(p->name, "title") == 0 ? &common.title
                      : strcmp(p->name, "uri") == 0   ? &common.uri
                                                      : NULL;
        if (slot) {
            free(*slot);
            *slot = value;
        } else if (strcmp(p->name, "acl") == 0) {
            *has_acl = true;
            json_array_append_new(acl, json_string(value));
            free(value);
        } else if (strcmp(p->name, "metadata") == 0) {
            json_t *m = json_loads(value, JSON_REJECT_DUPLICATES, NULL);
            free(value);
            if (!json_is_object(m)) {
                json_decref(m);
                st = qr_fail(err, QR_EINVAL, "form field 'metadata' must hold a JSON object");
                goto out;
            }
            free(common.metadata_json);
            common.metadata_json = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
            json_decref(m);
        } else {
            free(value);
            st = qr_fail(err, QR_EINVAL,
                         "unknown form field '%.64s' (known: file, doc_id, title, uri, acl, metadata)",
                         p->name);
            goto out;
        }
    }
    if (nfiles == 0) {
        st = qr_fail(err, QR_EINVAL, "the upload holds no file (a part with a filename)");
        goto out;
    }
    if ((path_id || common.doc_id) && nfiles > 1) {
        st = qr_fail(err, QR_EINVAL, "a document id names one document: upload one file with it");
        goto out;
    }
    if (common.doc_id && path_id && strcmp(common.doc_id, path_id) != 0) {
        st = qr_fail(err, QR_EINVAL, "'doc_id' differs from the id in the path");
        goto out;
    }
    if (!(docs = calloc(nfiles, sizeof(*docs)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        api_part *p = &parts[i];
        if (!p->filename)
            continue;
        api_job_doc *d = &docs[k++];
        const char *id = path_id ? path_id : common.doc_id ? common.doc_id : base_name(p->filename);
        if ((st = check_doc_id(id, err)))
            goto out;
        d->doc_id = strdup(id);
        d->filename = strdup(base_name(p->filename));
        /* curl and browsers send application/octet-stream for unknown types: let the name and the
         * bytes decide then */
        if (p->content_type && strncasecmp(p->content_type, "application/octet-stream", 24) != 0)
            d->content_type = strdup(p->content_type);
        d->title = dup_str(common.title);
        d->uri = dup_str(common.uri);
        d->metadata_json = dup_str(common.metadata_json);
        d->bytes = malloc(p->len + 1);
        if (d->bytes) {
            memcpy(d->bytes, p->data, p->len);
            d->bytes[p->len] = '\0';
        }
        d->len = p->len;
        if (!d->doc_id || !d->filename || !d->bytes) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
        if (*has_acl && (st = acl_from_json(acl, d, err)))
            goto out;
    }
out:
    if (st) {
        for (size_t i = 0; docs && i < nfiles; i++)
            api_job_doc_release(&docs[i]);
        free(docs);
    } else {
        *out = docs;
        *nout = nfiles;
    }
    api_job_doc_release(&common);
    json_decref(acl);
    api_parts_free(parts, n);
    return st;
}

static bool is_multipart(api_req *r)
{
    const char *ct = api_header(r, "Content-Type");
    return ct && strncasecmp(ct, "multipart/form-data", 19) == 0;
}

static void release_docs(api_job_doc *docs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        api_job_doc_release(&docs[i]);
    free(docs);
}

/* Keeps the stored ACL of a document replaced without one (PUT without "acl"). */
static qr_status keep_acl(api_server *srv, api_job_doc *d, char *err)
{
    store_doc_info *info = NULL;
    store *s = api_store_acquire(srv);
    qr_status st = store_get_document(s, d->doc_id, false, &info, err);
    api_store_release(srv, s);
    if (st == QR_ENOTFOUND)
        return QR_OK; /* a new document: administrators only, as documented */
    if (st)
        return st;
    d->acl = calloc(info->nacl ? info->nacl : 1, sizeof(*d->acl));
    for (size_t i = 0; d->acl && i < info->nacl; i++)
        if ((d->acl[d->nacl] = strdup(info->acl[i])))
            d->nacl++;
    store_doc_info_free(info);
    return d->acl ? QR_OK : qr_fail(err, QR_ENOMEM, "out of memory");
}

/* Writes the documents now, or queues them as a job. Takes docs over. */
static void write_docs(api_req *r, api_job_doc *docs, size_t n, bool replace_keeps_acl)
{
    api_server *srv = r->srv;
    char err[QR_ERR_LEN];
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += docs[i].len;
    bool wait_for = false;
    qr_status ast = api_refresh_arg(r, &wait_for, err);
    if (ast) {
        release_docs(docs, n);
        api_reply_status(r, ast, err);
        return;
    }
    if (replace_keeps_acl) {
        for (size_t i = 0; i < n; i++) {
            qr_status st = keep_acl(srv, &docs[i], err);
            if (st) {
                release_docs(docs, n);
                api_reply_status(r, st, err);
                return;
            }
        }
    }
    const char **ids = calloc(n ? n : 1, sizeof(*ids));
    for (size_t i = 0; ids && i < n; i++)
        ids[i] = docs[i].doc_id;
    if (n > 1 || bytes > srv->set.job_threshold_bytes) {
        char id[33];
        api_audit_record(srv->audit, r, NULL, ids, ids ? n : 0, "documents_put_job");
        free(ids);
        qr_status st = api_jobs_submit_ingest(srv->jobs, docs, n, r->user, id, err);
        if (st) {
            api_reply_status(r, st, err);
            return;
        }
        char url[64];
        snprintf(url, sizeof(url), "/v1/jobs/%s", id);
        api_reply_json(r, 202,
                       json_pack("{s:s,s:s,s:s,s:I}", "job_id", id, "status_url", url, "state", "queued",
                                 "documents", (json_int_t)n));
        api_reply_header(r, "Location", url);
        return;
    }
    store_put_result result = STORE_UNCHANGED;
    size_t nchunks = 0;
    qr_status st = api_ingest_one(srv, &docs[0], &result, &nchunks, err);
    if (!st) {
        api_audit_record(srv->audit, r, NULL, ids, ids ? 1 : 0, "document_put");
        char ierr[QR_ERR_LEN];
        bool searchable = api_index_written(srv, wait_for, ierr) == QR_OK;
        if (!searchable)
            qr_log(QR_LOG_WARN, "index", "document %s written, not searchable yet: %s", docs[0].doc_id, ierr);
        json_t *body =
            json_pack("{s:s,s:s,s:I,s:b}", "doc_id", docs[0].doc_id, "result", api_put_result_name(result),
                      "chunks", (json_int_t)nchunks, "acl_given", docs[0].nacl > 0);
        if (body && wait_for)
            json_object_set_new(body, "searchable", json_boolean(searchable));
        api_reply_json(r, result == STORE_ADDED ? 201 : 200, body);
    } else {
        api_reply_status(r, st, err);
    }
    free(ids);
    release_docs(docs, n);
}

void api_h_doc_create(api_req *r)
{
    char err[QR_ERR_LEN];
    api_job_doc *docs = NULL;
    size_t n = 0;
    bool has_acl = false;
    qr_status st;
    if (is_multipart(r)) {
        if ((st = docs_from_multipart(r, NULL, &docs, &n, &has_acl, err))) {
            api_reply_status(r, st, err);
            return;
        }
        write_docs(r, docs, n, false);
        return;
    }
    json_t *body = api_json_body(r);
    if (!body)
        return;
    json_t *list = json_object_get(body, "documents");
    if (list) {
        if (!json_is_array(list) || json_array_size(list) == 0 || json_array_size(list) > 10000) {
            api_reply_error(r, 400, "invalid_argument", "'documents' must be a list of 1 to 10000 documents");
            goto out;
        }
        n = json_array_size(list);
        if (!(docs = calloc(n, sizeof(*docs)))) {
            api_reply_status(r, QR_ENOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            if ((st = doc_from_json(json_array_get(list, i), NULL, &docs[i], &has_acl, err))) {
                release_docs(docs, n);
                api_reply_error(r, api_http_status(st), qr_status_name(st), "documents[%zu]: %s", i, err);
                goto out;
            }
        }
    } else {
        if (!(docs = calloc(1, sizeof(*docs)))) {
            api_reply_status(r, QR_ENOMEM, "out of memory");
            goto out;
        }
        n = 1;
        if ((st = doc_from_json(body, NULL, &docs[0], &has_acl, err))) {
            release_docs(docs, n);
            api_reply_status(r, st, err);
            goto out;
        }
    }
    write_docs(r, docs, n, false);
out:
    json_decref(body);
}

void api_h_doc_put(api_req *r)
{
    char err[QR_ERR_LEN];
    api_job_doc *docs = NULL;
    size_t n = 0;
    bool has_acl = false;
    qr_status st = check_doc_id(r->param, err);
    if (st) {
        api_reply_status(r, st, err);
        return;
    }
    if (is_multipart(r)) {
        if ((st = docs_from_multipart(r, r->param, &docs, &n, &has_acl, err))) {
            api_reply_status(r, st, err);
            return;
        }
        write_docs(r, docs, n, !has_acl);
        return;
    }
    json_t *body = api_json_body(r);
    if (!body)
        return;
    if (!(docs = calloc(1, sizeof(*docs)))) {
        api_reply_status(r, QR_ENOMEM, "out of memory");
    } else if ((st = doc_from_json(body, r->param, &docs[0], &has_acl, err))) {
        release_docs(docs, 1);
        api_reply_status(r, st, err);
    } else {
        write_docs(r, docs, 1, !has_acl);
    }
    json_decref(body);
}

static json_t *acl_array(const char *const *acl, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(acl[i]));
    return a;
}

void api_h_doc_acl(api_req *r)
{
    api_server *srv = r->srv;
    char err[QR_ERR_LEN];
    qr_status st = check_doc_id(r->param, err);
    if (st) {
        api_reply_status(r, st, err);
        return;
    }
    json_t *body = api_json_body(r);
    if (!body)
        return;
    api_job_doc d = {0};
    bool wait_for = false;
    if ((st = api_refresh_arg(r, &wait_for, err))) {
        api_reply_status(r, st, err);
        goto out;
    }
    json_t *acl = json_object_get(body, "acl");
    if (!acl) {
        api_reply_error(r, 400, "invalid_argument", "'acl' is required: the new list of principals");
        goto out;
    }
    if ((st = acl_from_json(acl, &d, err))) {
        api_reply_status(r, st, err);
        goto out;
    }
    pthread_mutex_lock(&srv->ingest_lock);
    st = store_set_acl(ingest_session_store(srv->ingest), r->param, (const char *const *)d.acl, d.nacl, err);
    pthread_mutex_unlock(&srv->ingest_lock);
    if (st) {
        api_reply_status(r, st, err);
        goto out;
    }
    const char *ids[] = {r->param};
    api_audit_record(srv->audit, r, NULL, ids, 1, "acl_set");
    /* searches see the new ACL at once (the store's permission checks); the indexes' cached
     * permission sets follow with the maintainer */
    char ierr[QR_ERR_LEN];
    if (api_index_written(srv, wait_for, ierr))
        qr_log(QR_LOG_WARN, "index", "indexes not caught up after an ACL change: %s", ierr);
    api_reply_json(
        r, 200,
        json_pack("{s:s,s:o}", "doc_id", r->param, "acl", acl_array((const char *const *)d.acl, d.nacl)));
out:
    api_job_doc_release(&d);
    json_decref(body);
}

void api_h_doc_delete(api_req *r)
{
    api_server *srv = r->srv;
    char err[QR_ERR_LEN];
    bool wait_for = false;
    qr_status st = check_doc_id(r->param, err);
    if (!st)
        st = api_refresh_arg(r, &wait_for, err);
    if (st) {
        api_reply_status(r, st, err);
        return;
    }
    pthread_mutex_lock(&srv->ingest_lock);
    st = ingest_remove(srv->ingest, r->param, err);
    pthread_mutex_unlock(&srv->ingest_lock);
    if (st) {
        api_reply_status(r, st, err);
        return;
    }
    api_metrics_ingest(srv->metrics, "deleted", 0);
    const char *ids[] = {r->param};
    api_audit_record(srv->audit, r, NULL, ids, 1, "document_delete");
    /* gone from the very next search (the store's checks); the indexes follow */
    char ierr[QR_ERR_LEN];
    if (api_index_written(srv, wait_for, ierr))
        qr_log(QR_LOG_WARN, "index", "indexes not caught up after a delete: %s", ierr);
    api_reply_json(r, 200, json_pack("{s:s,s:b}", "doc_id", r->param, "deleted", 1));
}

static json_t *iso_ms(int64_t ms)
{
    char buf[96];
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return json_string(buf);
}

void api_h_doc_get(api_req *r)
{
    char err[QR_ERR_LEN];
    qr_status st = check_doc_id(r->param, err);
    if (st) {
        api_reply_status(r, st, err);
        return;
    }
    bool bad = false;
    char *chunks_arg = api_query_arg(r, "chunks", &bad);
    bool with_chunks = chunks_arg && (strcmp(chunks_arg, "true") == 0 || strcmp(chunks_arg, "1") == 0);
    free(chunks_arg);
    store_doc_info *d = NULL;
    store *s = api_store_acquire(r->srv);
    st = store_get_document(s, r->param, with_chunks, &d, err);
    api_store_release(r->srv, s);
    if (st) {
        api_reply_status(r, st, err);
        return;
    }
    json_t *meta = json_loads(d->metadata_json, 0, NULL);
    json_t *body =
        json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:o,s:I,s:o,s:o,s:I,s:I}", "doc_id", d->doc_id, "title", d->title,
                  "uri", d->uri, "content_type", d->content_type, "metadata", meta ? meta : json_object(),
                  "content_hash", d->content_hash, "acl", acl_array(d->acl, d->nacl), "version",
                  (json_int_t)d->version, "created", iso_ms(d->created_ms), "updated", iso_ms(d->updated_ms),
                  "text_bytes", (json_int_t)d->text_len, "chunk_count", (json_int_t)d->chunk_count);
    if (body && with_chunks) {
        json_t *arr = json_array();
        for (size_t i = 0; i < d->nchunks; i++) {
            const store_chunk_row *c = &d->chunks[i];
            json_array_append_new(arr,
                                  json_pack("{s:I,s:I,s:I,s:s,s:s%}", "chunk_id", (json_int_t)c->chunk_id,
                                            "start", (json_int_t)c->start, "end", (json_int_t)c->end,
                                            "headings", c->headings, "text", c->text, c->text_len));
        }
        json_object_set_new(body, "chunks", arr);
    }
    store_doc_info_free(d);
    api_reply_json(r, 200, body);
}

/* ---- listing ---------------------------------------------------------------------------------- */

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* A listing cursor: "d1:" and the last doc id, in base64url. */
static char *list_cursor(const char *last)
{
    size_t n = strlen(last) + 3;
    char *raw = malloc(n + 1), *out = malloc(n / 3 * 4 + 8);
    if (!raw || !out) {
        free(raw);
        free(out);
        return NULL;
    }
    snprintf(raw, n + 1, "d1:%s", last);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)raw[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)raw[i + 1] << 8;
        if (i + 2 < n)
            v |= (uint32_t)(unsigned char)raw[i + 2];
        out[o++] = b64url[(v >> 18) & 63];
        out[o++] = b64url[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = b64url[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = b64url[v & 63];
    }
    out[o] = '\0';
    free(raw);
    return out;
}

static char *list_cursor_decode(const char *c)
{
    size_t n = strlen(c);
    if (n > 4 * STORE_DOC_ID_MAX)
        return NULL;
    char *raw = malloc(n + 1);
    if (!raw)
        return NULL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *at = memchr(b64url, c[i], 64);
        if (!at || !c[i]) {
            free(raw);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)(at - b64url);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            raw[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    raw[o] = '\0';
    if (o < 4 || strncmp(raw, "d1:", 3) != 0 || strlen(raw) != o) {
        free(raw);
        return NULL;
    }
    memmove(raw, raw + 3, o - 2);
    return raw;
}

typedef struct {
    json_t *docs;
    char *last;
} list_ctx;

static qr_status list_one(void *ctx, const store_doc_summary *d, char *err)
{
    list_ctx *l = ctx;
    json_t *acl = json_loads(d->acl_json, 0, NULL);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:o,s:I,s:o,s:I,s:I}", "doc_id", d->doc_id, "title", d->title,
                          "uri", d->uri, "content_type", d->content_type, "acl", acl ? acl : json_array(),
                          "version", (json_int_t)d->version, "updated", iso_ms(d->updated_ms), "text_bytes",
                          (json_int_t)d->text_len, "chunk_count", (json_int_t)d->chunk_count);
    free(l->last);
    l->last = strdup(d->doc_id);
    if (!o || !l->last || json_array_append_new(l->docs, o))
        return qr_fail(err, QR_ENOMEM, "out of memory listing documents");
    return QR_OK;
}

void api_h_doc_list(api_req *r)
{
    char err[QR_ERR_LEN];
    bool bad = false;
    char *limit_arg = api_query_arg(r, "limit", &bad);
    char *cursor_arg = api_query_arg(r, "cursor", &bad);
    char *after = NULL;
    list_ctx l = {json_array(), NULL};
    long limit = LIST_DEFAULT;
    if (bad) {
        api_reply_error(r, 400, "invalid_argument", "malformed query string");
        goto out;
    }
    if (limit_arg) {
        char *end;
        limit = strtol(limit_arg, &end, 10);
        if (!*limit_arg || *end || limit < 1 || limit > LIST_MAX) {
            api_reply_error(r, 400, "invalid_argument", "'limit' must be an integer from 1 to %d", LIST_MAX);
            goto out;
        }
    }
    if (cursor_arg && !(after = list_cursor_decode(cursor_arg))) {
        api_reply_error(r, 400, "invalid_argument", "'cursor' is not a cursor this server issued");
        goto out;
    }
    bool more = false;
    store *s = api_store_acquire(r->srv);
    qr_status st = store_list_documents(s, after, (size_t)limit, list_one, &l, &more, err);
    api_store_release(r->srv, s);
    if (st) {
        api_reply_status(r, st, err);
        goto out;
    }
    char *next = more && l.last ? list_cursor(l.last) : NULL;
    json_t *body = json_pack("{s:O,s:s?}", "documents", l.docs, "next_cursor", next);
    free(next);
    api_reply_json(r, 200, body);
out:
    json_decref(l.docs);
    free(l.last);
    free(after);
    free(limit_arg);
    free(cursor_arg);
}
