#!/usr/bin/env bash
# Regenerates proxy/src/command_table/redis-7.0-command.resp.
#
# That file is DATA PRODUCED BY redis-server, not hand-written: it is the raw RESP2
# reply bytes of `COMMAND` (no arguments) as sent by the Debian redis-server 7.0.x
# installed on the build machine. The proxy compiles it in with `include_bytes!` as
# its default command table (names, arity, flags, key specs, subcommands).
#
# This script starts a throwaway redis-server on a free loopback port with no
# persistence, captures the reply, checks that it is one complete RESP value, and
# stops the server again.
#
# Usage: scripts/dump-command-table.sh [output-file]
#   REDIS_SERVER=/path/to/redis-server overrides the binary (default: redis-server).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/proxy/src/command_table/redis-7.0-command.resp}"
server="${REDIS_SERVER:-redis-server}"

command -v "$server" >/dev/null || { echo "error: $server not found" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 not found" >&2; exit 1; }

workdir="$(mktemp -d)"
pid=""
cleanup() {
    if [[ -n "$pid" ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT

# Ask the kernel for a free port (a moment later it is almost surely still free).
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

"$server" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    --dir "$workdir" --logfile "$workdir/redis.log" &
pid=$!

echo "$("$server" --version)" >&2

# Capture with python3 so we read exactly one complete RESP value (the reply is far
# larger than one TCP segment, and nc would need a guessed timeout).
python3 - "$port" "$out.tmp" <<'EOF'
import socket, sys, time

port, out = int(sys.argv[1]), sys.argv[2]

deadline = time.time() + 10
while True:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        if sock.recv(64).startswith(b"+PONG"):
            break
        sock.close()
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("redis-server did not come up")
    time.sleep(0.05)

sock.sendall(b"*1\r\n$7\r\nCOMMAND\r\n")
buf = b""

def need(pos):
    """Reads from the socket until buf holds at least pos bytes."""
    global buf
    while len(buf) < pos:
        chunk = sock.recv(1 << 16)
        if not chunk:
            sys.exit("connection closed mid-reply")
        buf += chunk

def line(pos):
    while True:
        end = buf.find(b"\r\n", pos)
        if end >= 0:
            return buf[pos:end], end + 2
        need(len(buf) + 1)

def value(pos):
    """Returns the position just past the RESP2 value that starts at pos."""
    need(pos + 1)
    head, nxt = line(pos)
    kind, rest = head[:1], head[1:]
    if kind in (b"+", b"-", b":"):
        return nxt
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return nxt
        need(nxt + n + 2)
        return nxt + n + 2
    if kind == b"*":
        for _ in range(max(int(rest), 0)):
            nxt = value(nxt)
        return nxt
    sys.exit("unexpected RESP type %r" % kind)

end = value(0)
if not buf.startswith(b"*") or end != len(buf):
    sys.exit("reply is not exactly one array")
with open(out, "wb") as f:
    f.write(buf)
print("captured %d bytes" % len(buf), file=sys.stderr)
EOF

mv "$out.tmp" "$out"
echo "wrote $out" >&2
