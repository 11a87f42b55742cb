#!/usr/bin/env bash
# The compose cluster (deploy/compose/README.md has the contract):
#   scripts/cluster.sh up            start it, assign the slots, return once SET/GET work
#                                    through both proxies (make cluster-up)
#   scripts/cluster.sh down          remove every container, network and volume of project
#                                    kodis, and the secrets file (make cluster-down)
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

topology() { curl -sf --max-time 3 http://127.0.0.1:18080/api/v1/topology; }
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
    [ "$(redis-cli -p $port --no-raw SET kodis:cluster-up "$v" 2>&1)" = '"OK"' ] || return 1
    [ "$(redis-cli -p $port --raw GET kodis:cluster-up 2>&1)" = "$v" ] || return 1
  done
}
ready_dashboard() { curl -sf --max-time 3 http://127.0.0.1:18080/readyz; }
kodis_cli() { docker exec kodis-dashboard-1 kodis --dashboard http://kodis-dashboard:18080 "$@"; }

up() {
  for i in kodis:dev kodis-etcd:dev kodis-lb:dev; do
    docker image inspect "$i" >/dev/null 2>&1 || die "no image $i: run make image first"
  done
  secrets
  local t0=$SECONDS
  compose up -d
  wait_for "the active dashboard on 127.0.0.1:18080" "$UP_TIMEOUT" ready_dashboard
  wait_for "6 servers in the topology" "$UP_TIMEOUT" servers_joined 6
  if [ "$(counts | cut -d" " -f2)" -eq 0 ]; then
    kodis_cli slots init >/dev/null
  fi
  wait_for "SET/GET through both proxies" "$UP_TIMEOUT" serves
  log "up in $((SECONDS - t0)) s: proxies 127.0.0.1:19000 and :19001, dashboard 127.0.0.1:18080"
}

down() {
  compose --profile group4 down --volumes --remove-orphans --timeout 10
  rm -f "$SECRETS"
  local left
  left=$(docker ps -aq --filter label=com.docker.compose.project=kodis
         docker network ls -q --filter label=com.docker.compose.project=kodis
         docker volume ls -q --filter label=com.docker.compose.project=kodis)
  [ -z "$left" ] || die "left behind: $left"
  log "down: no container, network or volume of project kodis left"
}

add_group() {
  secrets
  compose --profile group4 up -d kodis-group-4-0 kodis-group-4-1
  wait_for "group 4's 2 servers in the topology" "$UP_TIMEOUT" servers_joined 8
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
    [ "$(redis-cli -p "$port" --no-raw SET "smoke:$k" "$value" 2>&1)" = '"OK"' ] && ok=$((ok + 1))
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

smoke() {
  if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
    echo "smoke: SKIPPED (no Docker engine here)"
    return 0
  fi
  local t0=$SECONDS
  scripts/image.sh
  trap 'rc=$?; [ $rc -eq 0 ] || echo "smoke: FAILED; cleaning up" >&2; down' EXIT
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

case ${1:-} in
  up) up ;;
  down) down ;;
  add-group) add_group ;;
  stop-server) stop_server "${2:-}" ;;
  smoke) smoke ;;
  *) die "usage: $0 up|down|add-group|stop-server NAME|smoke" ;;
esac
