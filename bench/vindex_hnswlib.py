#!/usr/bin/python3
"""hnswlib beside bench_vindex, on the same generated vectors.

bench_vindex --n N --dump DIR writes DIR/base.f32 (N x 384 float32, normalised), DIR/queries.f32
and DIR/gt.i64 (the exact top 10 of each query, row numbers); this script builds an hnswlib index
(inner product) over base with both cores, then times single queries on one thread for each
efSearch and prints a markdown row each: build s, RSS growth, recall@10 against gt, p50/p99.
The timed call is one knn_query per query from Python, so each latency includes about 10 us of
Python and numpy overhead that a C caller would not pay.

Needs Debian's hnswlib and numpy, run with the system interpreter:
    apt-get install python3-hnswlib     (pulls python3-numpy)
    /usr/bin/python3 bench/vindex_hnswlib.py DIR [--m 32] [--ef-construction 100] [--ef 64,128,256]
"""
import argparse
import os
import resource
import time

import hnswlib
import numpy as np

DIM = 384
K = 10


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--ef", default="64,128,256")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    base = np.fromfile(os.path.join(a.dir, "base.f32"), dtype=np.float32).reshape(-1, DIM)
    queries = np.fromfile(os.path.join(a.dir, "queries.f32"), dtype=np.float32).reshape(-1, DIM)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    gt = np.fromfile(os.path.join(a.dir, "gt.i64"), dtype=np.int64).reshape(-1, K)
    n = base.shape[0]

    rss0 = rss_mb()
    t0 = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=DIM)
    index.init_index(max_elements=n, M=a.m, ef_construction=a.ef_construction, random_seed=1)
    index.set_num_threads(a.threads)
    index.add_items(base, np.arange(n))
    build_s = time.perf_counter() - t0
    rss = rss_mb() - rss0
    index.set_num_threads(1)
    print(f"# hnswlib {n} vectors, M {a.m}, efConstruction {a.ef_construction}, built on {a.threads} threads; "
          f"queries on 1 thread; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print("| vectors | type | efSearch | build s | RSS delta MB | recall@10 | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for ef in [int(x) for x in a.ef.split(",")]:
        index.set_ef(ef)
        for qi in range(min(20, len(queries))):  # warm the caches
            index.knn_query(queries[qi:qi + 1], k=K)
        lat = []
        hits = 0
        for qi in range(len(queries)):
            q = queries[qi:qi + 1]
            t = time.perf_counter()
            labels, _ = index.knn_query(q, k=K)
            lat.append((time.perf_counter() - t) * 1e3)
            hits += len(set(labels[0].tolist()) & set(gt[qi].tolist()))
        lat.sort()
        p50 = lat[len(lat) // 2]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"| {n} | hnswlib (M {a.m}, efC {a.ef_construction}) | {ef} | {build_s:.1f} | {rss:.0f} | "
              f"{hits / (K * len(queries)):.3f} | {p50:.3f} | {p99:.3f} |", flush=True)


if __name__ == "__main__":
    main()
