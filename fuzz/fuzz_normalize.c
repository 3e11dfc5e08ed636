/*
 * Fuzzes the UTF-8 normaliser: any bytes must give valid UTF-8 without control characters,
 * and normalising the output again must change nothing. The first byte picks repair or reject.
 */
#include "fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool reject = data[0] & 1;
    qr_buf out, again;
    qr_buf_init(&out, 1u << 22);
    qr_buf_init(&again, 1u << 22);
    char err[QR_ERR_LEN] = "";
    qr_status st = ingest_normalize((const char *)data + 1, size - 1, reject, &out, err);
    if (st) {
        FUZZ_CHECK(reject && st == QR_EINVAL && strstr(err, "invalid UTF-8"));
        FUZZ_CHECK(!qr_utf8_valid((const char *)data + 1, size - 1));
    } else {
        const char *s = qr_buf_str(&out);
        size_t n = qr_buf_len(&out);
        FUZZ_CHECK(qr_utf8_valid(s, n));
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(((unsigned char)s[i] >= 0x20 && s[i] != 0x7F) || s[i] == '\n');
        FUZZ_CHECK(n == 0 || (s[0] != ' ' && s[0] != '\n' && s[n - 1] != ' ' && s[n - 1] != '\n'));
        FUZZ_CHECK(!strstr(s, "  ") && !strstr(s, "\n\n\n") && !strstr(s, " \n") && !strstr(s, "\n "));
        FUZZ_CHECK(ingest_normalize(s, n, true, &again, err) == QR_OK);
        FUZZ_CHECK(qr_buf_len(&again) == n && memcmp(qr_buf_str(&again), s, n) == 0);
    }
    qr_buf_release(&out);
    qr_buf_release(&again);
    return 0;
}
