# etcdkit build, test and benchmark targets. Everything the tests need is
# installed from here: CI runs `make test` on a fresh machine.

GO            ?= go
ETCDKIT_CACHE ?= $(HOME)/.cache/etcdkit
export ETCDKIT_CACHE
ETCD_LINES    := 3.5 3.6 3.7
ETCD_BINS     := $(foreach v,$(ETCD_LINES),$(ETCDKIT_CACHE)/etcd/v$(v)/etcdutl)
VERSITYGW_VERSION := v1.8.0
VERSITYGW     := $(ETCDKIT_CACHE)/versitygw/$(VERSITYGW_VERSION)/versitygw
PROMTOOL      := $(ETCDKIT_CACHE)/promtool/promtool
TEST_TIMEOUT  ?= 25m

.PHONY: all build test etcd-bins s3-bins promtool-bin bench bench-large run vet fmt clean fuzz

all: build

build:
	$(GO) build -o bin/etcdkit ./cmd/etcdkit

# Real etcd, etcdctl and etcdutl of every release line, built once from the
# Go module proxy with the pinned modules under tools/etcd/ (cached).
etcd-bins: $(ETCD_BINS)

$(ETCDKIT_CACHE)/etcd/v%/etcdutl: tools/etcd/v%/go.mod tools/etcd/v%/go.sum scripts/build-etcd.sh
	scripts/build-etcd.sh tools/etcd/v$* $(ETCDKIT_CACHE)/etcd/v$*

# A real S3-compatible server for the backup repository tests (loopback only),
# built once from the Go module proxy.
s3-bins: $(VERSITYGW)

$(VERSITYGW):
	scripts/build-versitygw.sh $(VERSITYGW_VERSION) $(dir $@)

# promtool checks and unit-tests the alerting rules under deploy/prometheus,
# built once from the Go module proxy with the module pinned in
# tools/promtool (cached).
promtool-bin: $(PROMTOOL)

$(PROMTOOL): tools/promtool/go.mod tools/promtool/go.sum scripts/build-promtool.sh
	scripts/build-promtool.sh tools/promtool $(dir $@)

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed"; exit 1; }

test: etcd-bins s3-bins promtool-bin vet
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# Runs every fuzz target for FUZZTIME (default 60s) each; their seed
# corpora already run as ordinary tests in `make test`.
fuzz:
	scripts/fuzz.sh

# Compares etcdkit with etcdutl on a >1 GB snapshot from a real etcd and
# writes docs/bench.md.
# bench-large: the offline and repository rows on an 8 GB db made once by a
# real etcd (cached; about 50 GB of free disk and 40 minutes on 2 cores),
# written to docs/bench-large.md.
bench-large: etcd-bins s3-bins build
	$(GO) run ./tools/bench -large -runs 3 -keys 2000000 -cache $(ETCDKIT_CACHE)/bench-large -etcd-bins $(ETCDKIT_CACHE)/etcd/v3.7 -etcdkit bin/etcdkit -versitygw $(VERSITYGW) -out docs/bench-large.md

bench: etcd-bins s3-bins build
	$(GO) run ./tools/bench -cache $(ETCDKIT_CACHE)/bench -etcd-bins $(ETCDKIT_CACHE)/etcd/v3.7 -etcdkit bin/etcdkit -versitygw $(VERSITYGW) -out docs/bench.md

# The main job: one etcd member on 127.0.0.1:2379 with the scheduler taking
# a backup at start and every 30 minutes into .run/backups (Ctrl-C stops it).
run: build
	mkdir -p .run
	bin/etcdkit serve --data-dir .run/default.etcd --metrics-addr 127.0.0.1:9479

clean:
	rm -rf bin
