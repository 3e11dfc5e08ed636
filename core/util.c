/*
 * Small helpers shared by every module: file reading with a size cap, string duplication and
 * the jansson version.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core.h"

char *qr_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

qr_status qr_read_file(const char *path, size_t max_bytes, char **out, size_t *len, char *err)
{
    *out = NULL;
    if (len)
        *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return qr_fail(err, errno == ENOENT ? QR_ENOTFOUND : QR_EIO, "cannot open '%s': %s", path,
                       strerror(errno));
    struct stat sb;
    qr_status st = QR_OK;
    char *data = NULL;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = qr_fail(err, QR_EINVAL, "cannot read '%s': not a regular file", path);
        goto out;
    }
    if ((uint64_t)sb.st_size > max_bytes) {
        st = qr_fail(err, QR_ELIMIT, "'%s' is %lld bytes, more than the limit of %zu", path,
                     (long long)sb.st_size, max_bytes);
        goto out;
    }
    size_t size = (size_t)sb.st_size;
    data = malloc(size + 1);
    if (!data) {
        st = qr_fail(err, QR_ENOMEM, "out of memory reading '%s'", path);
        goto out;
    }
    if (fread(data, 1, size, f) != size || ferror(f)) {
        st = qr_fail(err, QR_EIO, "cannot read '%s': %s", path, strerror(errno));
        goto out;
    }
    data[size] = '\0';
    *out = data;
    data = NULL;
    if (len)
        *len = size;
out:
    free(data);
    fclose(f);
    return st;
}

const char *qr_jansson_version(void)
{
    return jansson_version_str();
}
