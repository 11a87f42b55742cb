#!/usr/bin/env bash
# make chaos: the chaos suite (deploy/compose/chaos/, README "Chaos suite").
# Builds the image, checks the checker on made-up histories, starts the compose
# cluster, runs every scenario (or those named: scripts/chaos.sh --only kill-master),
# and always removes the cluster again. Figures: .build/chaos.json and
# .build/chaos-table.md (the README's table). Exit 1 when a scenario failed.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import redis' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check redis >/dev/null
python3 -m unittest deploy/compose/chaos/test_check.py
[ "${CHAOS_SKIP_IMAGE:-}" = 1 ] || scripts/image.sh
mkdir -p .build
trap 'scripts/cluster.sh down' EXIT
scripts/cluster.sh up
python3 deploy/compose/chaos/chaos.py --json .build/chaos.json --table .build/chaos-table.md "$@"
