#!/bin/bash
# quarry ingest --jsonl of the 23 MB input (both shared collections, 8 copies) through the loopback
# cluster (tests/cluster/harness.sh), two binaries alternated in one run: bench/pg_ingest_ab.sh OLD NEW
# (each run ingests new document ids into the same PostgreSQL and the same data directory).
set -euo pipefail
OLD=$(realpath "$1") NEW=$(realpath "$2")
cd "$(dirname "$0")/.."
D=${CLUSTER_DIR:-/tmp/quarry-pg-ingest}
tests/cluster/harness.sh down $D >/dev/null 2>&1 || true
rm -rf $D; mkdir -p $D; chmod 755 $D
tests/cluster/harness.sh up $D > $D.up.log 2>&1
set -a; . $D/cluster.env; . $D/secrets.env; set +a
W="host=127.0.0.1 port=$PG_WRITE_PORT user=$PATRONI_SUPERUSER_USERNAME password=$PATRONI_SUPERUSER_PASSWORD dbname=postgres"
R="host=127.0.0.1 port=$PG_READ_PORT user=$PATRONI_SUPERUSER_USERNAME password=$PATRONI_SUPERUSER_PASSWORD dbname=postgres"
for r in 1 2 3 4 5 6; do
  if [ $((r % 2)) -eq 1 ]; then bin=$OLD; name=old; else bin=$NEW; name=new; fi
  for i in $(seq 8); do for c in cranfield cisi; do
    sed "s/^{\"_id\": \"/{\"_id\": \"r$r-$c-$i-/" ${QUARRY_TEST_DATASETS:-../shared/datasets}/$c/corpus.jsonl
  done; done > $D/both.jsonl
  s=$(date +%s.%N)
  $bin --data $D/data --log-level error --set store.backend=postgres --set store.postgres="$W" --set store.postgres_read="$R" ingest --acl public --jsonl $D/both.jsonl > $D/ing_$r.out 2>&1
  e=$(date +%s.%N)
  echo "run $r $name $(awk -v a="$s" -v b="$e" 'BEGIN { printf "%.1f", b - a }') s: $(tail -1 "$D/ing_$r.out")"
done
tests/cluster/harness.sh down $D >/dev/null 2>&1
