#!/usr/bin/env python3
"""Transactions and blocking commands, through kodis-proxy and direct, as ratios.

Starts two throw-away redis-servers and kodis-proxy over both (plus one more
redis-server as the direct reference), then measures in alternating rounds:

- tx:       MULTI, SET, INCR, GET, EXEC of one hash-tagged key per transaction,
            written as one pipeline and read back; WORKERS client processes at once.
- pingpong: BLPOP / RPUSH ping-pong between two connections (one blocks, the other
            pushes, then they swap); PAIRS pairs at once.
- publish:  one client PUBLISHes (one round trip each) to a channel with
            SUBSCRIBERS subscribers; every subscriber must get every message.
- resp3:    redis-benchmark GET/SET -P 16 with -3 (RESP3) and without, to show
            what RESP3 sessions cost through the proxy (kodis/direct per protocol).

Prints a markdown table of medians: operations per second and proxy/direct ratio.

    python3 benches/commands.py [--rounds 3] [--seconds 3] [--proxy-bin target/release/kodis-proxy]

Stdlib only. Every process it starts is stopped again.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kodis_bench as kb  # noqa: E402
from kodis_bench import Client, resp as enc  # noqa: E402

KINDS = ("tx", "pingpong", "publish", "resp2", "resp3")
WORKERS = 8
PAIRS = 8
SUBSCRIBERS = 10


def tx_worker(port: int, wid: int, seconds: float, out) -> None:
    c = Client(port)
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        key = f"{{tx:{wid}:{n % 1000}}}:k"
        c.send(enc("MULTI") + enc("SET", key, "1") + enc("INCR", key) + enc("GET", key) + enc("EXEC"))
        for _ in range(4):
            c.reply()
        r = c.reply()
        assert r == [b"OK", b"2", b"2"], r
        n += 1
    out.put(n)


def pingpong_worker(port: int, pid: int, seconds: float, out) -> None:
    a, b = Client(port), Client(port)
    qa, qb = f"pp:{pid}:a", f"pp:{pid}:b"
    n = 0
    end = time.perf_counter() + seconds
    # a blocks on qa; b pushes to qa and then blocks on qb; a pushes to qb; ...
    a.send(enc("BLPOP", qa, "5"))
    while time.perf_counter() < end:
        b.send(enc("RPUSH", qa, "x") + enc("BLPOP", qb, "5"))
        b.reply()
        assert a.reply() == [qa.encode(), b"x"]
        a.send(enc("RPUSH", qb, "y") + enc("BLPOP", qa, "5"))
        a.reply()
        assert b.reply() == [qb.encode(), b"y"]
        n += 2
    # Unblock a's last BLPOP.
    b.send(enc("RPUSH", qa, "z"))
    b.reply()
    a.reply()
    out.put(n)


def subscriber(port: int, channel: str, ready, out) -> None:
    c = Client(port)
    c.send(enc("SUBSCRIBE", channel))
    c.reply()
    ready.put(1)
    n = 0
    while True:
        m = c.reply()
        if m[2] == b"__end__":
            break
        n += 1
    out.put(n)


def run_publish(port: int, seconds: float) -> float:
    ready: mp.Queue = mp.Queue()
    out: mp.Queue = mp.Queue()
    channel = f"bench:{port}:{time.time_ns()}"
    subs = [mp.Process(target=subscriber, args=(port, channel, ready, out))
            for _ in range(SUBSCRIBERS)]
    for p in subs:
        p.start()
    for _ in subs:
        ready.get(timeout=30)
    c = Client(port)
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        c.send(enc("PUBLISH", channel, "message-payload-of-32-bytes....."))
        got = c.reply()
        assert got == str(SUBSCRIBERS).encode(), got
        n += 1
    c.send(enc("PUBLISH", channel, "__end__"))
    c.reply()
    counts = [out.get(timeout=60) for _ in subs]
    for p in subs:
        p.join()
    assert all(k == n for k in counts), (n, counts)
    return n / seconds


def run_resp3(port: int, resp3: bool) -> float:
    argv = ["redis-benchmark", "-p", str(port), "-c", "50", "-n", "200000", "-r", "100000",
            "-P", "16", "-t", "get", "--csv"]
    if resp3:
        argv.append("-3")
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith('"GET"'):
            return float(line.split(",")[1].strip('"'))
    raise RuntimeError(out)


def run(kind: str, port: int, seconds: float) -> float:
    if kind == "publish":
        return run_publish(port, seconds)
    if kind in ("resp2", "resp3"):
        return run_resp3(port, kind == "resp3")
    q: mp.Queue = mp.Queue()
    fn, k = (tx_worker, WORKERS) if kind == "tx" else (pingpong_worker, PAIRS)
    procs = [mp.Process(target=fn, args=(port, i, seconds, q)) for i in range(k)]
    for p in procs:
        p.start()
    total = sum(q.get(timeout=seconds + 30) for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--proxy-bin", default=str(kb.REPO_ROOT / "target/release/kodis-proxy"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="kodis-cmdbench-")
    children = kb.Children(Path(tmp))
    try:
        rs = kb.find_exe(None, "redis-server", [])
        if not rs:
            kb.log("redis-server is needed (make deps)")
            return 2
        ports = [kb.start_redis(children, rs, f"redis-{i + 1}")[1] for i in range(3)]
        _, pport = kb.start_kodis(children, args.proxy_bin, ports[:2], [])
        direct = ports[2]
        results: dict[tuple[str, str], list[float]] = {}
        for rnd in range(args.rounds):
            for kind in KINDS:
                for target, port in (("direct", direct), ("kodis", pport)):
                    rate = run(kind, port, args.seconds)
                    results.setdefault((kind, target), []).append(rate)
                    print(f"round {rnd + 1} {kind:8} {target:6} {rate:10.0f}/s", file=sys.stderr)
        print(f"\n{args.rounds} rounds of {args.seconds:g} s; medians\n")
        print("| test | direct /s | kodis /s | kodis / direct |")
        print("|---|---:|---:|---:|")
        names = {"tx": f"MULTI+3+EXEC, {WORKERS} clients",
                 "pingpong": f"BLPOP/RPUSH ping-pong, {PAIRS} pairs (pops/s)",
                 "publish": f"PUBLISH to {SUBSCRIBERS} subscribers (publishes/s)",
                 "resp2": "GET -P 16, RESP2 (redis-benchmark)",
                 "resp3": "GET -P 16, RESP3 (redis-benchmark -3)"}
        for kind in KINDS:
            d = statistics.median(results[(kind, "direct")])
            k = statistics.median(results[(kind, "kodis")])
            print(f"| {names[kind]} | {d:.0f} | {k:.0f} | {k / d:.2f}x |")
        return 0
    finally:
        children.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
