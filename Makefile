# quarry's two commands, `make run` and `make test`, each doing all set-up on a fresh Debian 12
# machine: scripts/bootstrap (packages, FAISS), configure, build, then run or test.
#
#   make run         build, then the demo: slapd, demo corpus, quarry serve on 127.0.0.1:8080
#   make test        optimised build with asserts, all tests (ctest: unit + integration)
#   make test-asan   the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make build       bootstrap and build only
#   make format / format-check   clang-format the C sources / check them
#   make fuzz-smoke  build the libFuzzer targets of fuzz/ (clang) and run each FUZZ_TIME s (default 30)
#   make deb         the Debian package (dpkg-buildpackage, debhelper) in build/deb/ (scripts/make-deb)
#   make soak        the load, soak and fault harness (bench/load/soak.sh): DURATION=600 RATE=10 FAULTS=all REPEAT=1 HOLD=8
#   make cluster-infra  the loopback cluster infrastructure of issue #24 (tests/cluster/): failover under writes
#   make cluster-test   quarry nodes on that cluster (issue #24's tests): lost, stale, freshness, ordering, failover
#
# Variables: JOBS (parallel jobs), CTEST_ARGS (e.g. CTEST_ARGS='-R core\.' or '-L unit'),
# QUARRY_CUDA=AUTO|ON|OFF, FAISS_ROOT (a FAISS 1.7.3 prefix with the C API), CC (e.g. CC=clang).
#
# Warnings are errors (QUARRY_WERROR=ON) in `make test` and `make test-asan`, the developers' and
# CI's builds; `make build` and `make run` keep what the build directory was configured with
# (OFF on a fresh clone), so a newer compiler's new warning never stops a user's build.

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
QUARRY_CUDA ?= AUTO
CTEST_ARGS ?=
BUILD_DIR := build/release
ASAN_DIR := build/asan
CMAKE_ARGS := $(if $(FAISS_ROOT),-DFAISS_ROOT=$(FAISS_ROOT))
FORMAT_FILES = $(shell git ls-files '*.c' '*.h' '*.cu' 2>/dev/null)

.PHONY: all bootstrap build run test test-asan format format-check clean deb

all: build

bootstrap:
	@./scripts/bootstrap

# Configured on every build (seconds when nothing changed), so that `make test` can turn
# QUARRY_WERROR on in a directory that `make run` configured first.
WERROR_ARG = $(if $(QUARRY_WERROR),-DQUARRY_WERROR=$(QUARRY_WERROR))

build: bootstrap
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQUARRY_CUDA=$(QUARRY_CUDA) $(WERROR_ARG) \
	  $(CMAKE_ARGS) >/dev/null
	cmake --build $(BUILD_DIR) -j $(JOBS)

# The demo: a throwaway slapd with demo users, the demo corpus ingested, `quarry serve` on
# 127.0.0.1:8080 and curl examples; Ctrl-C stops everything (scripts/run-demo).
run: build
	QUARRY_BIN=$(CURDIR)/$(BUILD_DIR)/quarry ./scripts/run-demo

test: QUARRY_WERROR = ON
test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# The sanitizer build skips CUDA: nvcc objects are not instrumented, and the CPU path is what
# the sanitizers are for.
test-asan: bootstrap
	cmake -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DQUARRY_SANITIZE=ON -DQUARRY_CUDA=OFF -DQUARRY_WERROR=ON \
	  $(CMAKE_ARGS)
	cmake --build $(ASAN_DIR) -j $(JOBS)
	cd $(ASAN_DIR) && ASAN_OPTIONS=halt_on_error=1:abort_on_error=0:detect_leaks=1:strict_string_checks=1 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# libFuzzer targets for ingest, the API's and retrieval's parsers and inference's stream reader
# (clang, outside CMake; see fuzz/fuzz.mk), FUZZ_TIME seconds each. Not part of `make test`.
FUZZ_TIME ?= 30
# The load, soak and fault harness (bench/load/): DURATION seconds of mixed traffic at RATE requests/s
# against quarry serve with FAULTS injected REPEAT times each for HOLD seconds (see bench/load/soak.sh), its report
# and PNG in SOAK_OUT. Not part of `make test` (its 60-second smoke is: ctest -R load.).
DURATION ?= 600
RATE ?= 10
FAULTS ?= all
REPEAT ?= 1
HOLD ?= 8
SOAK_OUT ?= $(BUILD_DIR)/soak
.PHONY: soak
soak: build
	bench/load/soak.sh --duration $(DURATION) --rate $(RATE) --faults $(FAULTS) --repeat $(REPEAT) \
	  --hold $(HOLD) --out $(SOAK_OUT) $(BUILD_DIR)/quarry $(BUILD_DIR)/bench_load

# The loopback cluster infrastructure of issue #24 (tests/cluster/): etcd, two PostgreSQL 15 nodes
# under Patroni and HAProxy started in CLUSTER_DIR; under single-row writes the leader is
# SIGKILLed (tests/cluster/failover.sh), then on a fresh cluster etcd is stopped for 30 s; each
# time everything is stopped after, also when the check fails. Prints the lines
# `cluster-infra: failover_s=... lost=N acked=N ...` and `cluster-infra: fault=etcd ...`.
# Not part of `make test` (about two and a half minutes).
CLUSTER_DIR ?= build/cluster
.PHONY: cluster-infra
cluster-infra: bootstrap
	tests/cluster/harness.sh up $(CLUSTER_DIR)
	rc=0; tests/cluster/failover.sh $(CLUSTER_DIR) || rc=$$?; tests/cluster/harness.sh down $(CLUSTER_DIR); exit $$rc
	tests/cluster/harness.sh up $(CLUSTER_DIR) >/dev/null
	rc=0; tests/cluster/failover.sh $(CLUSTER_DIR) --fault etcd --hold 30 || rc=$$?; \
	  tests/cluster/harness.sh down $(CLUSTER_DIR); exit $$rc

# The quarry cluster test of issue #24 (tests/cluster/cluster_test.sh): on the loopback cluster of
# cluster-infra (in CLUSTER_DIR) and a throwaway slapd, three `quarry serve` nodes with
# store.backend = postgres (a fourth joins during the run): freshness, revocations and deletes seen
# by the other nodes, 8 concurrent writers, a node bootstrapped during ingest, a node cut from
# PostgreSQL, etcd down 30 s, the leader SIGKILLed under writes. Prints `cluster: lost=N stale=N
# fresh_p99_ms=N order_mismatch=N bootstrap_mismatch=N failover_s=N ...` and fails when something
# was lost, stale or mismatched or a step failed; everything is stopped after. Not part of
# `make test`, but in .ci/run (about three minutes; CLUSTER_TEST_ARGS passes options to
# tests/cluster/cluster_test.py, e.g. "--revocations 400 --etcd-hold 20").
.PHONY: cluster-test
cluster-test: build
	tests/cluster/cluster_test.sh $(CLUSTER_DIR) $(BUILD_DIR)/quarry $(CLUSTER_TEST_ARGS)

.PHONY: fuzz-smoke
fuzz-smoke: bootstrap
	$(MAKE) -f fuzz/fuzz.mk smoke FUZZ_TIME=$(FUZZ_TIME)

# The Debian package, built with the distribution's tools from a copy of the tree in
# build/deb/src/ (deploy/debian as its debian/); Release, QUARRY_CUDA=OFF, FAISS linked statically
# from the bootstrap's prefix; lintian at the end. See README, Installing the Debian package.
deb: bootstrap
	JOBS=$(JOBS) $(if $(FAISS_ROOT),FAISS_ROOT=$(FAISS_ROOT)) ./scripts/make-deb

format:
	clang-format -i $(FORMAT_FILES)

format-check:
	@clang-format --dry-run --Werror $(FORMAT_FILES) && echo "format-check: all files formatted"

clean:
	rm -rf build
