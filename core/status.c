/*
 * Status codes and their names. The names double as the `code` of HTTP error bodies, so they
 * are stable snake_case words.
 */
#include <errno.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "core.h"

const char *qr_status_name(qr_status st)
{
    switch (st) {
    case QR_OK: return "ok";
    case QR_EINVAL: return "invalid_argument";
    case QR_ENOMEM: return "out_of_memory";
    case QR_ELIMIT: return "limit_exceeded";
    case QR_EIO: return "io_error";
    case QR_ENOTFOUND: return "not_found";
    case QR_EEXIST: return "already_exists";
    case QR_EPERM: return "permission_denied";
    case QR_EAUTH: return "unauthenticated";
    case QR_EUNAVAILABLE: return "unavailable";
    case QR_ETIMEOUT: return "timeout";
    case QR_ECANCELED: return "cancelled";
    case QR_ENOTIMPL: return "not_implemented";
    case QR_ENOSPC: return "no_space";
    case QR_EINTERNAL: return "internal_error";
    }
    return "unknown_status";
}

qr_status qr_errno_status(int e)
{
    return e == ENOSPC || e == EDQUOT || e == EFBIG ? QR_ENOSPC : QR_EIO;
}

bool qr_fs_full(const char *path)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        /* the file, or SQLite's WAL beside it, within 1 MiB of the limit */
        char wal[4096];
        struct stat st;
        snprintf(wal, sizeof(wal), "%s-wal", path);
        const char *files[] = {path, wal};
        for (int i = 0; i < 2; i++)
            if (stat(files[i], &st) == 0 && (unsigned long long)st.st_size + (1u << 20) >= rl.rlim_cur)
                return true;
    }
    struct statvfs v;
    return statvfs(path, &v) == 0 && (unsigned long long)v.f_bavail * v.f_frsize < (1u << 20);
}

qr_status qr_fail(char *err, qr_status st, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, QR_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return st;
}
