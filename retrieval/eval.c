/*
 * Retrieval quality metrics for `quarry eval`, as trec_eval and BEIR compute them: nDCG@10 with
 * linear gains (the grade) and a log2(rank + 1) discount over the ideal ordering of every judged
 * document, recall@100, average precision cut at 100 (divided by all relevant documents, not by
 * those retrieved) and reciprocal rank cut at 10. A grade above 0 is relevant; documents
 * without a judgment count as not relevant.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "retrieval/retrieval.h"

static int grade_of(const char *doc_id, const retrieval_judgment *judged, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (judged[i].doc_id && strcmp(judged[i].doc_id, doc_id) == 0)
            return judged[i].grade;
    return 0;
}

static int cmp_grade_desc(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x < y) - (x > y);
}

qr_status retrieval_eval_ranking(const char *const *ranked, size_t n, const retrieval_judgment *judged,
                                 size_t njudged, retrieval_metrics *out, char *err)
{
    if (!out || (n && !ranked) || (njudged && !judged))
        return qr_fail(err, QR_EINVAL, "retrieval_eval_ranking: NULL argument");
    memset(out, 0, sizeof(*out));
    size_t relevant = 0;
    for (size_t i = 0; i < njudged; i++)
        relevant += judged[i].grade > 0;
    if (!relevant)
        return QR_OK;

    /* ideal DCG@10 from the judged grades, best first */
    int *grades = malloc(njudged * sizeof(int));
    if (!grades)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    for (size_t i = 0; i < njudged; i++)
        grades[i] = judged[i].grade > 0 ? judged[i].grade : 0;
    qsort(grades, njudged, sizeof(int), cmp_grade_desc);
    double idcg = 0, dcg = 0, ap = 0;
    for (size_t i = 0; i < njudged && i < 10; i++)
        idcg += grades[i] / log2((double)i + 2);
    free(grades);

    size_t found = 0;
    for (size_t i = 0; i < n && i < 100; i++) {
        int g = ranked[i] ? grade_of(ranked[i], judged, njudged) : 0;
        if (g <= 0)
            continue;
        if (i < 10) {
            dcg += g / log2((double)i + 2);
            if (out->mrr10 == 0)
                out->mrr10 = 1.0 / (double)(i + 1);
        }
        found++;
        ap += (double)found / (double)(i + 1);
    }
    out->ndcg10 = idcg > 0 ? dcg / idcg : 0;
    out->recall100 = (double)found / (double)relevant;
    out->map100 = ap / (double)relevant;
    return QR_OK;
}
