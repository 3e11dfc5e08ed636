/*
 * Citations in a drafted answer. Models cite the numbered sources as [1], [1, 3] or [1][3]; they
 * also invent numbers that were never sent, which a reader would follow to nothing. This file
 * finds the citation groups, keeps the numbers that name a source that was sent, removes the rest
 * from the text, and lists the sources cited in order of first appearance.
 */
#include <stdlib.h>
#include <string.h>

#include "inference/inference_int.h"

#define GROUP_MAX 64 /* numbers in one bracket; more is not a citation */

typedef struct {
    size_t end; /* index just past ']' */
    int numbers[GROUP_MAX];
    size_t count;
} cite_group;

static size_t skip_blanks(const char *s, size_t i)
{
    while (s[i] == ' ' || s[i] == '\t')
        i++;
    return i;
}

/* Parses a citation group starting at s[i] == '['. Returns false when it is not one. */
static bool parse_group(const char *s, size_t i, cite_group *g)
{
    g->count = 0;
    i = skip_blanks(s, i + 1);
    for (;;) {
        int n = 0, digits = 0;
        while (s[i] >= '0' && s[i] <= '9') {
            if (++digits > 3)
                return false;
            n = n * 10 + (s[i] - '0');
            i++;
        }
        if (digits == 0 || g->count == GROUP_MAX)
            return false;
        g->numbers[g->count++] = n;
        i = skip_blanks(s, i);
        if (s[i] == ']') {
            g->end = i + 1;
            return true;
        }
        if (s[i] != ',' && s[i] != ';')
            return false;
        i = skip_blanks(s, i + 1);
    }
}

static bool ends_word(char c)
{
    return c == '\0' || c == ' ' || c == '\t' || c == '\n' || c == '.' || c == ',' || c == ';' || c == ':' ||
           c == '!' || c == '?' || c == ')';
}

qr_status infer_cite_process(const char *text, int max_valid, char **clean, int **cited, size_t *ncited,
                             char *err)
{
    *clean = NULL;
    *cited = NULL;
    *ncited = 0;
    if (!text)
        return qr_fail(err, QR_EINVAL, "no text to read citations from");
    if (max_valid > INFER_CITE_MAX)
        max_valid = INFER_CITE_MAX;
    size_t len = strlen(text);
    /* A rewritten group is at most one byte longer per number than the original ("1,2" becomes
     * "1, 2"), so twice the input is always enough. */
    char *out = malloc(2 * len + 2);
    int *list = malloc(sizeof(int) * (INFER_CITE_MAX + 1));
    bool seen[INFER_CITE_MAX + 1] = {false};
    size_t olen = 0, nlist = 0;
    if (!out || !list) {
        free(out);
        free(list);
        return qr_fail(err, QR_ENOMEM, "out of memory reading citations");
    }
    for (size_t i = 0; i < len;) {
        cite_group g;
        if (text[i] != '[' || !parse_group(text, i, &g)) {
            out[olen++] = text[i++];
            continue;
        }
        size_t valid = 0;
        for (size_t k = 0; k < g.count; k++)
            if (g.numbers[k] >= 1 && g.numbers[k] <= max_valid)
                valid++;
        if (valid == g.count) {
            memcpy(out + olen, text + i, g.end - i);
            olen += g.end - i;
        } else if (valid > 0) {
            out[olen++] = '[';
            bool first = true;
            for (size_t k = 0; k < g.count; k++) {
                if (g.numbers[k] < 1 || g.numbers[k] > max_valid)
                    continue;
                if (!first) {
                    out[olen++] = ',';
                    out[olen++] = ' ';
                }
                first = false;
                int n = g.numbers[k];
                if (n >= 100)
                    out[olen++] = (char)('0' + n / 100);
                if (n >= 10)
                    out[olen++] = (char)('0' + n / 10 % 10);
                out[olen++] = (char)('0' + n % 10);
            }
            out[olen++] = ']';
        } else if (olen > 0 && out[olen - 1] == ' ' && ends_word(text[g.end])) {
            /* "the answer [7]." reads "the answer." once the dangling marker is gone */
            olen--;
        }
        for (size_t k = 0; k < g.count; k++) {
            int n = g.numbers[k];
            if (n >= 1 && n <= max_valid && !seen[n]) {
                seen[n] = true;
                list[nlist++] = n;
            }
        }
        i = g.end;
    }
    out[olen] = '\0';
    *clean = out;
    if (nlist) {
        *cited = list;
        *ncited = nlist;
    } else {
        free(list);
    }
    return QR_OK;
}
