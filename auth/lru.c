/*
 * A bounded map from strings to values with least-recently-used eviction: a chained hash table
 * that doubles as it fills, threaded on a doubly linked list in order of use. It backs the
 * principal cache and the failed-login counters, so hostile input (many distinct names) can
 * never grow either past its bound. Not locked: its users hold their own mutex.
 */
#include <stdlib.h>
#include <string.h>

#include "auth/auth_int.h"

typedef struct lru_node {
    struct lru_node *hnext;       /* bucket chain */
    struct lru_node *prev, *next; /* use order: head is the most recent */
    uint64_t hash;
    void *value;
    char key[];
} lru_node;

struct auth_lru {
    lru_node **buckets;
    size_t nbuckets; /* a power of two */
    size_t len, max;
    lru_node *head, *tail;
    void (*free_value)(void *);
};

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

auth_lru *auth_lru_new(size_t max, void (*free_value)(void *))
{
    auth_lru *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->nbuckets = 64;
    m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    m->max = max ? max : 1;
    m->free_value = free_value;
    return m;
}

static void unlink_use(auth_lru *m, lru_node *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        m->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        m->tail = n->prev;
    n->prev = n->next = NULL;
}

static void push_front(auth_lru *m, lru_node *n)
{
    n->prev = NULL;
    n->next = m->head;
    if (m->head)
        m->head->prev = n;
    m->head = n;
    if (!m->tail)
        m->tail = n;
}

static lru_node **find_slot(auth_lru *m, const char *key, uint64_t h)
{
    lru_node **p = &m->buckets[h & (m->nbuckets - 1)];
    while (*p && ((*p)->hash != h || strcmp((*p)->key, key) != 0))
        p = &(*p)->hnext;
    return p;
}

static void drop(auth_lru *m, lru_node **slot)
{
    lru_node *n = *slot;
    *slot = n->hnext;
    unlink_use(m, n);
    if (m->free_value)
        m->free_value(n->value);
    free(n);
    m->len--;
}

static void grow(auth_lru *m)
{
    size_t nb = m->nbuckets * 2;
    lru_node **b = calloc(nb, sizeof(*b));
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < m->nbuckets; i++) {
        lru_node *n = m->buckets[i];
        while (n) {
            lru_node *next = n->hnext;
            n->hnext = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
            n = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = nb;
}

void *auth_lru_get(auth_lru *m, const char *key)
{
    lru_node *n = *find_slot(m, key, hash_key(key));
    if (!n)
        return NULL;
    unlink_use(m, n);
    push_front(m, n);
    return n->value;
}

qr_status auth_lru_put(auth_lru *m, const char *key, void *value)
{
    uint64_t h = hash_key(key);
    lru_node **slot = find_slot(m, key, h);
    if (*slot) {
        lru_node *n = *slot;
        if (m->free_value && n->value != value)
            m->free_value(n->value);
        n->value = value;
        unlink_use(m, n);
        push_front(m, n);
        return QR_OK;
    }
    size_t klen = strlen(key);
    lru_node *n = malloc(sizeof(*n) + klen + 1);
    if (!n) {
        if (m->free_value)
            m->free_value(value);
        return QR_ENOMEM;
    }
    memcpy(n->key, key, klen + 1);
    n->hash = h;
    n->value = value;
    n->hnext = *slot;
    *slot = n;
    push_front(m, n);
    m->len++;
    while (m->len > m->max)
        drop(m, find_slot(m, m->tail->key, m->tail->hash));
    if (m->len > m->nbuckets)
        grow(m);
    return QR_OK;
}

void auth_lru_remove(auth_lru *m, const char *key)
{
    lru_node **slot = find_slot(m, key, hash_key(key));
    if (*slot)
        drop(m, slot);
}

void auth_lru_clear(auth_lru *m)
{
    while (m->head)
        drop(m, find_slot(m, m->head->key, m->head->hash));
}

size_t auth_lru_len(const auth_lru *m)
{
    return m->len;
}

void auth_lru_free(auth_lru *m)
{
    if (!m)
        return;
    auth_lru_clear(m);
    free(m->buckets);
    free(m);
}
