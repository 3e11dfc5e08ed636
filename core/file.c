/*
 * Writing files so that a crash never leaves half of one: the one way quarry replaces a file
 * (auth's state files, the vector index's MANIFEST) and the steps that the writers of large
 * streamed files (the BM25 generation, the vector index's generation files) share with it.
 *
 * The sequence, and the fsync policy of every writer: the new content goes to a temporary name in
 * the target's directory (a rename is atomic within one file system only), the file is synced
 * before the rename (else a power cut could leave the new name on empty or partial content), the
 * rename replaces the target, and the directory is synced after it (else the rename itself could
 * be lost). Every failure, the directory sync's included, is reported through qr_status and err;
 * a failed write removes its temporary file and leaves the target as it was.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

#define TEMP_TRIES 16

qr_status qr_write_all(int fd, const void *data, size_t n, const char *path, char *err)
{
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return qr_fail(err, qr_errno_status(errno), "cannot write '%s': %s", path, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return QR_OK;
}

qr_status qr_fsync_path(const char *path, bool dir, char *err)
{
    int fd = open(path, (dir ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return qr_fail(err, QR_EIO, "cannot open '%s' to sync it: %s", path, strerror(errno));
    qr_status st = QR_OK;
    if (fsync(fd) != 0)
        st = qr_fail(err, QR_EIO, "cannot sync '%s': %s", path, strerror(errno));
    close(fd);
    return st;
}

qr_status qr_fsync_dir_of(const char *path, char *err)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return qr_fsync_path(".", true, err);
    if (slash == path)
        return qr_fsync_path("/", true, err);
    char *dir = strndup(path, (size_t)(slash - path));
    if (!dir)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    qr_status st = qr_fsync_path(dir, true, err);
    free(dir);
    return st;
}

qr_status qr_file_sync_close(int fd, const char *path, char *err)
{
    qr_status st = QR_OK;
    if (fsync(fd) != 0)
        st = qr_fail(err, QR_EIO, "cannot sync '%s': %s", path, strerror(errno));
    if (close(fd) != 0 && !st)
        st = qr_fail(err, QR_EIO, "cannot close '%s': %s", path, strerror(errno));
    return st;
}

qr_status qr_file_rename(const char *tmp, const char *path, bool replace, char *err)
{
    if (replace) {
        if (rename(tmp, path) != 0)
            return qr_fail(err, QR_EIO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        return QR_OK;
    }
    if (link(tmp, path) != 0)
        return errno == EEXIST ? qr_fail(err, QR_EEXIST, "'%s' exists already", path)
                               : qr_fail(err, QR_EIO, "cannot create '%s': %s", path, strerror(errno));
    /* the file now has two names: the temporary one goes, the file stays */
    unlink(tmp);
    return QR_OK;
}

qr_status qr_file_commit(const char *tmp, const char *path, bool replace, char *err)
{
    qr_status st = qr_file_rename(tmp, path, replace, err);
    return st ? st : qr_fsync_dir_of(path, err);
}

qr_status qr_file_temp(const char *path, unsigned mode, int *fd, char **tmp, char *err)
{
    static unsigned long seq;
    *fd = -1;
    *tmp = NULL;
    const char *slash = strrchr(path, '/');
    int dlen = slash ? (int)(slash - path + 1) : 0;
    const char *base = slash ? slash + 1 : path;
    for (int i = 0; i < TEMP_TRIES; i++) {
        /* "<dir>/.<name>.<pid>.<n>.tmp": the writer's pid, so that whoever cleans up can tell a
         * dead writer's leftover from a live one's file, and a number unique in the process */
        unsigned long n = __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED);
        char *name = NULL;
        if (asprintf(&name, "%.*s.%s.%ld.%lu.tmp", dlen, path, base, (long)getpid(), n) < 0)
            return qr_fail(err, QR_ENOMEM, "out of memory");
        int f = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
        if (f >= 0) {
            *fd = f;
            *tmp = name;
            return QR_OK;
        }
        int e = errno;
        free(name);
        if (e != EEXIST)
            return qr_fail(err, QR_EIO, "cannot create a temporary file beside '%s': %s", path, strerror(e));
    }
    return qr_fail(err, QR_EIO, "cannot create a temporary file beside '%s': every name is taken", path);
}

qr_status qr_file_finish(int fd, const char *tmp, const char *path, bool replace, char *err)
{
    qr_status st = qr_file_sync_close(fd, tmp, err);
    return st ? st : qr_file_commit(tmp, path, replace, err);
}

qr_status qr_file_write(const char *path, const void *data, size_t len, unsigned mode, bool replace,
                        char *err)
{
    int fd = -1;
    char *tmp = NULL;
    qr_status st = qr_file_temp(path, mode, &fd, &tmp, err);
    if (st)
        return st;
    if ((st = qr_write_all(fd, data, len, tmp, err)))
        goto out;
    /* the umask can only clear bits; a stricter one must not leave a file its owner cannot read */
    if (fchmod(fd, (mode_t)mode) != 0) {
        st = qr_fail(err, QR_EIO, "cannot set the mode of '%s': %s", tmp, strerror(errno));
        goto out;
    }
    st = qr_file_finish(fd, tmp, path, replace, err);
    fd = -1;
out:
    if (fd >= 0)
        close(fd);
    /* after a successful rename or link the temporary name no longer exists */
    unlink(tmp);
    free(tmp);
    return st;
}
