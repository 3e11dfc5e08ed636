#!/usr/bin/env python3
"""bench/bm25_xapian.py: Xapian beside quarry in bench/bm25_fixed_cost.sh.

Indexes DIR/corpus.jsonl into DIR/xapian (once; reused while it holds as many documents) with the
Porter stemmer FTS5's tokenizer uses (title indexed with wdf x2, as quarry's title weight 2), then
runs DIR/queries.jsonl RUNS times on one thread: BM25 k1 1.2, b 0.75 (k2 0, k3 1, min_normlen 0),
OR of the query's words without quarry's default stopwords (read from retrieval/query.c, so the
two drop the same words), top 10. A query's time is parsing, matching and reading the ten documents'
ids. Prints `xapian p50 P95` in milliseconds (each the median over the runs) and writes the last
run's top 10 to DIR/xapian.run (query-id, rank, doc-id per line).

    bench/bm25_xapian.py DIR RUNS
"""
import json
import os
import re
import statistics
import sys
import time

import xapian


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))]


def stopwords():
    src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "retrieval", "query.c")).read()
    table = src[src.index("default_stopwords[] = {") :]
    return re.findall(r'"([a-z]+)"', table[: table.index("};")])


def main():
    d, runs = sys.argv[1], int(sys.argv[2])
    docs = [json.loads(line) for line in open(os.path.join(d, "corpus.jsonl"), encoding="utf-8")]
    path = os.path.join(d, "xapian")
    stem = xapian.Stem("porter")
    try:
        db = xapian.Database(path)
        stale = db.get_doccount() != len(docs)
    except xapian.DatabaseOpeningError:
        stale = True
    if stale:
        w = xapian.WritableDatabase(path, xapian.DB_CREATE_OR_OVERWRITE)
        tg = xapian.TermGenerator()
        tg.set_stemmer(stem)
        tg.set_stemming_strategy(xapian.TermGenerator.STEM_ALL)
        for doc in docs:
            x = xapian.Document()
            tg.set_document(x)
            tg.index_text(doc.get("title", ""), 2)
            tg.index_text(doc["text"])
            x.set_data(doc["_id"])
            w.add_document(x)
        w.commit()
        w.close()
        db = xapian.Database(path)
    queries = [json.loads(line) for line in open(os.path.join(d, "queries.jsonl"), encoding="utf-8")]
    qp = xapian.QueryParser()
    qp.set_stemmer(stem)
    qp.set_stemming_strategy(xapian.QueryParser.STEM_ALL)
    stopper = xapian.SimpleStopper()
    for w in stopwords():
        stopper.add(w)
    qp.set_stopper(stopper)
    qp.set_default_op(xapian.Query.OP_OR)
    enq = xapian.Enquire(db)
    enq.set_weighting_scheme(xapian.BM25Weight(1.2, 0, 1, 0.75, 0))
    p50s, p95s, top = [], [], {}
    for _ in range(runs):
        lat = []
        for q in queries:
            t0 = time.perf_counter()
            enq.set_query(qp.parse_query(q["text"], 0))
            ids = [m.document.get_data().decode() for m in enq.get_mset(0, 10)]
            lat.append((time.perf_counter() - t0) * 1e3)
            top[q["_id"]] = ids
        p50s.append(pct(lat, 50))
        p95s.append(pct(lat, 95))
    with open(os.path.join(d, "xapian.run"), "w", encoding="utf-8") as f:
        for qid, ids in top.items():
            for r, did in enumerate(ids):
                f.write(f"{qid}\t{r + 1}\t{did}\n")
    print(f"xapian {statistics.median(p50s):.3f} {statistics.median(p95s):.3f}")


if __name__ == "__main__":
    main()
