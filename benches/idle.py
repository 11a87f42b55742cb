#!/usr/bin/env python3
"""Many idle clients: what each costs a proxy, and what they cost the busy ones.

Starts two throw-away redis-servers, kodis-proxy and twemproxy over both, then for
each proxy: runs redis-benchmark (GET, -c BUSY) alone, opens IDLE client connections
that each send one PING and then wait, reads the proxy's RSS before and after (so the
figure is KiB of RSS per idle client), runs the same redis-benchmark among the idle
clients, and closes them. Prints per proxy: KiB per idle client and the busy clients'
throughput among the idle ones as a ratio to alone (median over rounds).

    python3 benches/idle.py                        # 10,000 idle, 50 busy, 3 rounds
    python3 benches/idle.py --idle 2000 --rounds 1 # quicker
    python3 benches/idle.py --proxy-args "--worker-threads 1"

Needs open files for IDLE connections in this process and in each proxy (`ulimit -n`;
kodis-proxy gets `--max-clients` above IDLE + BUSY). Stdlib only.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import shutil
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kodis_bench as kb  # noqa: E402
from kodis_bench import HOST, Children, log, resp, rss_kib  # noqa: E402


def open_idle(port: int, n: int) -> list[socket.socket]:
    """n connections, each answered one PING, left open."""
    socks = []
    for _ in range(n):
        socks.append(socket.create_connection((HOST, port), timeout=10))
    for s in socks:
        s.sendall(resp(b"PING"))
    for s in socks:
        if not s.recv(64).startswith(b"+PONG"):
            raise RuntimeError(f"an idle client got no PONG from port {port}")
    return socks


def busy(rb: str, port: int, clients: int, n: int) -> float:
    argv = [rb, "-h", HOST, "-p", str(port), "-c", str(clients), "-n", str(n), "-r", "100000",
            "-t", "get", "-q", "--csv"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    rows = kb.parse_csv(r.stdout)
    if r.returncode != 0 or not rows:
        raise RuntimeError(f"{shlex.join(argv)} failed: {r.stdout[-300:]}{r.stderr[-300:]}")
    return float(rows[0][1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--busy", type=int, default=50)
    ap.add_argument("--requests", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--proxy-bin", default=str(kb.REPO_ROOT / "target/release/kodis-proxy"))
    ap.add_argument("--proxy-args", default="", help="more kodis-proxy flags")
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.idle + args.busy + 100
    if soft < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
        except (ValueError, OSError):
            pass
        if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
            print(f"idle.py: {need} open files needed, the limit is {hard} (ulimit -n)", file=sys.stderr)
            return 2
    rs, rb = shutil.which("redis-server"), shutil.which("redis-benchmark")
    nut = kb.find_exe(None, "nutcracker", ["/usr/sbin/nutcracker"])
    if not rs or not rb:
        print("idle.py: redis-server and redis-benchmark are needed (make deps)", file=sys.stderr)
        return 2
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, kb.on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="kodis-idle-"))
    children = Children(tmp)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        _, a = kb.start_redis(children, rs, "redis-a")
        _, b = kb.start_redis(children, rs, "redis-b")
        extra = ["--max-clients", str(args.idle + args.busy + 100), *shlex.split(args.proxy_args)]
        kodis, kport = kb.start_kodis(children, args.proxy_bin, [a, b], extra)
        targets = [("kodis", kodis.pid, kport)]
        if nut:
            tw, tport = kb.start_twemproxy(children, nut, [a, b])
            targets.append(("twemproxy", tw.pid, tport))
        for name, _, port in targets:
            busy(rb, port, args.busy, args.requests)  # warm-up: fills the key space
        for rnd in range(args.rounds):
            for name, pid, port in targets:
                alone = busy(rb, port, args.busy, args.requests)
                before = rss_kib(pid)
                socks = open_idle(port, args.idle)
                time.sleep(0.5)
                per_client = (rss_kib(pid) - before) / args.idle
                among = busy(rb, port, args.busy, args.requests)
                for s in socks:
                    s.close()
                r = results.setdefault(name, {"kib": [], "ratio": [], "alone": [], "among": []})
                r["kib"].append(per_client)
                r["ratio"].append(among / alone)
                r["alone"].append(alone)
                r["among"].append(among)
                log(f"round {rnd + 1} {name:10} {per_client:6.2f} KiB per idle client; busy "
                    f"{alone:,.0f} req/s alone, {among:,.0f} among {args.idle} idle ({among / alone:.2f}x)")
                # Let the closed connections go before the next target's reading.
                time.sleep(1)
    finally:
        children.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{args.idle} idle clients (one PING each, then open), {args.busy} busy clients "
          f"(redis-benchmark GET -n {args.requests}), median of {args.rounds} round(s)")
    print("command: python3 benches/idle.py " + shlex.join(argv) + "\n")
    print("| proxy | RSS per idle client | busy req/s alone | among the idle | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {statistics.median(r['kib']):.2f} KiB | {statistics.median(r['alone']):,.0f} | "
              f"{statistics.median(r['among']):,.0f} | {statistics.median(r['ratio']):.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
