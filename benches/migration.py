#!/usr/bin/env python3
"""Online migration under load: 1,000,000 small keys go from 2 groups to 3 while
redis-benchmark runs through kodis-proxy.

Starts three throw-away redis-servers, kodis-dashboard (embedded store in a temp dir)
and kodis-proxy, loads N keys named as redis-benchmark names them (key:000000123456,
3-byte values) through the proxy, then measures the same redis-benchmark load
(SET and GET, -r N, in chunks) twice: before the migration (the reference) and while
a third group is added and `POST /api/v1/rebalance` moves a third of the slots to it.
Prints a markdown table: client throughput and p99 during the migration as ratios to
the reference, and keys moved per second. At the end it checks that every key is
still there, each on the master of the group that owns its slot.

    cargo build --release -p kodis-proxy -p kodis-dashboard
    python3 benches/migration.py [--keys 1000000] [--chunk 100000] [--clients 50]
                                 [--dashboard-args "--migrate-slots-in-flight 512"]
                                 [--json out.json]

Stdlib only (Python 3.11); its helpers are in benches/kodis_bench.py.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kodis_bench as kb  # noqa: E402
from kodis_bench import HOST, Children, Test, log, read_reply, resp, rest, wait_until  # noqa: E402


# --------------------------------------------------------------------------- keys


def _crc16_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        table.append(c & 0xFFFF)
    return table


_TABLE = _crc16_table()


def key_slot(key: bytes) -> int:
    """Redis Cluster's slot (CRC16/XMODEM of the hash tag or key, mod 16384)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    crc = 0
    for b in key:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc % 16384


def key_name(i: int) -> bytes:
    return b"key:%012d" % i


def load_keys(port: int, n: int, per_mset: int = 1000) -> None:
    """MSETs of `per_mset` keys, pipelined, through the proxy; every reply must be +OK."""
    with socket.create_connection((HOST, port), timeout=60) as s:
        sent = 0
        for start in range(0, n, per_mset):
            args = [b"MSET"]
            for i in range(start, min(n, start + per_mset)):
                args += [key_name(i), b"xxx"]
            s.sendall(resp(*args))
            sent += 1
        buf = b""
        while buf.count(b"\r\n") < sent:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("the proxy closed the connection while loading")
            buf += chunk
        replies = buf.split(b"\r\n")[:sent]
        bad = [r for r in replies if r != b"+OK"]
        if bad:
            raise RuntimeError(f"MSET failed while loading: {bad[:3]}")


# Big keys (--big-keys): a hash, a sorted set and a list, each one key whose MIGRATE
# blocks both servers while it is serialized, sent and loaded. Elements are derived
# from their index, so that the end check can recompute any of them. Their names put
# them in slots that the rebalance from 2 groups to 3 moves (7472, 15253, 15521).
BIG = {
    b"big:hash:20": (b"HSET", 1_000_000),
    b"big:zset:41": (b"ZADD", 500_000),
    b"big:list:5": (b"RPUSH", 1_000_000),
}


def big_args(cmd: bytes, start: int, end: int) -> list[bytes]:
    args: list[bytes] = []
    for i in range(start, end):
        if cmd == b"HSET":
            args += [b"f%d" % i, b"v%d" % i]
        elif cmd == b"ZADD":
            args += [b"%d" % i, b"m%d" % i]
        else:
            args.append(b"e%d" % i)
    return args


def load_big_keys(port: int, scale: float, per_call: int = 1000) -> dict[bytes, int]:
    """The big keys through the proxy, `per_call` elements a command, pipelined;
    returns each key's length."""
    lengths = {}
    with socket.create_connection((HOST, port), timeout=120) as s:
        f = s.makefile("rb")
        for key, (cmd, n) in BIG.items():
            n = max(1, int(n * scale))
            calls = 0
            for start in range(0, n, per_call):
                s.sendall(resp(cmd, key, *big_args(cmd, start, min(n, start + per_call))))
                calls += 1
            for _ in range(calls):
                line = f.readline()
                if not line.startswith(b":"):
                    raise RuntimeError(f"{cmd.decode()} {key!r} failed while loading: {line!r}")
            lengths[key] = n
    return lengths


def check_big_keys(port: int, lengths: dict[bytes, int]) -> None:
    """Each big key on the server at `port` (its owner), with its length and every
    1000th element as loaded."""
    for key, n in lengths.items():
        cmd = BIG[key][0]
        length_cmd = {b"HSET": b"HLEN", b"ZADD": b"ZCARD", b"RPUSH": b"LLEN"}[cmd]
        got = int(kb.command(port, length_cmd, key)[1:].split(b"\r\n")[0])
        if got != n:
            raise RuntimeError(f"{key!r} has {got} elements after the migration, expected {n}")
        for i in range(0, n, 1000):
            if cmd == b"HSET":
                want, reply = b"v%d" % i, kb.command(port, b"HGET", key, b"f%d" % i)
            elif cmd == b"ZADD":
                want, reply = b"%d" % i, kb.command(port, b"ZSCORE", key, b"m%d" % i)
            else:
                want, reply = b"e%d" % i, kb.command(port, b"LINDEX", key, b"%d" % i)
            if reply.split(b"\r\n")[1:2] != [want]:
                raise RuntimeError(f"{key!r} element {i}: {reply!r}, expected {want!r}")


def scan_all(port: int) -> list[bytes]:
    """Every key of one server (SCAN, parsed just enough for bulk-string arrays)."""
    keys: list[bytes] = []
    cursor = b"0"
    with socket.create_connection((HOST, port), timeout=30) as s:
        f = s.makefile("rb")
        while True:
            s.sendall(resp(b"SCAN", cursor, b"COUNT", b"10000"))
            assert f.readline().startswith(b"*2")
            f.readline()
            cursor = f.readline().rstrip(b"\r\n")
            count = int(f.readline()[1:])
            for _ in range(count):
                size = int(f.readline()[1:])
                keys.append(f.read(size + 2)[:-2])
            if cursor == b"0":
                return keys


class StallProbe(threading.Thread):
    """PINGs one server every 5 ms on its own connection and keeps the slowest reply:
    a command that blocks the server (a big MIGRATE) shows up as a stall."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.worst_ms, self.stop = port, 0.0, threading.Event()

    def run(self) -> None:
        with socket.create_connection((HOST, self.port), timeout=10) as s:
            while not self.stop.is_set():
                t = time.monotonic()
                s.sendall(resp(b"PING"))
                buf = b""
                while not buf.endswith(b"\r\n"):
                    buf += s.recv(64)
                self.worst_ms = max(self.worst_ms, (time.monotonic() - t) * 1000)
                time.sleep(0.005)


def slowest_logged(port: int) -> tuple[float, str]:
    """The slowest command in the server's SLOWLOG (its own timing, no network or
    scheduling noise), in ms, and its first two words; (0, "") if none was logged."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(resp(b"SLOWLOG", b"GET", b"1000"))
        f = s.makefile("rb")
        worst, name = 0, ""
        n = int(f.readline()[1:])
        for _ in range(n):
            fields = int(f.readline()[1:])
            # id, timestamp, duration (us), the arguments, then the client fields.
            f.readline()
            f.readline()
            us = int(f.readline()[1:])
            args = read_reply(f)
            for _ in range(fields - 4):
                read_reply(f)
            if us > worst:
                words = [a.decode(errors="replace") for a in args[:2]] if isinstance(args, list) else []
                worst, name = us, " ".join(words)
        return worst / 1000, name


def command_usec(port: int) -> dict[str, int]:
    """Microseconds the server spent in each command since CONFIG RESETSTAT."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(resp(b"INFO", b"commandstats"))
        text = read_reply(s.makefile("rb")).decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("cmdstat_"):
            name, fields = line[len("cmdstat_"):].split(":", 1)
            stats = dict(f.split("=", 1) for f in fields.split(","))
            out[name] = int(stats["usec"])
    return out


def dbsize(port: int) -> int:
    return int(kb.command(port, b"DBSIZE")[1:].split(b"\r\n")[0])


# --------------------------------------------------------------------------- run


def median(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs]
    return statistics.median(vals) if vals else None


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--chunk", type=int, default=100_000,
                   help="requests per redis-benchmark run (SET and GET alternate)")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--reference-runs", type=int, default=3,
                   help="SET and GET runs each before the migration")
    p.add_argument("--big-keys", type=float, default=0.0, metavar="SCALE",
                   help="also a hash of 1M fields, a sorted set of 500k members and a list of "
                        "1M elements, times SCALE (1: those sizes; 0: none)")
    p.add_argument("--dashboard-args", default="")
    p.add_argument("--proxy-args", default="")
    p.add_argument("--bin-dir", default=str(kb.REPO_ROOT / "target" / "release"))
    p.add_argument("--json")
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, kb.on_signal)
    rb = kb.find_exe(None, "redis-benchmark", [])
    rs = kb.find_exe(None, "redis-server", [])
    bins = Path(a.bin_dir)
    for exe in ("kodis-proxy", "kodis-dashboard"):
        if not (bins / exe).is_file():
            log(f"{bins / exe} is missing: cargo build --release -p kodis-proxy -p kodis-dashboard")
            return 2
    if not rb or not rs:
        log("redis-server and redis-benchmark are needed (make deps)")
        return 2
    tests = [Test("SET", 1, a.chunk, ["-t", "set"]), Test("GET", 1, a.chunk, ["-t", "get"])]
    kb.KEYSPACE = a.keys  # redis-benchmark -r: the loaded keys, nothing new

    with tempfile.TemporaryDirectory(prefix="kodis-migration-bench-") as tmp:
        children = Children(Path(tmp))
        try:
            servers = [kb.start_redis(children, rs, f"redis-{i + 1}") for i in range(3)]
            ports = [port for _, port in servers]
            dash, base = kb.start_dashboard(children, str(bins / "kodis-dashboard"),
                                         shlex.split(a.dashboard_args))
            for g in (1, 2):
                kb.add_group(base, g, [ports[g - 1]])
            rest(base, "POST", "/api/v1/slots/init")
            proxy_port, admin_port = kb.free_port(), kb.free_port()
            proxy = children.start("kodis-proxy", kb.proxy_argv(
                str(bins / "kodis-proxy"), proxy_port, admin_port,
                extra=["--dashboard", base, *shlex.split(a.proxy_args)]))
            kb.wait_ready(proxy, proxy_port)
            wait_until("the proxy to get the topology", lambda: any(
                px["acked_epoch"] > 0 for px in rest(base, "GET", "/api/v1/proxies")))

            t = time.monotonic()
            load_keys(proxy_port, a.keys)
            big = load_big_keys(proxy_port, a.big_keys) if a.big_keys > 0 else {}
            loaded = sum(dbsize(port) for port in ports)
            log(f"loaded {loaded:,} keys in {time.monotonic() - t:.1f}s")
            if loaded != a.keys + len(big):
                raise RuntimeError(f"loaded {loaded} keys, expected {a.keys + len(big)}")

            target = kb.Target("kodis", proxy_port, [proxy.pid], [s.pid for s, _ in servers],
                                "kodis-proxy", [proxy, dash])
            reference: dict[str, list[dict]] = {t.name: [] for t in tests}
            for _ in range(a.reference_runs):
                for test in tests:
                    reference[test.name].append(kb.run_bench(children, rb, target, a.clients, test))
            log("reference: " + ", ".join(
                f"{n} {median(r, 'rps'):,.0f} rps p99 {median(r, 'p99_ms')} ms" for n, r in reference.items()))

            # The migration, watched by a thread that notes when it ends.
            kb.add_group(base, 3, [ports[2]])
            ended: dict[str, float] = {}
            # Big keys moved in pieces: when each was first and last seen in flight.
            big_seen: dict[str, list[float]] = {}

            def watch() -> None:
                while "at" not in ended:
                    try:
                        st = rest(base, "GET", "/api/v1/migrations")
                        now = time.monotonic()
                        for b in st.get("big_keys", []):
                            big_seen.setdefault(b["key"], [now, now])[1] = now
                        if not st["migrations"]:
                            ended["at"] = time.monotonic()
                            ended["dashboard_keys"] = st["keys_moved_total"]
                            return
                    except OSError:
                        pass
                    time.sleep(0.05)

            # Server-side timing of every command over 5 ms during the migration.
            for port in ports:
                kb.command(port, b"CONFIG", b"SET", b"slowlog-log-slower-than", b"5000")
                kb.command(port, b"CONFIG", b"SET", b"slowlog-max-len", b"1000")
                kb.command(port, b"SLOWLOG", b"RESET")
                kb.command(port, b"CONFIG", b"RESETSTAT")
            probes = [StallProbe(port) for port in ports]
            for pr in probes:
                pr.start()
            started = time.monotonic()
            plan = rest(base, "POST", "/api/v1/rebalance")
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            during: dict[str, list[dict]] = {t.name: [] for t in tests}
            partial = 0
            while "at" not in ended:
                for test in tests:
                    run = kb.run_bench(children, rb, target, a.clients, test)
                    if "at" not in ended:
                        during[test.name].append(run)
                    else:
                        partial += 1
            watcher.join()
            secs = ended["at"] - started
            for pr in probes:
                pr.stop.set()
                pr.join()
            stall_ms = max(pr.worst_ms for pr in probes)
            slowest_ms, slowest_cmd = max(slowest_logged(port) for port in ports)
            server_ms: dict[str, float] = {}
            for port in ports:
                for name, usec in command_usec(port).items():
                    server_ms[name] = server_ms.get(name, 0.0) + usec / 1000
            moved = dbsize(ports[2])
            metrics = urllib.request.urlopen(f"http://{HOST}:{admin_port}/metrics", timeout=5).read().decode()
            by_proxy = next((int(float(line.split()[1])) for line in metrics.splitlines()
                             if line.startswith("kodis_proxy_migrated_keys_total ")), 0)

            # Every key still there, once, on its owner's master.
            topo = rest(base, "GET", "/api/v1/topology")
            owner = [0] * 16384
            for r in topo["slots"]:
                for s in range(r["start"], r["end"] + 1):
                    owner[s] = r["group"]
            total = 0
            for g, port in zip((1, 2, 3), ports):
                for k in scan_all(port):
                    total += 1
                    if owner[key_slot(k)] != g:
                        raise RuntimeError(f"{k!r} is on group {g}, its slot belongs to {owner[key_slot(k)]}")
            if total != a.keys + len(big):
                raise RuntimeError(f"{total} keys after the migration, expected {a.keys + len(big)}")
            for key, n in big.items():
                check_big_keys(ports[owner[key_slot(key)] - 1], {key: n})
        finally:
            children.stop_all()

    rows = []
    for name in reference:
        ref_rps, ref_p99 = median(reference[name], "rps"), median(reference[name], "p99_ms")
        d_rps, d_p99 = median(during[name], "rps"), median(during[name], "p99_ms")
        rows.append((name, ref_rps, d_rps, ref_p99, d_p99))
    big_note = (f" plus {len(big)} big keys (" + ", ".join(
        f"{k.decode()} {n:,}" for k, n in big.items()) + f"; slots {sorted(key_slot(k) for k in big)})"
        if big else "")
    big_moves = "; ".join(f"{k} {t[1] - t[0]:.1f}s" for k, t in sorted(big_seen.items()))
    out = [
        f"Migration of {plan['slots']} slots ({moved:,} of {a.keys:,} keys{big_note}) from 2 groups to 3 "
        f"in {secs:.1f}s: **{moved / secs:,.0f} keys/s** "
        f"({ended['dashboard_keys']:,} moved by the dashboard, {by_proxy:,} asked by the proxy "
        f"before serving a request); every key checked afterwards.",
        "",
        f"Worst server stall (PING every 5 ms to each master): **{stall_ms:.1f} ms**; "
        f"slowest command in the servers' SLOWLOG: {slowest_ms:.1f} ms"
        + (f" ({slowest_cmd})." if slowest_cmd else ".")
        + " Server time in the masters from the migration's start to the end of the run, "
        + "by command: " + ", ".join(f"{n} {ms:,.0f} ms" for n, ms in
                                     sorted(server_ms.items(), key=lambda x: -x[1])[:8]) + "."
        + (f" Big keys in flight (moved in pieces; seen in GET /migrations, 50 ms polls): "
           f"{big_moves}." if big_seen else ""),
        "",
        f"redis-benchmark -c {a.clients} -r {a.keys} -n {a.chunk}, through kodis-proxy "
        f"(runs during the migration: {len(during['SET'])} SET, {len(during['GET'])} GET):",
        "",
        "| test | rps before | rps during | ratio | p99 before | p99 during | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rr, dr, rp, dp in rows:
        if dr is None:
            out.append(f"| {name} | {rr:,.0f} | - | - | {rp:.3f} ms | - | - |")
        else:
            out.append(f"| {name} | {rr:,.0f} | {dr:,.0f} | {dr / rr:.2f}x | {rp:.3f} ms "
                       f"| {dp:.3f} ms | {dp / rp:.2f}x |")
    print("\n".join(out))
    if a.json:
        Path(a.json).write_text(json.dumps({
            "keys": a.keys, "slots": plan["slots"], "seconds": secs, "keys_moved": moved,
            "keys_per_sec": moved / secs, "reference": reference, "during": during,
            "partial_runs_after_end": partial, "dashboard_args": a.dashboard_args,
            "worst_stall_ms": stall_ms, "slowest_logged_ms": slowest_ms,
            "slowest_logged_command": slowest_cmd, "server_ms_by_command": server_ms,
            "big_keys_in_flight_secs": {k: t[1] - t[0] for k, t in big_seen.items()},
        }, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (kb.Interrupted, KeyboardInterrupt) as e:
        log(f"stopped: {e}")
        sys.exit(130)
