# quarry's libFuzzer targets (ingest: normaliser, text/markdown, HTML, DOCX, pdftotext output,
# chunker, the JSON-lines scanner against jansson; the API's request parsing; retrieval's query
# parser; inference's server-sent-event stream reader and citation filter; auth's OpenID Connect token checks), built with clang outside CMake (they need core/ and their
# module's pure files, never FAISS or a network) and run for FUZZ_TIME seconds each. Called by
# `make fuzz-smoke` at the root.
#
#   make fuzz-smoke                 # every target, 30 s each
#   make fuzz-smoke FUZZ_TIME=5     # shorter
#   make -f fuzz/fuzz.mk build      # build only; run one: build/fuzz/fuzz_html build/fuzz/corpus/html fuzz/seeds/html
#
# New inputs go to build/fuzz/corpus/<target>; fuzz/seeds/<target> holds the committed seeds.
# A crash leaves its input in build/fuzz/artifacts/ and fails the target.

FUZZ_TIME ?= 30
FUZZ_CC ?= clang
FUZZ_DIR ?= build/fuzz
FUZZ_TARGETS := normalize text html docx pdftotext chunk jsonl
FUZZ_PKGS := libxml-2.0 libzip libcrypto jansson
FUZZ_CFLAGS := -std=gnu11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
  -fno-sanitize-recover=undefined -I. $(shell pkg-config --cflags $(FUZZ_PKGS))
FUZZ_LIBS := $(shell pkg-config --libs $(FUZZ_PKGS)) -lpthread -lm
FUZZ_SOURCES := $(wildcard core/*.c) ingest/extract.c ingest/extract_text.c ingest/extract_html.c \
  ingest/extract_pdf.c ingest/extract_docx.c ingest/normalize.c ingest/sandbox.c ingest/chunk.c \
  ingest/jsonl.c

.PHONY: build smoke

build: $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%)

$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_common.h $(FUZZ_SOURCES) ingest/ingest.h ingest/ingest_int.h
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_SOURCES) $(FUZZ_LIBS)

# The API's request parsing (fuzz_request): core/ and api/'s pure files only.
FUZZ_TARGETS += request
# The chat parser fills inference's options (infer_options_init in inference/client.c), so the
# inference sources come along, with libcurl linked but never reached.
FUZZ_API_SOURCES := $(wildcard core/*.c) api/request.c api/multipart.c inference/sse.c inference/client.c \
  inference/breaker.c inference/prompt.c inference/cite.c
build: $(FUZZ_DIR)/fuzz_request
$(FUZZ_DIR)/fuzz_request: fuzz/fuzz_request.c $(FUZZ_API_SOURCES) api/api_int.h api/multipart.h
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_API_SOURCES) $(FUZZ_LIBS) $(shell pkg-config --libs libcurl)

# retrieval's query parser (fuzz_query): core/ and retrieval's parser, with SQLite's FTS5 checking
# that every expression it builds parses.
FUZZ_TARGETS += query
FUZZ_QUERY_SOURCES := $(wildcard core/*.c) retrieval/query.c retrieval/tokenchars.c
build: $(FUZZ_DIR)/fuzz_query
$(FUZZ_DIR)/fuzz_query: fuzz/fuzz_query.c $(FUZZ_QUERY_SOURCES) retrieval/retrieval_int.h
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_QUERY_SOURCES) $(FUZZ_LIBS) $(shell pkg-config --libs sqlite3)

# The OpenID Connect token path (fuzz_jwt): core/ and auth/, with libcjose, libldap (linked, never
# reached) and libcurl (never reached: the keys are installed, not fetched).
FUZZ_TARGETS += jwt
FUZZ_JWT_SOURCES := $(wildcard core/*.c) $(wildcard auth/*.c)
build: $(FUZZ_DIR)/fuzz_jwt
$(FUZZ_DIR)/fuzz_jwt: fuzz/fuzz_jwt.c $(FUZZ_JWT_SOURCES) auth/auth.h auth/auth_int.h
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_JWT_SOURCES) $(FUZZ_LIBS) \
	  $(shell pkg-config --libs cjose libcurl) -lldap -llber

# inference's streamed-answer reading (fuzz_sse): the event parser, the chunk reader in client.c
# with no transfer (it links libcurl, but opens no connection) and the citation filter.
FUZZ_TARGETS += sse
FUZZ_SSE_SOURCES := $(wildcard core/*.c) inference/sse.c inference/client.c inference/breaker.c \
  inference/prompt.c inference/cite.c
build: $(FUZZ_DIR)/fuzz_sse
$(FUZZ_DIR)/fuzz_sse: fuzz/fuzz_sse.c $(FUZZ_SSE_SOURCES) inference/inference.h inference/inference_int.h
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_SSE_SOURCES) $(FUZZ_LIBS) $(shell pkg-config --libs libcurl)

smoke: build
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/artifacts; \
	  if ! ASAN_OPTIONS=detect_leaks=1 $(FUZZ_DIR)/fuzz_$$t -max_total_time=$(FUZZ_TIME) -timeout=10 \
	      -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
	      -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- $(FUZZ_DIR)/corpus/$$t fuzz/seeds/$$t \
	      > $(FUZZ_DIR)/$$t.log 2>&1; then \
	    tail -n 40 $(FUZZ_DIR)/$$t.log; echo "fuzz-smoke: $$t FAILED (log: $(FUZZ_DIR)/$$t.log)"; exit 1; \
	  fi; \
	  echo "fuzz-smoke: $$t ok, $$(sed -n 's/^stat::number_of_executed_units: *//p' $(FUZZ_DIR)/$$t.log) runs in $(FUZZ_TIME) s"; \
	done
