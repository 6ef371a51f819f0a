# Celadon's workflow. `make run` and `make test` are the two commands a
# newcomer needs; everything they depend on is built here from Go modules.
SHELL := /bin/bash
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
# The flags of the image's build (Dockerfile): no paths of this machine in the
# binary (-trimpath), no symbol table or DWARF (-s -w, about 30% smaller), and
# the version stamped in for `celadon version`. TestBuildFlags checks that the
# two agree.
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
BUILDFLAGS := -trimpath -ldflags '$(LDFLAGS)'
IMAGE   ?= celadon:$(VERSION)
# e2e and controlplane tests start real processes; keep the suite bounded.
TEST_TIMEOUT ?= 25m

.PHONY: all build test test-tools unit run demo bench profile soak lint fuzz fuzz-short clean image policy-test deploy-generate openapi-snapshot

all: build

include hack/controlplane.mk

build: $(BIN)/celadon

$(BIN)/celadon: $(shell find . -name '*.go' -not -path './bin/*' -not -path './hack/*') $(wildcard engine/openapi/*) go.mod go.sum
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(BUILDFLAGS) -o $@ ./cmd/celadon

# test runs every test: unit, golden examples, policy suites, the e2e
# suite against a real kube-apiserver, etcd and kube-controller-manager,
# and the consulLifecycle hooks against a real Consul agent. All of them
# are built into bin/ the first time (about 13 minutes on 2 cores).
test: $(CONTROLPLANE_BINS) $(CONSUL_BIN) test-tools lint fuzz-short
	KUBEBUILDER_ASSETS=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# test-tools installs the Debian packages whose programs the tests run and
# that a bare machine lacks: the consulLifecycle hooks call curl, wget and,
# as in an Alpine image, busybox. Needs root when one is missing.
TEST_TOOLS := curl wget busybox
test-tools:
	@missing=$$(for t in $(TEST_TOOLS); do command -v $$t >/dev/null || echo $$t; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing" $$missing "(the tests run them)"; \
	  apt-get update -q && apt-get install -y -q $$missing; \
	fi

# unit runs the tests that need no control plane.
unit:
	$(GO) test -count=1 -short ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# demo evaluates every example offline with `celadon eval`, no cluster needed,
# with the flags the golden tests give it (loadExample in
# cmd/celadon/examples_test.go): the policies are policies/ when the example
# has that directory, else policy.yaml. Exit 1 (a denial) is an example's
# answer; the target fails when an example cannot be evaluated (exit 2).
EXAMPLES ?= examples
demo: $(BIN)/celadon
	@broken=(); \
	for d in $(EXAMPLES)/[!_]*/; do \
	  d=$${d%/}; \
	  echo "=== $$d/"; \
	  if [ -d $$d/policies ]; then args=(-p $$d/policies); else args=(-p $$d/policy.yaml); fi; \
	  [ -f $$d/object.yaml ] && args+=(-f $$d/object.yaml); \
	  [ -f $$d/old.yaml ] && args+=(--old $$d/old.yaml); \
	  [ -f $$d/review.json ] && args+=(--request $$d/review.json); \
	  [ -f $$d/cluster.yaml ] && args+=(--cluster $$d/cluster.yaml); \
	  [ -f $$d/eval.args ] && args+=($$(cat $$d/eval.args)); \
	  $(BIN)/celadon eval "$${args[@]}"; code=$$?; echo "(exit $$code)"; \
	  [ $$code -le 1 ] || broken+=($$d); \
	done; \
	if [ $${#broken[@]} -gt 0 ]; then echo "demo: cannot evaluate $${broken[*]}" >&2; exit 1; fi

# run is the demo: an embedded control plane, `celadon serve` with the
# shipped policies, example objects, and what the webhook did to them.
run: $(CONTROLPLANE_BINS) $(BIN)/celadon
	$(GO) run ./hack/demo -celadon $(BIN)/celadon

# deploy-generate regenerates deploy/ from policies/ and from what the server
# and the builtins declare: the policy copies behind the ConfigMap and the
# chart's, the chart's copy of the PrometheusRule, and the RBAC of the
# kustomizations and of the chart. `make test` fails while they are out of
# date.
deploy-generate:
	$(GO) generate ./test/deploy

# openapi-snapshot regenerates engine/openapi/, the OpenAPI v3 schemas of
# the built-in kinds that policies' CEL is type-checked against offline
# (`celadon validate`, `eval`, `test`): it starts etcd and kube-apiserver
# from bin/, every API version enabled, and keeps from /openapi/v3 the
# group-versions the built-in resources are served from.
openapi-snapshot: bin/etcd bin/kube-apiserver
	$(GO) run ./hack/openapi-snapshot

# policy-test runs the suites of the shipped policies and of the library (make
# test runs them too).
policy-test: $(BIN)/celadon
	$(BIN)/celadon test policies/tests policies/library/tests

# image builds the container image (needs Docker with BuildKit).
image:
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) --build-arg DATE=$(DATE) -t $(IMAGE) .

# fuzz runs each fuzz target for FUZZTIME (a duration, or a count such as
# 3000x) on top of its seed corpus (the seeds alone run in every `go test`).
# Minimizing a new input stops after FUZZMINIMIZETIME. A crash is saved under
# the package's testdata/fuzz/ and becomes a regression test.
FUZZTIME ?= 30s
FUZZMINIMIZETIME ?= 5s
# Every fuzz target of the module, found in the sources: package:FuzzName.
FUZZ_TARGETS := $(shell grep -rHo --include='*_test.go' --exclude-dir=bin '^func Fuzz[A-Za-z0-9_]*' . | sed -E 's|^\./(.*)/[^/]*:func |\1:|' | sort -u)
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  echo "=== $$t ($(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./$${t%%:*}/; \
	done

# fuzz-short runs each fuzz target for FUZZTIME_SHORT executions, as `make
# test` does: crashes the seeds do not reach show up in CI too. It runs the
# ordinary test binaries, whose compilation `go test` shares, so the inputs
# are mutated without coverage guidance: a guided run (`make fuzz`) first
# rebuilds every dependency instrumented, some 9 minutes on a fresh 2-core
# machine, and 3,000 executions are too few for guidance to matter (each
# target says so in a warning). A crash is saved under the package's
# testdata/fuzz/ as with `make fuzz`. It counts
# executions rather than time because Go's fuzz coordinator can report its
# own -fuzztime deadline as a failure ("context deadline exceeded") when the
# deadline fires while a worker is busy; a count sets no deadline.
FUZZTIME_SHORT ?= 3000x
FUZZ_PACKAGES := $(sort $(foreach t,$(FUZZ_TARGETS),$(firstword $(subst :, ,$(t)))))
fuzz-short:
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; \
	for p in $(FUZZ_PACKAGES); do $(GO) test -c -o "$$dir/$$(echo $$p | tr / _).test" ./$$p/; done; \
	for t in $(FUZZ_TARGETS); do \
	  p=$${t%%:*}; echo "=== $$t ($(FUZZTIME_SHORT), unguided)"; \
	  (cd $$p && "$$dir/$$(echo $$p | tr / _).test" -test.run '^$$' -test.fuzz "^$${t#*:}$$" -test.fuzztime $(FUZZTIME_SHORT) \
	    -test.fuzzminimizetime $(FUZZMINIMIZETIME) -test.fuzzcachedir "$$dir/cache/$$p"); \
	done

# bench runs the Go benchmarks, then short load runs through a real
# `celadon serve` at concurrency 1, 8 and 32, each followed by the same run
# against a no-op HTTPS webhook (the floor: a table of Celadon/floor
# ratios), then `celadon scan` of a
# synthetic cluster of 1,000, 10,000 and 50,000 ConfigMaps (SCAN_SIZES; 0 skips
# it), and prints the tables.
bench: $(CONTROLPLANE_BINS) $(BIN)/celadon
	CELADON=$(BIN)/celadon GO=$(GO) BENCH_PKGS="./engine/ ./builtins/" bash hack/bench.sh

# profile takes a CPU profile of `celadon serve` under c=32 /mutate load
# (--pprof-bind-address on 127.0.0.1) and prints `go tool pprof -top` of it
# (hack/profile.sh; PROFILE_DURATION, PROFILE_PATH, PROFILE_OUT).
profile: $(CONTROLPLANE_BINS) $(BIN)/celadon
	CELADON=$(BIN)/celadon GO=$(GO) bash hack/profile.sh

# soak runs `celadon serve` for SOAK_DURATION (default 10m) under mixed
# load with policy edits every 30s and certificate rotations every 2m, and
# prints RSS and goroutines over time (hack/soak.sh). Not part of test.
soak: $(CONTROLPLANE_BINS) $(BIN)/celadon
	CELADON=$(BIN)/celadon GO=$(GO) bash hack/soak.sh

clean:
	rm -rf $(BIN)/celadon
