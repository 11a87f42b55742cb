# Kodis: the two commands the README promises, plus benchmarks.
#   make run    a local Kodis: two redis-servers and kodis-proxy over them
#   make test   install what the tests need, then fmt, clippy and every test
#   make bench  criterion micro benchmarks and the end-to-end comparison

SHELL := /bin/bash
.PHONY: deps test run bench bench-micro bench-e2e fmt

# Debian packages the tests and benchmarks start: redis-server, redis-cli and
# redis-benchmark, twemproxy (nutcracker), etcd-server, and protoc (protobuf-compiler)
# to build etcd-client.
deps:
	@scripts/install-deps.sh

test: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --all-features -- -D warnings
	scripts/run-tests.sh

run:
	@scripts/run-local.sh

bench: bench-micro bench-e2e

bench-micro:
	cargo bench -p kodis-benches

bench-e2e: deps
	cargo build --release -p kodis-proxy
	python3 benches/e2e.py --proxy-bin target/release/kodis-proxy

fmt:
	cargo fmt --all
