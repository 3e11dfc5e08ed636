# Sourced by the ingest benchmarks (ingest_e2e.sh, ingest_ab.sh, ingest_thread_cpu.sh):
# ingest_corpus DATASETS COPIES writes both shared collections, COPIES times, to stdout as JSON
# lines, each copy's ids prefixed so that every line is a new document.
ingest_corpus() {
  local i c
  for i in $(seq "$2"); do
    for c in cranfield cisi; do
      sed "s/^{\"_id\": \"/{\"_id\": \"$c-$i-/" "$1/$c/corpus.jsonl"
    done
  done
}
