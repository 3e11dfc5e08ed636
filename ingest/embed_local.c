/*
 * The local embedder: offline, deterministic, no model file and no corpus statistics. A text is
 * lower-cased and split into words; stopwords are dropped and the rest stemmed (Porter 1980,
 * written from the paper); each word, optionally each pair of neighbouring words and the
 * character n-grams of each word become features, which are hashed with a sign into a vector
 * of dim numbers (the "hashing trick"), summed over occurrences (raw term frequency; 1 + ln(tf)
 * and sqrt(tf) are there for the bench), and L2-normalised.
 *
 * Because nothing depends on other documents, a vector stays valid as the corpus grows and
 * survives an index rebuild without re-embedding; the price is that there is no IDF, which the
 * stopword list stands in for. Which features are on by default was measured with
 * bench/embed_eval (see bench/README.md); changing them changes the vectors, so the model name
 * ("local-hash-v1") must change with them.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest_int.h"

#define MAX_WORD 64 /* longer words are hashed whole but not stemmed or split into n-grams */

/* ---- stopwords ----------------------------------------------------------------------------- */

/* English function words: articles, pronouns, auxiliaries, prepositions, conjunctions and the
 * most frequent adverbs. They carry almost no topic and would dominate a vector without IDF. */
static const char *const stopword_list[] = {
    "a",       "about",    "above",     "after",   "again",   "against", "all",       "also",       "am",
    "an",      "and",      "any",       "are",     "as",      "at",      "be",        "because",    "been",
    "before",  "being",    "below",     "between", "both",    "but",     "by",        "can",        "could",
    "did",     "do",       "does",      "doing",   "done",    "down",    "during",    "each",       "either",
    "etc",     "few",      "for",       "from",    "further", "had",     "has",       "have",       "having",
    "he",      "her",      "here",      "hers",    "herself", "him",     "himself",   "his",        "how",
    "however", "i",        "if",        "in",      "into",    "is",      "it",        "its",        "itself",
    "just",    "may",      "me",        "might",   "more",    "most",    "much",      "must",       "my",
    "myself",  "no",       "nor",       "not",     "now",     "of",      "off",       "on",         "once",
    "one",     "only",     "or",        "other",   "our",     "ours",    "ourselves", "out",        "over",
    "own",     "per",      "same",      "shall",   "she",     "should",  "since",     "so",         "some",
    "such",    "than",     "that",      "the",     "their",   "theirs",  "them",      "themselves", "then",
    "there",   "these",    "they",      "this",    "those",   "through", "thus",      "to",         "too",
    "under",   "until",    "up",        "upon",    "us",      "very",    "was",       "we",         "were",
    "what",    "when",     "where",     "whether", "which",   "while",   "who",       "whom",       "whose",
    "why",     "will",     "with",      "within",  "without", "would",   "yet",       "you",        "your",
    "yours",   "yourself", "yourselves"};

#define STOP_SLOTS 512 /* power of two, over twice the list */

static const char *stop_table[STOP_SLOTS];
static unsigned char stop_len[STOP_SLOTS];
static pthread_once_t stop_once = PTHREAD_ONCE_INIT;

static uint64_t fnv1a(const char *s, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#define FNV_BASIS 0xcbf29ce484222325ull

static void stop_init(void)
{
    for (size_t i = 0; i < sizeof(stopword_list) / sizeof(stopword_list[0]); i++) {
        const char *w = stopword_list[i];
        size_t slot = fnv1a(w, strlen(w), FNV_BASIS) & (STOP_SLOTS - 1);
        while (stop_table[slot])
            slot = (slot + 1) & (STOP_SLOTS - 1);
        stop_table[slot] = w;
        stop_len[slot] = (unsigned char)strlen(w);
    }
}

bool embed_is_stopword(const char *w, size_t n)
{
    if (n > 10)
        return false; /* longer than any stopword */
    pthread_once(&stop_once, stop_init);
    size_t slot = fnv1a(w, n, FNV_BASIS) & (STOP_SLOTS - 1);
    while (stop_table[slot]) {
        if (stop_len[slot] == n && memcmp(stop_table[slot], w, n) == 0)
            return true;
        slot = (slot + 1) & (STOP_SLOTS - 1);
    }
    return false;
}

/* ---- Porter stemmer ------------------------------------------------------------------------ */

typedef struct {
    char *b;
    int k; /* index of the last letter */
    int j; /* end of the stem while a suffix is being tested */
} stemmer;

static bool cons(const stemmer *z, int i)
{
    switch (z->b[i]) {
    case 'a':
    case 'e':
    case 'i':
    case 'o':
    case 'u': return false;
    case 'y': return i == 0 ? true : !cons(z, i - 1);
    default: return true;
    }
}

/* m, the number of vowel-consonant sequences in b[0..j]. */
static int measure(const stemmer *z)
{
    int n = 0, i = 0;
    for (;;) {
        if (i > z->j)
            return n;
        if (!cons(z, i))
            break;
        i++;
    }
    i++;
    for (;;) {
        for (;;) {
            if (i > z->j)
                return n;
            if (cons(z, i))
                break;
            i++;
        }
        i++;
        n++;
        for (;;) {
            if (i > z->j)
                return n;
            if (!cons(z, i))
                break;
            i++;
        }
        i++;
    }
}

static bool vowel_in_stem(const stemmer *z)
{
    for (int i = 0; i <= z->j; i++)
        if (!cons(z, i))
            return true;
    return false;
}

static bool double_cons(const stemmer *z, int i)
{
    return i >= 1 && z->b[i] == z->b[i - 1] && cons(z, i);
}

/* consonant-vowel-consonant ending at i, the last consonant not w, x or y: "hop", "wil". */
static bool cvc(const stemmer *z, int i)
{
    if (i < 2 || !cons(z, i) || cons(z, i - 1) || !cons(z, i - 2))
        return false;
    char c = z->b[i];
    return c != 'w' && c != 'x' && c != 'y';
}

/* True when b[0..k] ends with s (of length len); sets j to the end of the stem. The last
 * letter is compared first: most suffixes fail there. */
static bool ends_n(stemmer *z, const char *s, int len)
{
    if (len > z->k + 1 || z->b[z->k] != s[len - 1] || memcmp(z->b + z->k - len + 1, s, (size_t)len) != 0)
        return false;
    z->j = z->k - len;
    return true;
}

#define ends(z, lit) ends_n((z), (lit), (int)sizeof(lit) - 1)

/* Replaces b[j+1..k] with s. Suffix replacements never lengthen a word past its original end. */
static void set_to_n(stemmer *z, const char *s, int len)
{
    memcpy(z->b + z->j + 1, s, (size_t)len);
    z->k = z->j + len;
}

#define set_to(z, lit) set_to_n((z), (lit), (int)sizeof(lit) - 1)

static void step1ab(stemmer *z)
{
    if (z->b[z->k] == 's') {
        if (ends(z, "sses"))
            z->k -= 2;
        else if (ends(z, "ies"))
            set_to(z, "i");
        else if (z->k >= 1 && z->b[z->k - 1] != 's')
            z->k--;
    }
    if (ends(z, "eed")) {
        if (measure(z) > 0)
            z->k--;
    } else if ((ends(z, "ed") || ends(z, "ing")) && vowel_in_stem(z)) {
        z->k = z->j;
        if (ends(z, "at"))
            set_to(z, "ate");
        else if (ends(z, "bl"))
            set_to(z, "ble");
        else if (ends(z, "iz"))
            set_to(z, "ize");
        else if (double_cons(z, z->k)) {
            char c = z->b[z->k];
            if (c != 'l' && c != 's' && c != 'z')
                z->k--;
        } else {
            z->j = z->k;
            if (measure(z) == 1 && cvc(z, z->k))
                set_to(z, "e");
        }
    }
}

static void step1c(stemmer *z)
{
    if (ends(z, "y") && vowel_in_stem(z))
        z->b[z->k] = 'i';
}

/* Suffix rules of steps 2 to 4. Only the longest matching suffix of a step is tried (Porter's
 * rule), so every rule is checked and the longest match kept. */
typedef struct {
    const char *suffix;
    int len;
    const char *repl;
    int rlen;
} stem_rule;

#define R(s, r)                                      \
    {                                                \
        s, (int)sizeof(s) - 1, r, (int)sizeof(r) - 1 \
    }

static const stem_rule step2_rules[] = {
    R("ational", "ate"), R("tional", "tion"), R("enci", "ence"), R("anci", "ance"), R("izer", "ize"),
    R("abli", "able"),   R("alli", "al"),     R("entli", "ent"), R("eli", "e"),     R("ousli", "ous"),
    R("ization", "ize"), R("ation", "ate"),   R("ator", "ate"),  R("alism", "al"),  R("iveness", "ive"),
    R("fulness", "ful"), R("ousness", "ous"), R("aliti", "al"),  R("iviti", "ive"), R("biliti", "ble"),
};
static const stem_rule step3_rules[] = {
    R("icate", "ic"), R("ative", ""), R("alize", "al"), R("iciti", "ic"),
    R("ical", "ic"),  R("ful", ""),   R("ness", ""),
};
static const stem_rule step4_rules[] = {
    R("al", ""),  R("ance", ""),  R("ence", ""), R("er", ""),  R("ic", ""),  R("able", ""), R("ible", ""),
    R("ant", ""), R("ement", ""), R("ment", ""), R("ent", ""), R("ion", ""), R("ou", ""),   R("ism", ""),
    R("ate", ""), R("iti", ""),   R("ous", ""),  R("ive", ""), R("ize", ""),
};

#undef R

/* The longest rule of rules[0..n) that matches, with j set for it; NULL when none does. */
static const stem_rule *longest_match(stemmer *z, const stem_rule *rules, size_t n)
{
    const stem_rule *best = NULL;
    for (size_t i = 0; i < n; i++)
        if ((!best || rules[i].len > best->len) && ends_n(z, rules[i].suffix, rules[i].len))
            best = &rules[i];
    if (best)
        ends_n(z, best->suffix, best->len);
    return best;
}

static void apply_rules(stemmer *z, const stem_rule *rules, size_t n)
{
    const stem_rule *r = longest_match(z, rules, n);
    if (r && measure(z) > 0)
        set_to_n(z, r->repl, r->rlen);
}

static void step4(stemmer *z)
{
    const stem_rule *r = longest_match(z, step4_rules, sizeof(step4_rules) / sizeof(step4_rules[0]));
    if (!r)
        return;
    if (r->len == 3 && memcmp(r->suffix, "ion", 3) == 0 &&
        !(z->j >= 0 && (z->b[z->j] == 's' || z->b[z->j] == 't')))
        return;
    if (measure(z) > 1)
        z->k = z->j;
}

static void step5(stemmer *z)
{
    z->j = z->k;
    if (z->b[z->k] == 'e') {
        int a = measure(z);
        if (a > 1 || (a == 1 && !cvc(z, z->k - 1)))
            z->k--;
    }
    /* j still ends at the word's last letter before any e was dropped, as in the paper's rule */
    if (z->b[z->k] == 'l' && double_cons(z, z->k) && measure(z) > 1)
        z->k--;
}

size_t embed_porter_stem(char *w, size_t n)
{
    if (n <= 2)
        return n;
    for (size_t i = 0; i < n; i++)
        if (w[i] < 'a' || w[i] > 'z')
            return n; /* digits and non-ASCII letters are left alone */
    stemmer z = {w, (int)n - 1, 0};
    step1ab(&z);
    if (z.k > 0) {
        step1c(&z);
        apply_rules(&z, step2_rules, sizeof(step2_rules) / sizeof(step2_rules[0]));
        apply_rules(&z, step3_rules, sizeof(step3_rules) / sizeof(step3_rules[0]));
        step4(&z);
        step5(&z);
    }
    return (size_t)z.k + 1;
}

/* ---- words --------------------------------------------------------------------------------- */

void embed_words(const char *text, size_t len, void (*fn)(const char *w, size_t n, void *arg), void *arg)
{
    char word[MAX_WORD + 8];
    size_t n = 0;
    for (size_t i = 0; i <= len; i++) {
        unsigned char c = i < len ? (unsigned char)text[i] : ' ';
        bool wc = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c >= 0x80 || (c >= 'A' && c <= 'Z');
        if (wc) {
            if (n < MAX_WORD)
                word[n++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            continue;
        }
        if (n) {
            /* A non-ASCII word cut at MAX_WORD may end inside a character; it is only hashed. */
            fn(word, n, arg);
        }
        n = 0;
    }
}

/* ---- feature hashing ----------------------------------------------------------------------- */

/* Sizes of the per-embedder word cache (below). A slot keeps at most CACHE_FEATS features: the
 * word's and its n-grams' (n + 3 - char_ngram of a word of n bytes); a word with more is not kept.
 * FEAT_NEG marks a kept feature whose weight is subtracted. */
#define CACHE_SLOTS 16384 /* power of two */
#define CACHE_WORD  22
#define CACHE_FEATS (CACHE_WORD + 1)
#define FEAT_NEG    0x8000u

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

typedef struct {
    uint64_t key;
    float weight; /* feature weight per occurrence */
    uint32_t tf;
} feature;

typedef struct {
    const embed_local_opts *o;
    feature *table; /* NULL with raw tf: features go straight into the vector */
    size_t mask;
    size_t used;
    float *out;
    embed_cache *cache;
    bool keep;     /* raw tf, no bigrams, dim <= 32768: slots keep their words' features */
    uint16_t *rec; /* with keep: where add_feature records the current word's features */
    unsigned char nrec;
    uint64_t prev; /* hash of the previous kept word, 0 at the start */
    bool oom;
} feat_acc;

/* Multiply-shift maps the hash's high half onto [0, dim) without a modulo bias; the low bit is
 * the sign. */
static void add_to_vector(float *out, int dim, uint64_t key, float w)
{
    size_t idx = (size_t)(((key >> 32) * (uint64_t)dim) >> 32);
    out[idx] += (key & 1) ? -w : w;
}

/* Feature kinds are salted differently so that a word, a bigram and an n-gram never collide by
 * construction. */
#define SALT_WORD   0x1000000000000001ull
#define SALT_BIGRAM 0x2000000000000002ull
#define SALT_NGRAM  0x3000000000000003ull

static void add_feature(feat_acc *a, uint64_t key, float weight)
{
    if (key == 0)
        key = 1; /* 0 marks an empty slot */
    if (!a->table) {
        /* raw tf: the sum of occurrences is the vector, no counting needed */
        add_to_vector(a->out, a->o->dim, key, weight);
        if (a->rec && a->nrec < CACHE_FEATS)
            a->rec[a->nrec++] =
                (uint16_t)((((key >> 32) * (uint64_t)a->o->dim) >> 32) | ((key & 1) ? FEAT_NEG : 0));
        else if (a->rec)
            a->nrec = CACHE_FEATS + 1; /* more than a slot holds: not kept */
        return;
    }
    if (a->used * 2 >= a->mask + 1) {
        size_t n = (a->mask + 1) * 2;
        feature *t = calloc(n, sizeof(*t));
        if (!t) {
            a->oom = true;
            return;
        }
        for (size_t i = 0; i <= a->mask; i++) {
            if (!a->table[i].key)
                continue;
            size_t s = a->table[i].key & (n - 1);
            while (t[s].key)
                s = (s + 1) & (n - 1);
            t[s] = a->table[i];
        }
        free(a->table);
        a->table = t;
        a->mask = n - 1;
    }
    size_t s = key & a->mask;
    while (a->table[s].key && a->table[s].key != key)
        s = (s + 1) & a->mask;
    if (!a->table[s].key) {
        a->table[s].key = key;
        a->table[s].weight = weight;
        a->used++;
    }
    a->table[s].tf++;
}

/* ---- the per-embedder word cache ----------------------------------------------------------- */

/* Stopword checks and Porter stemming cost more than the rest of a word's features together;
 * a direct-mapped cache of each word's outcome (its feature key, or "stopword") removes them for
 * the frequent words that make up most of any text. With raw tf and no bigrams (the defaults) a
 * word adds the same numbers to the same places of the vector wherever it occurs, so the slot also
 * keeps where its word and character n-gram features land, in the order they are added: a word
 * seen before is then added without hashing its n-grams again, with the same float additions in
 * the same order (the vectors stay bit for bit the same). */

typedef struct {
    uint64_t key; /* the word's feature key; 0 for a stopword */
    unsigned char len;
    unsigned char nfeat; /* kept features (0: not kept, add them the long way) */
    char word[CACHE_WORD];
    uint16_t feat[CACHE_FEATS]; /* vector position | FEAT_NEG; the first is the word's */
} cache_slot;

struct embed_cache {
    cache_slot slots[CACHE_SLOTS];
};

embed_cache *embed_cache_new(void)
{
    return calloc(1, sizeof(embed_cache));
}

void embed_cache_free(embed_cache *c)
{
    free(c);
}

/* The feature key of word w (n bytes), or 0 when it is a stopword. */
static uint64_t word_key(const embed_local_opts *o, const char *w, size_t n)
{
    if (o->stopwords && embed_is_stopword(w, n))
        return 0;
    char stem[MAX_WORD + 8];
    memcpy(stem, w, n);
    size_t sn = n;
    if (n < MAX_WORD) {
        if (o->stem == 2)
            sn = embed_porter_stem(stem, n);
        else if (o->stem == 1 && n > 3 && stem[n - 1] == 's' && stem[n - 2] != 's')
            sn = n - 1;
    }
    uint64_t h = mix64(fnv1a(stem, sn, FNV_BASIS) ^ SALT_WORD ^ o->seed);
    return h ? h : 1;
}

static void on_word(const char *w, size_t n, void *arg)
{
    feat_acc *a = arg;
    const embed_local_opts *o = a->o;
    if (n == 1 && w[0] >= 'a' && w[0] <= 'z')
        return; /* single letters: initials, variables, list markers */
    uint64_t h;
    cache_slot *slot = NULL;
    if (a->cache && n <= CACHE_WORD) {
        slot = &a->cache->slots[fnv1a(w, n, FNV_BASIS) & (CACHE_SLOTS - 1)];
        if (slot->len == n && memcmp(slot->word, w, n) == 0) {
            h = slot->key;
            if (h && slot->nfeat) {
                /* the additions add_feature made when the word was first seen */
                float ww = 1.0f, wn = (float)o->ngram_weight;
                for (unsigned i = 0; i < slot->nfeat; i++) {
                    float wt = i ? wn : ww;
                    a->out[slot->feat[i] & ~FEAT_NEG] += (slot->feat[i] & FEAT_NEG) ? -wt : wt;
                }
                a->prev = h;
                return;
            }
        } else {
            slot->len = 0;
        }
    }
    if (!slot || slot->len == 0) {
        h = word_key(o, w, n);
        if (slot) {
            slot->key = h;
            slot->len = (unsigned char)n;
            slot->nfeat = 0;
            memcpy(slot->word, w, n);
        }
    }
    if (h == 0)
        return;
    if (slot && a->keep && !slot->nfeat) {
        a->rec = slot->feat;
        a->nrec = 0;
    }
    add_feature(a, h, 1.0f);
    if (o->bigrams && a->prev)
        add_feature(a, mix64((a->prev * 31 + h) ^ SALT_BIGRAM), (float)o->bigram_weight);
    a->prev = h;
    if (o->char_ngram > 0 && n < MAX_WORD) {
        /* n-grams of "<word>", so that prefixes and suffixes are features of their own; up to 8
         * bytes are packed into one integer and mixed, which is cheaper than hashing bytes */
        char padded[MAX_WORD + 4];
        padded[0] = '<';
        memcpy(padded + 1, w, n);
        padded[n + 1] = '>';
        size_t pn = n + 2, g = (size_t)o->char_ngram;
        uint64_t salt = (SALT_NGRAM + g) ^ o->seed;
        for (size_t i = 0; i + g <= pn; i++) {
            uint64_t x = 0;
            if (g <= 8)
                memcpy(&x, padded + i, g);
            else
                x = fnv1a(padded + i, g, FNV_BASIS);
            add_feature(a, mix64(x ^ salt), (float)o->ngram_weight);
        }
    }
    if (a->rec) {
        slot->nfeat = a->nrec <= CACHE_FEATS ? a->nrec : 0;
        a->rec = NULL;
    }
}

void embed_local_defaults(embed_local_opts *o, int dim)
{
    /* Measured with bench/embed_eval on Cranfield and CISI (bench/README.md): stopwords and Porter
     * stems helped both collections most; character 4-grams at 0.3 helped vector search on both
     * and were neutral in fusion; raw tf beat 1 + ln(tf) and sqrt(tf); word bigrams never helped. */
    memset(o, 0, sizeof(*o));
    o->dim = dim;
    o->stopwords = true;
    o->stem = 2;
    o->bigrams = false;
    o->bigram_weight = 0.0;
    o->char_ngram = 4;
    o->ngram_weight = 0.3;
    o->tf = EMBED_TF_RAW;
}

qr_status embed_local_one(const embed_local_opts *o, embed_cache *cache, const char *text, size_t len,
                          float *out)
{
    memset(out, 0, (size_t)o->dim * sizeof(float));
    feat_acc a = {.o = o, .mask = 255, .out = out, .cache = cache};
    a.keep = cache && o->tf == EMBED_TF_RAW && !o->bigrams && o->dim <= (int)FEAT_NEG;
    if (o->tf != EMBED_TF_RAW) {
        a.table = calloc(a.mask + 1, sizeof(*a.table));
        if (!a.table)
            return QR_ENOMEM;
    }
    embed_words(text, len, on_word, &a);
    if (a.oom) {
        free(a.table);
        return QR_ENOMEM;
    }
    for (size_t i = 0; a.table && i <= a.mask; i++) {
        const feature *f = &a.table[i];
        if (!f->key)
            continue;
        double tf = o->tf == EMBED_TF_LOG ? 1.0 + log((double)f->tf) : sqrt((double)f->tf);
        add_to_vector(out, o->dim, f->key, (float)(tf * f->weight));
    }
    free(a.table);
    double norm = 0;
    for (int i = 0; i < o->dim; i++)
        norm += (double)out[i] * out[i];
    if (norm > 0) {
        float inv = (float)(1.0 / sqrt(norm));
        for (int i = 0; i < o->dim; i++)
            out[i] *= inv;
    }
    return QR_OK;
}
