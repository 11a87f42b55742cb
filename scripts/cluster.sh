#!/usr/bin/env bash
# The compose cluster (deploy/compose/README.md has the contract):
#   scripts/cluster.sh up            start it, assign the slots, return once SET/GET work
#                                    through both proxies (make cluster-up)
#   scripts/cluster.sh down          remove every container, network and volume of project
#                                    kodis, and the secrets file (make cluster-down);
#                                    refuses a cluster another checkout started
#                                    (FORCE=1 removes it anyway)
#   scripts/cluster.sh add-group     start group 4 (make cluster-add-group)
#   scripts/cluster.sh stop-server N the manifests' preStop (kodis-ha prestop: a master
#                                    hands over first), then `docker stop N`
#   scripts/cluster.sh smoke         up, traffic, docker kill a master, writes succeed
#                                    again through failover, down (make test)
# Every wait polls with a deadline (UP_TIMEOUT, default 240 s; FAILOVER_TIMEOUT 90 s).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=deploy/compose
SECRETS=$DIR/secrets.env
UP_TIMEOUT=${UP_TIMEOUT:-240}
FAILOVER_TIMEOUT=${FAILOVER_TIMEOUT:-90}
compose() { docker-compose -p kodis -f "$DIR/docker-compose.yml" "$@"; }
die() { echo "cluster: $*" >&2; exit 1; }
log() { echo "cluster: $*"; }

secrets() {
  [ -f "$SECRETS" ] && return
  local r t
  r=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  t=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  (umask 077; printf 'KODIS_REDIS_PASSWORD=%s\nKODIS_ADMIN_TOKEN=%s\n' "$r" "$t" >"$SECRETS")
}
token() { sed -n 's/^KODIS_ADMIN_TOKEN=//p' "$SECRETS"; }

# wait_for DESCRIPTION SECONDS COMMAND...: runs COMMAND every 0.5 s until it succeeds.
wait_for() {
  local what=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { echo "cluster: timed out after ${secs}s waiting for $what" >&2; return 1; }
    sleep 0.5
  done
}

# Reads need the admin token too (they name every server).
topology() { curl -sf --max-time 3 -H "Authorization: Bearer $(token)" http://127.0.0.1:18080/api/v1/topology; }
# Prints how many servers the topology lists and how many slots are owned.
counts() {
  topology | python3 -c '
import json, sys
t = json.load(sys.stdin)
t = t.get("topology", t)
servers = sum(len(g["servers"]) for g in t["groups"])
slots = sum(r["end"] - r["start"] + 1 for r in t["slots"])
print(servers, slots)'
}
servers_joined() { [ "$(counts | cut -d" " -f1)" -ge "$1" ]; }
serves() {
  local port v="up-$RANDOM"
  for port in 19000 19001; do
    [ "$(redis-cli -p $port SET kodis:cluster-up "$v" 2>&1)" = OK ] || return 1
    [ "$(redis-cli -p $port --raw GET kodis:cluster-up 2>&1)" = "$v" ] || return 1
  done
}
# Every Redis container of the compose file that runs is healthy (`kodis-ha probe
# ready`: a master, or a replica whose link is up and synced).
servers_healthy() {
  local want=$1 n
  n=$(docker ps --filter label=com.docker.compose.project=kodis --filter name=kodis-group- \
        --filter health=healthy -q | wc -l)
  [ "$n" -ge "$want" ]
}
# The HA leader's /metrics ("" when no HA leads).
ha_metrics() {
  local port m
  for port in 18091 18092; do
    m=$(curl -sf --max-time 3 "http://127.0.0.1:$port/metrics") || continue
    grep -q '^kodis_ha_leader 1' <<<"$m" && { echo "$m"; return 0; }
  done
  return 1
}
# HA has probed every server again since SNAPSHOT (its probe durations all changed),
# N servers up: a replica it last saw before its first sync cannot replace its master.
ha_probed_since() {
  local snapshot=$1 want=$2 m
  m=$(ha_metrics) || return 1
  [ "$(grep -c '^kodis_ha_server_up{.*} 1$' <<<"$m")" -ge "$want" ] || return 1
  [ "$(grep '^kodis_ha_server_probe_seconds{' <<<"$m" | grep -cvxFf <(echo "$snapshot"))" -ge "$want" ]
}
ha_settled() {
  local want=$1 snapshot
  wait_for "$want Redis containers healthy (replicas synced)" "$UP_TIMEOUT" servers_healthy "$want"
  wait_for "an HA leader" "$UP_TIMEOUT" ha_metrics
  snapshot=$(ha_metrics | grep '^kodis_ha_server_probe_seconds{' || true)
  wait_for "the HA leader to probe the $want synced servers" "$UP_TIMEOUT" ha_probed_since "$snapshot" "$want"
}
ready_dashboard() { curl -sf --max-time 3 http://127.0.0.1:18080/readyz; }
kodis_cli() { docker exec kodis-dashboard-1 kodis --dashboard http://kodis-dashboard:18080 "$@"; }

# The working directories of the running project `kodis` (one per checkout that
# started containers of it): names are fixed, so one Docker engine holds one cluster.
owners() {
  docker ps -a --filter label=com.docker.compose.project=kodis \
    --format '{{.Label "com.docker.compose.project.working_dir"}}' | sort -u
}
check_owner() {
  local mine theirs
  mine=$(cd "$DIR" && pwd -P)
  theirs=$(owners | grep -vxF "$mine" || true)
  [ -z "$theirs" ] || die "project kodis is running from $theirs; run make cluster-down there first"
}

up() {
  check_owner
  # No container: volumes and networks left by an earlier cluster (an etcd holding its
  # old topology) would be reused; a new cluster starts empty.
  [ -n "$(docker ps -aq --filter label=com.docker.compose.project=kodis)" ] || removed_all >/dev/null 2>&1 || true
  for i in kodis:dev kodis-etcd:dev kodis-lb:dev; do
    docker image inspect "$i" >/dev/null 2>&1 || die "no image $i: run make image first"
  done
  secrets
  local t0=$SECONDS
  compose up -d || die "docker-compose up failed"
  wait_for "the active dashboard on 127.0.0.1:18080" "$UP_TIMEOUT" ready_dashboard
  wait_for "6 servers in the topology" "$UP_TIMEOUT" servers_joined 6
  if [ "$(counts | cut -d" " -f2)" -eq 0 ]; then
    kodis_cli slots init >/dev/null
  fi
  wait_for "SET/GET through both proxies" "$UP_TIMEOUT" serves
  ha_settled 6
  log "up in $((SECONDS - t0)) s: proxies 127.0.0.1:19000 and :19001, dashboard 127.0.0.1:18080"
}

down() {
  # Another checkout's cluster is not ours to remove (FORCE=1 removes it all the same).
  [ "${FORCE:-0}" = 1 ] || check_owner
  compose --profile group4 down --volumes --remove-orphans --timeout 10 || true
  rm -f "$SECRETS"
  # Docker may still hold a network endpoint for a moment after its container is gone.
  wait_for "project kodis's network and volumes to go" 30 removed_all || true
  local left
  left=$(leftovers)
  [ -z "$left" ] || die "left behind: $left"
  log "down: no container, network or volume of project kodis left"
}
leftovers() {
  docker ps -aq --filter label=com.docker.compose.project=kodis
  docker network ls -q --filter label=com.docker.compose.project=kodis
  docker volume ls -q --filter label=com.docker.compose.project=kodis
}
removed_all() {
  [ -z "$(docker ps -aq --filter label=com.docker.compose.project=kodis)" ] || return 1
  local n
  for n in $(docker network ls -q --filter label=com.docker.compose.project=kodis); do docker network rm "$n"; done
  for n in $(docker volume ls -q --filter label=com.docker.compose.project=kodis); do docker volume rm "$n"; done
  [ -z "$(leftovers)" ]
}

add_group() {
  secrets
  compose --profile group4 up -d kodis-group-4-0 kodis-group-4-1
  wait_for "group 4's 2 servers in the topology" "$UP_TIMEOUT" servers_joined 8
  ha_settled 8
  log "group 4 joined (no slots yet: kodis rebalance)"
}

stop_server() {
  local name=${1:?container name}
  docker exec "$name" sh -c 'exec kodis-ha prestop --dashboard http://kodis-dashboard:18080 --addr "$(hostname):6379"' \
    || die "prestop failed on $name"
  docker stop -t 60 "$name" >/dev/null
}

# Writes keys smoke:0..29 with VALUE through PORT; prints how many were acknowledged.
write_keys() {
  local port=$1 value=$2 ok=0 k
  for k in $(seq 0 29); do
    [ "$(redis-cli -p "$port" SET "smoke:$k" "$value" 2>&1)" = OK ] && ok=$((ok + 1))
  done
  echo $ok
}
all_written() { [ "$(write_keys 19000 "$1")" -eq 30 ] && [ "$(write_keys 19001 "$1")" -eq 30 ]; }
master_of() {
  topology | python3 -c '
import json, sys
t = json.load(sys.stdin)
t = t.get("topology", t)
print(next(g["servers"][0] for g in t["groups"] if g["id"] == int(sys.argv[1])))' "$1"
}
master_is_not() { local m; m=$(master_of "$1") && [ "$m" != "$2" ]; }

# What a failed smoke test leaves to read: the topology and the last lines of HA, the
# dashboards and the proxies.
failed() {
  echo "smoke: FAILED; topology: $(topology 2>&1)" >&2
  local c
  for c in kodis-ha-1 kodis-ha-2 kodis-dashboard-1 kodis-dashboard-2 kodis-proxy-1 kodis-proxy-2; do
    echo "--- docker logs --tail 20 $c" >&2
    docker logs --tail 20 "$c" 2>&1 | cut -c1-300 >&2 || true
  done
}

smoke() {
  if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
    echo "smoke: SKIPPED (no Docker engine here)"
    return 0
  fi
  local t0=$SECONDS
  scripts/image.sh
  lock
  # Never take over (or tear down) a cluster another checkout runs on this engine (a
  # shared development machine; CI's engine is fresh); our own leftovers go first.
  local mine theirs
  mine=$(cd "$DIR" && pwd -P)
  theirs=$(owners | grep -vxF "$mine" || true)
  if [ -n "$theirs" ]; then
    echo "smoke: SKIPPED: project kodis on this Docker engine belongs to $theirs (names are fixed: one cluster per engine)"
    return 0
  fi
  [ -z "$(owners)" ] || down
  trap 'rc=$?; [ $rc -eq 0 ] || failed; down' EXIT
  up
  all_written before || die "writes through both proxies failed before any fault"
  local master
  master=$(master_of 1)
  log "docker kill ${master%:*} (master of group 1)"
  local k0=$SECONDS
  docker kill "${master%:*}" >/dev/null
  wait_for "group 1's failover in the topology" "$FAILOVER_TIMEOUT" master_is_not 1 "$master"
  wait_for "all 30 keys writable through both proxies" "$FAILOVER_TIMEOUT" all_written after
  local v
  v=$(redis-cli -p 19001 --raw GET smoke:0)
  [ "$v" = after ] || die "GET smoke:0 through proxy 2 gave '$v', want 'after'"
  log "writes succeed again $((SECONDS - k0)) s after the kill (new master $(master_of 1))"
  echo "smoke: PASSED in $((SECONDS - t0)) s"
}

# One command at a time per Docker engine, whichever checkout runs it: the names are
# fixed, and two `up`s (or an `up` and a `down`) interleaved would mix two clusters.
lock() {
  exec 9>/tmp/kodis-compose.lock
  flock -w "$UP_TIMEOUT" 9 || die "another scripts/cluster.sh held the lock for ${UP_TIMEOUT}s"
}

case ${1:-} in
  up | down | add-group) lock ;;
esac
case ${1:-} in
  up) up ;;
  down) down ;;
  add-group) add_group ;;
  stop-server) stop_server "${2:-}" ;;
  smoke) smoke ;;
  *) die "usage: $0 up|down|add-group|stop-server NAME|smoke" ;;
esac
