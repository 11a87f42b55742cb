#!/usr/bin/env bash
# A local Kodis on one machine: two redis-servers (ports 7379 and 7380, data under
# .kodis/) and kodis-proxy over them on 127.0.0.1:19000 (admin on 127.0.0.1:11080).
# Ctrl-C stops everything. Override ports with KODIS_PORT, KODIS_ADMIN_PORT,
# KODIS_REDIS_PORTS="7379 7380".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -p kodis-proxy
port=${KODIS_PORT:-19000}
admin=${KODIS_ADMIN_PORT:-11080}
read -r -a rports <<<"${KODIS_REDIS_PORTS:-7379 7380}"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
groups=()
for rp in "${rports[@]}"; do
  dir=.kodis/redis-$rp
  mkdir -p "$dir"
  redis-server --port "$rp" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
    --logfile redis.log --daemonize no &
  pids+=($!)
  groups+=(--group "127.0.0.1:$rp")
  for _ in $(seq 100); do redis-cli -p "$rp" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
echo
echo "Kodis is starting: connect with   redis-cli -p $port"
echo "metrics: curl http://127.0.0.1:$admin/metrics   topology: curl http://127.0.0.1:$admin/api/v1/topology"
echo "Ctrl-C stops the proxy and both redis-servers."
echo
# --backend-user: the proxy defines this Redis ACL user on both servers and logs in as
# it, so scripts cannot do what the proxy refuses (README, "The data-plane ACL user").
target/release/kodis-proxy --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
  --backend-user kodis-proxy "${groups[@]}" &
pids+=($!)
wait "${pids[-1]}"
