# Kodis: the two commands the README promises, plus benchmarks.
#   make run    a local Kodis (kodis up): dashboard, 2 groups of master + replica,
#               a proxy on 127.0.0.1:19000; Ctrl-C stops it all
#   make test   install what the tests need, then fmt, clippy, the Kubernetes
#               manifests (scripts/validate-manifests.sh) and every test
#   make bench  criterion micro benchmarks, the end-to-end comparison and the
#               migration-under-load benchmark
#   make perf-guard  instructions per request (callgrind) against the recorded baseline

SHELL := /bin/bash
.PHONY: deps test run run-static bench bench-micro bench-e2e bench-migration fmt perf-guard perf-baseline \
	image cluster-up cluster-down cluster-add-group smoke chaos

# Debian packages the tests and benchmarks start: redis-server, redis-cli and
# redis-benchmark, twemproxy (nutcracker), etcd-server, and protoc (protobuf-compiler)
# to build etcd-client.
deps:
	@scripts/install-deps.sh

test: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --all-features -- -D warnings
	scripts/validate-manifests.sh
	python3 scripts/import-cycles.py
	scripts/run-tests.sh
	scripts/cluster.sh smoke
	$(MAKE) --no-print-directory perf-guard TOLERANCE=0.05

run: deps
	cargo build --release -p kodis-proxy -p kodis-dashboard -p kodis-ha
	target/release/kodis up

# The proxy alone in static mode over two redis-servers (no dashboard).
run-static:
	@scripts/run-local.sh

bench: bench-micro bench-e2e bench-migration

bench-micro:
	cargo bench -p kodis-benches

bench-e2e: deps
	cargo build --release -p kodis-proxy
	python3 benches/e2e.py --proxy-bin target/release/kodis-proxy

# The request path's regression guard: kodis-proxy's instructions per request under
# callgrind against benches/callgrind-baseline.json (fails above TOLERANCE, 3%).
# After a change that is meant to move it: make perf-baseline, and commit the file.
TOLERANCE ?= 0.03
perf-guard: deps
	cargo build --release -p kodis-proxy
	python3 benches/callgrind.py --no-twemproxy --check benches/callgrind-baseline.json --tolerance $(TOLERANCE)

perf-baseline: deps
	cargo build --release -p kodis-proxy
	python3 benches/callgrind.py --write-baseline benches/callgrind-baseline.json

bench-migration: deps
	cargo build --release -p kodis-proxy -p kodis-dashboard
	python3 benches/migration.py

fmt:
	cargo fmt --all

# Containers (deploy/README.md, deploy/compose/README.md): the image kodis:<version> and
# kodis:dev (Debian base made with debootstrap when absent), the compose cluster, and the
# smoke test `make test` runs (skipped without a Docker engine).
image: deps
	scripts/image.sh

cluster-up:
	scripts/cluster.sh up

cluster-down:
	scripts/cluster.sh down

cluster-add-group:
	scripts/cluster.sh add-group

smoke: deps
	scripts/cluster.sh smoke

# The chaos suite (README "Chaos suite"): image, compose cluster, every fault scenario
# under a checked load, cluster down; one line per scenario, then `chaos: N passed, M
# failed`. Long (about 15 minutes). ARGS="--only kill-master,kill-proxy" for some.
chaos: deps
	scripts/chaos.sh $(ARGS)
