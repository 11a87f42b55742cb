#!/usr/bin/env bash
# `make image`: kodis:<version> and kodis:dev (deploy/Dockerfile, target `host`), plus
# kodis-etcd:dev and kodis-lb:dev for the compose cluster. No registry is needed: when
# the base image ($DEBIAN_IMAGE, debian:bookworm-slim) is absent, it is made here with
# debootstrap (minbase bookworm, into .build/, git-ignored) and `docker import`. The
# binaries are the host's release build, stripped, copied to .build/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
DEBIAN_IMAGE=${DEBIAN_IMAGE:-debian:bookworm-slim}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
version=$(cargo metadata --no-deps --format-version 1 \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="kodis-proxy"))')

if ! docker image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1; then
  echo "image: no $DEBIAN_IMAGE here; making it with debootstrap"
  command -v debootstrap >/dev/null || { echo "image: debootstrap missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
  root=.build/rootfs-bookworm
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO rm -rf "$root"
  mkdir -p .build
  $SUDO debootstrap --variant=minbase bookworm "$root" "$MIRROR" >.build/debootstrap.log 2>&1 \
    || { tail -20 .build/debootstrap.log >&2; exit 1; }
  # Slim as Debian's own -slim image: no apt lists or caches, and dpkg skips
  # documentation, man pages and translations (now and for every later install).
  $SUDO rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/var/log/*.log "$root"/var/cache/debconf/*-old
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
    | $SUDO tee "$root"/etc/dpkg/dpkg.cfg.d/slim >/dev/null
  $SUDO tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
  $SUDO rm -rf "$root"
fi

cargo build --release -p kodis-proxy -p kodis-dashboard -p kodis-ha
mkdir -p .build/bin
for b in kodis-proxy kodis-dashboard kodis kodis-ha; do
  strip -o .build/bin/$b target/release/$b
done

docker build -q -f deploy/Dockerfile --target host --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" \
  -t "kodis:$version" -t kodis:dev . >/dev/null
docker build -q -f deploy/Dockerfile.etcd --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" \
  -t kodis-etcd:dev deploy >/dev/null
docker build -q -f deploy/Dockerfile.lb --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" \
  -t kodis-lb:dev deploy >/dev/null

# Every binary answers --version in the image, as uid 999 on a read-only root.
for b in kodis-proxy kodis-dashboard kodis kodis-ha redis-server; do
  docker run --rm --read-only kodis:dev "$b" --version >/dev/null \
    || { echo "image: $b --version fails in kodis:dev" >&2; exit 1; }
done
size=$(docker image inspect -f '{{.Size}}' kodis:dev)
echo "image: kodis:$version kodis:dev $((size / 1024 / 1024)) MiB; kodis-etcd:dev kodis-lb:dev"
[ "$size" -le $((200 * 1024 * 1024)) ] || { echo "image: kodis:dev is over 200 MiB" >&2; exit 1; }
