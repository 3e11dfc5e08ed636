/*
 * Per-request arenas: a request's many small allocations (parsed fields, result rows, snippets)
 * come from a few blocks and are freed together, with a cap on the total.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define ARENA_ALIGN       16
#define ARENA_FIRST_BLOCK 4096

struct qr_arena_block {
    qr_arena_block *next;
    size_t size;
    size_t used;
    _Alignas(ARENA_ALIGN) unsigned char mem[];
};

void qr_arena_init(qr_arena *a, size_t cap)
{
    a->head = NULL;
    a->used_total = 0;
    a->cap = cap;
    a->next_block = ARENA_FIRST_BLOCK;
}

void *qr_arena_alloc(qr_arena *a, size_t n)
{
    size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need == 0)
        need = ARENA_ALIGN;
    if (need < n || need > a->cap || a->used_total > a->cap - need)
        return NULL;
    qr_arena_block *blk = a->head;
    if (!blk || blk->size - blk->used < need) {
        size_t size = a->next_block;
        while (size < need)
            size *= 2;
        blk = malloc(sizeof(*blk) + size);
        if (!blk)
            return NULL;
        blk->size = size;
        blk->used = 0;
        blk->next = a->head;
        a->head = blk;
        if (a->next_block < (size_t)16 << 20)
            a->next_block = size * 2;
    }
    void *p = blk->mem + blk->used;
    blk->used += need;
    a->used_total += need;
    return p;
}

void *qr_arena_calloc(qr_arena *a, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = qr_arena_alloc(a, n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

char *qr_arena_strndup(qr_arena *a, const char *s, size_t n)
{
    char *p = qr_arena_alloc(a, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

char *qr_arena_strdup(qr_arena *a, const char *s)
{
    return qr_arena_strndup(a, s, strlen(s));
}

char *qr_arena_printf(qr_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *p = qr_arena_alloc(a, (size_t)n + 1);
    if (!p)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

size_t qr_arena_used(const qr_arena *a)
{
    return a->used_total;
}

void qr_arena_reset(qr_arena *a)
{
    qr_arena_block *keep = NULL;
    qr_arena_block *blk = a->head;
    while (blk) {
        qr_arena_block *next = blk->next;
        if (!next) {
            keep = blk; /* the oldest, smallest block */
        } else {
            free(blk);
        }
        blk = next;
    }
    if (keep) {
        keep->used = 0;
        keep->next = NULL;
    }
    a->head = keep;
    a->used_total = 0;
}

void qr_arena_release(qr_arena *a)
{
    qr_arena_block *blk = a->head;
    while (blk) {
        qr_arena_block *next = blk->next;
        free(blk);
        blk = next;
    }
    qr_arena_init(a, a->cap);
}
