#!/usr/bin/env bash
# Runs every test: the Rust workspace (real redis-servers on free ports) and the
# redis-py client-library test against the proxy binary, and the web console's browser
# test against a `kodis up`; ends with one summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# redis-py from PyPI, if this machine does not have it yet (the Rust TLS tests use
# it too).
python3 -c 'import redis' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check redis >/dev/null
cargo test --workspace --all-features --no-fail-fast 2>&1 | tee "$log"
rust_rc=${PIPESTATUS[0]}
cargo build --quiet -p kodis-proxy
python3 proxy/tests/clients/redis_py_smoke.py target/debug/kodis-proxy 2>&1 | tee -a "$log"
py_rc=${PIPESTATUS[0]}
# The web console in headless Chromium (Selenium from PyPI) against a `kodis up` on
# free ports, which the script starts and stops.
python3 -c 'import selenium' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check selenium >/dev/null
cargo build --quiet -p kodis-dashboard -p kodis-proxy -p kodis-ha
python3 dashboard/tests/console/test_console.py --bin-dir target/debug 2>&1 | tee -a "$log"
console_rc=${PIPESTATUS[0]}
passed=$(grep -oE '(ok|FAILED)\. [0-9]+ passed' "$log" | awk '{s+=$2} END {print s+0}')
failed=$(grep -oE '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
# The Python scripts' own summary lines ("N passed, M failed"); their failures are
# already counted above.
py_passed=$(grep -oE '^[0-9]+ passed, [0-9]+ failed$' "$log" | awk '{s+=$1} END {print s+0}')
passed=$((passed + py_passed))
echo
echo "all tests: $passed passed, $failed failed"
[ "$rust_rc" -eq 0 ] && [ "$py_rc" -eq 0 ] && [ "$console_rc" -eq 0 ] && [ "$failed" -eq 0 ]
