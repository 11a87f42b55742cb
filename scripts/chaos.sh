#!/usr/bin/env bash
# make chaos: the chaos suite (deploy/compose/chaos/, README "Chaos suite").
# Builds the image, checks the checker on made-up histories, starts the compose
# cluster, runs every scenario (or those named: scripts/chaos.sh --only kill-master),
# and always removes the cluster again. Figures: .build/chaos.json and
# .build/chaos-table.md (the README's table). Exit 1 when a scenario failed.
# A cluster of project kodis already running is never taken over or removed: the
# suite refuses to start, unless CHAOS_USE_RUNNING=1 (then it runs against that
# cluster, secrets from CHAOS_SECRETS or deploy/compose/secrets.env, and leaves it up).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import redis' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check redis >/dev/null
python3 -m unittest deploy/compose/chaos/test_check.py
mkdir -p .build
run() { python3 deploy/compose/chaos/chaos.py --json .build/chaos.json --table .build/chaos-table.md "$@"; }
if [ "${CHAOS_USE_RUNNING:-}" = 1 ]; then
  run "$@"
  exit
fi
if [ -n "$(docker ps -aq --filter label=com.docker.compose.project=kodis)" ]; then
  echo "chaos: containers of project kodis exist already (another run?): make cluster-down" \
       "first, or CHAOS_USE_RUNNING=1 to use that cluster" >&2
  exit 1
fi
[ "${CHAOS_SKIP_IMAGE:-}" = 1 ] || scripts/image.sh
trap 'scripts/cluster.sh down' EXIT
scripts/cluster.sh up
run "$@"
