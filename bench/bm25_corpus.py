#!/usr/bin/env python3
"""bench/bm25_corpus.py: the corpus and queries of bench/bm25_fixed_cost.sh.

Builds N abstract-like documents from the shared collections (Cranfield and CISI, 2,860 abstracts):
the first copy of each abstract as it is, every further copy with about a tenth of its words
dropped and another tenth replaced by words of a random other abstract (seeded: every run makes the
same text), so that copies rank apart and the vocabulary keeps the collections' distribution.
Writes OUT/corpus.jsonl (quarry's ingest format, ACL public), OUT/queries.jsonl (both collections'
queries, ids prefixed cr-/ci-) and OUT/qrels.tsv (the original judgments, on the first copies).

    bench/bm25_corpus.py DATASETS_DIR N OUT
"""
import json
import os
import random
import sys


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    src, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.makedirs(out, exist_ok=True)
    pool = []
    with open(os.path.join(out, "queries.jsonl"), "w", encoding="utf-8") as qf, open(
        os.path.join(out, "qrels.tsv"), "w", encoding="utf-8"
    ) as rf:
        rf.write("query-id\tcorpus-id\tscore\n")
        for tag, name in (("cr", "cranfield"), ("ci", "cisi")):
            for d in load(os.path.join(src, name, "corpus.jsonl")):
                pool.append((f"{tag}-{d['_id']}", d.get("title", ""), d["text"]))
            for q in load(os.path.join(src, name, "queries.jsonl")):
                qf.write(json.dumps({"_id": f"{tag}-{q['_id']}", "text": q["text"]}) + "\n")
            with open(os.path.join(src, name, "qrels.tsv"), encoding="utf-8") as f:
                next(f)
                for line in f:
                    qid, did, score = line.split("\t")
                    rf.write(f"{tag}-{qid}\t{tag}-{did}\t{score.strip()}\n")
    rnd = random.Random(23)
    with open(os.path.join(out, "corpus.jsonl"), "w", encoding="utf-8") as cf:
        for i in range(n):
            did, title, text = pool[i % len(pool)]
            copy = i // len(pool)
            if copy:
                words = text.split()
                other = pool[rnd.randrange(len(pool))][2].split()
                kept = []
                for w in words:
                    u = rnd.random()
                    if u < 0.1:
                        continue
                    kept.append(other[rnd.randrange(len(other))] if u < 0.2 and other else w)
                text = " ".join(kept)
                did = f"{did}~{copy}"
            cf.write(json.dumps({"_id": did, "title": title, "text": text, "acl": ["public"]}) + "\n")


if __name__ == "__main__":
    main()
