#!/usr/bin/env python3
"""End-to-end throughput and CPU comparison: direct Redis vs kodis-proxy vs twemproxy.

Starts two throw-away redis-server processes on free loopback ports, kodis-proxy and
twemproxy (nutcracker) over both of them, then drives each target with redis-benchmark
in alternation over several rounds and prints a markdown table of medians (and writes
JSON with --json). Every process it starts is stopped again, whatever happens.

    python3 benches/e2e.py [--rounds 3] [--requests 200000]
                           [--proxy-bin target/release/kodis-proxy] [--quick]
                           [--json out.json] [--tls]

With --tls it compares instead TLS against plain text through one kodis-proxy (its
--listen and --tls-listen ports, over the same two redis-servers) on GET and SET at
P=1 and P=16, and prints the ratio; the certificates are made with openssl.

Stdlib only (Python 3.11). See benches/README.md for what the columns mean.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kodis_bench import (  # noqa: E402
    CLK_TCK, HOST, KEYSPACE, REPO_ROOT, Child, Children, Interrupted, Target, TargetDied, Test,
    command, cpu_model, exited_soon, find_exe, first_line, free_port, log, on_signal, run_bench,
    start_kodis, start_redis, start_twemproxy,
)

MSET_KEYS = 10
MSET_DIVISOR = 4  # MSET runs N/4 requests (each carries 10 keys)
LATENCY_CLIENTS = 10  # -c of the latency test


# --------------------------------------------------------------------------- workloads


def make_tests(n: int) -> list[Test]:
    mset = ["MSET"]
    for _ in range(MSET_KEYS):
        mset += ["key:__rand_int__", "xxx"]  # 3-byte value, as redis-benchmark's -d 3
    return [
        Test("SET P=1", 1, n, ["-t", "set"]),
        Test("GET P=1", 1, n, ["-t", "get"]),
        Test("SET P=16", 16, n, ["-t", "set"]),
        Test("GET P=16", 16, n, ["-t", "get"]),
        Test(f"MSET {MSET_KEYS} keys P=1", 1, max(1, n // MSET_DIVISOR), mset),
        # The latency a proxy adds, seen by a few clients that do not queue behind
        # each other (redis-benchmark's p50/p99, microsecond resolution).
        Test(f"GET P=1 c={LATENCY_CLIENTS}", 1, max(1, n // 2), ["-t", "get"], LATENCY_CLIENTS),
    ]


def check_target(tg: Target) -> None:
    """A write and a read back through the target, so a proxy that answers every request
    with an error or a nil cannot post a flattering number."""
    key, val = f"e2e:probe:{tg.name}".encode(), b"probe-value"
    got_set = command(tg.port, b"SET", key, val, ssl_context=tg.ssl_context)
    got_get = command(tg.port, b"GET", key, ssl_context=tg.ssl_context)
    want = b"$%d\r\n%s\r\n" % (len(val), val)
    if got_set != b"+OK\r\n" or got_get != want:
        raise RuntimeError(f"{tg.name} fails a SET/GET probe: SET -> {got_set!r}, GET -> {got_get!r}")


# --------------------------------------------------------------------------- report


def fmt_rps(cell: dict) -> str:
    if not cell["runs"]:
        return "not run"
    return "error" if cell["rps"] is None else f"{cell['rps']:,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str | None:
    if a is None or b is None or b == 0:
        return None
    return f"{a / b:.2f}×"


def fmt_us(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def median_of(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if "error" not in r and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def render_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"## Kodis end-to-end comparison ({report['date']})",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {m['nproc']} CPUs (nproc), {m['cpu_model']}; load average "
        f"{m['loadavg_start']} at start, {m['loadavg_end']} at end",
        f"- redis-server: {report['versions']['redis-server']}",
        f"- twemproxy: {report['versions']['nutcracker']}",
        f"- kodis-proxy: {report['versions']['kodis-proxy']}",
        f"- redis-benchmark: {report['versions']['redis-benchmark']}; "
        f"-c {report['settings']['clients']} -r {KEYSPACE}, {report['settings']['rounds']} round(s), "
        f"median per cell; N = {report['settings']['requests']} requests per run "
        f"(MSET: N/{MSET_DIVISOR})",
        f"- direct = {report['targets']['direct']}",
    ]
    for name in ("kodis", "twemproxy"):
        lines.append(f"- {name} = {report['targets'][name]}")
    lines += [
        "",
        "| test | direct req/s | kodis req/s (vs direct, vs twemproxy) | twemproxy req/s (vs direct) "
        "| kodis µs CPU/req (vs twemproxy) | twemproxy µs CPU/req | redis-server µs CPU/req (direct) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        d, k, t = row["direct"]["rps"], row["kodis"]["rps"], row["twemproxy"]["rps"]
        kcell = fmt_rps(row["kodis"])
        if k is not None:
            kcell += f" ({fmt_ratio(k, d) or '—'}, {fmt_ratio(k, t) or '—'})"
        tr = fmt_ratio(t, d)
        tcell = fmt_rps(row["twemproxy"]) + (f" ({tr})" if tr else "")
        kc, tc = row["kodis"]["cpu_us_per_req"], row["twemproxy"]["cpu_us_per_req"]
        kcpu = fmt_us(kc) + (f" ({fmt_ratio(kc, tc)})" if kc and tc else "")
        lines.append(
            f"| {row['test']} | {fmt_rps(row['direct'])} | {kcell} | {tcell} | "
            f"{kcpu} | {fmt_us(row['twemproxy']['cpu_us_per_req'])} | "
            f"{fmt_us(row['direct']['cpu_us_per_req'])} |"
        )
    lines += [
        "",
        "Latency that each proxy adds (its p50 and p99 minus direct's, µs; redis-benchmark's "
        "figures, medians over rounds):",
        "",
        "| test | direct p50 / p99 µs | kodis adds p50 / p99 µs | twemproxy adds p50 / p99 µs |",
        "|---|---:|---:|---:|",
    ]
    for row in report["results"]:
        d = row["direct"]

        def added(cell: dict, key: str) -> str:
            if cell.get(key) is None or d.get(key) is None:
                return "—"
            return f"{(cell[key] - d[key]) * 1000:+.0f}"

        direct = (f"{d['p50_ms'] * 1000:.0f} / {d['p99_ms'] * 1000:.0f}"
                  if d.get("p50_ms") is not None and d.get("p99_ms") is not None else "—")
        lines.append(
            f"| {row['test']} | {direct} | {added(row['kodis'], 'p50_ms')} / {added(row['kodis'], 'p99_ms')} | "
            f"{added(row['twemproxy'], 'p50_ms')} / {added(row['twemproxy'], 'p99_ms')} |"
        )
    if report["notes"]:
        lines += [""] + [f"- note: {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- TLS mode


def make_certs(d: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a certificate for 127.0.0.1, with openssl."""
    def run(*argv: str) -> None:
        r = subprocess.run(["openssl", *argv], cwd=d, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(argv)} failed: {r.stderr.strip()[-500:]}")
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=e2e CA")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "proxy.key", "-out", "proxy.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "proxy.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "proxy.crt", "-days", "2", "-extfile", "san.ext")
    return d / "ca.crt", d / "proxy.crt", d / "proxy.key"


def tls_mode(args, children: Children, kodis_exe: str, rb_exe: str, servers: list[int],
             be_pids: list[int], backends: list[Child], versions: dict, machine: dict,
             command: str) -> int:
    """kodis-proxy plain text vs the same proxy's TLS port; prints a markdown table."""
    import ssl
    d = children.tmp / "tls"
    d.mkdir()
    ca, cert, key = make_certs(d)
    tls_port = free_port()
    extra = shlex.split(args.proxy_args) + [
        "--tls-listen", f"{HOST}:{tls_port}", "--tls-cert", str(cert), "--tls-key", str(key)]
    kodis, kport = start_kodis(children, kodis_exe, servers, extra)
    log(f"kodis-proxy on {kport} (plain) and {tls_port} (TLS), pid {kodis.pid}")
    ctx = ssl.create_default_context(cafile=str(ca))
    guard = [kodis, *backends]
    targets = [
        Target("plain", kport, [kodis.pid], be_pids, f"kodis-proxy --listen {HOST}:{kport}", guard),
        Target("tls", tls_port, [kodis.pid], be_pids,
               f"the same kodis-proxy's --tls-listen {HOST}:{tls_port} (rustls, TLS 1.3, P-256 "
               "certificate); redis-benchmark --tls", guard,
               client_args=["--tls", "--cacert", str(ca)], ssl_context=ctx),
    ]
    n = args.requests
    tests = [Test("SET P=1", 1, n, ["-t", "set"]), Test("GET P=1", 1, n, ["-t", "get"]),
             Test("SET P=16", 16, n, ["-t", "set"]), Test("GET P=16", 16, n, ["-t", "get"])]
    warm = Test("warm-up SET", 16, min(n, KEYSPACE * 2), ["-t", "set"])
    for tg in targets:
        check_target(tg)
        run_bench(children, rb_exe, tg, args.clients, warm)
    runs: dict[tuple[str, str], list[dict]] = {(t.name, tg.name): [] for t in tests for tg in targets}
    for rnd in range(args.rounds):
        order = targets if rnd % 2 == 0 else targets[::-1]
        for t in tests:
            for tg in order:
                r = run_bench(children, rb_exe, tg, args.clients, t)
                runs[(t.name, tg.name)].append(r)
                log(f"round {rnd + 1}/{args.rounds} {t.name:<10} {tg.name:<6} "
                    f"{r['rps']:>11,.0f} req/s  {r['cpu_us_per_req']:6.2f} µs CPU/req")
    machine["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    lines = [
        f"## Kodis TLS vs plain text ({date})",
        "",
        f"- command: `{command}`",
        f"- machine: {machine['nproc']} CPUs (nproc), {machine['cpu_model']}; load average "
        f"{machine['loadavg_start']} at start, {machine['loadavg_end']} at end",
        f"- kodis-proxy: {versions['kodis-proxy']}; redis-benchmark: {versions['redis-benchmark']}; "
        f"-c {args.clients} -r {KEYSPACE}, N = {n}, {args.rounds} round(s), median per cell",
        f"- plain = {targets[0].description}",
        f"- tls = {targets[1].description}",
        "",
        "| test | plain req/s | TLS req/s | TLS / plain | plain µs CPU/req | TLS µs CPU/req |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    results = []
    for t in tests:
        p, q = runs[(t.name, "plain")], runs[(t.name, "tls")]
        pr, qr = median_of(p, "rps"), median_of(q, "rps")
        pc, qc = median_of(p, "cpu_us_per_req"), median_of(q, "cpu_us_per_req")
        lines.append(f"| {t.name} | {pr:,.0f} | {qr:,.0f} | {fmt_ratio(qr, pr)} | {fmt_us(pc)} | {fmt_us(qc)} |")
        results.append({"test": t.name, "plain": p, "tls": q, "ratio": qr / pr if pr else None})
    print("\n".join(lines) + "\n", end="", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"date": date, "command": command, "machine": machine,
                                               "versions": versions, "results": results}, indent=2) + "\n")
    return 0


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=None, help="rounds over all targets (default 3; 1 with --quick)")
    p.add_argument("--requests", type=int, default=None,
                   help="requests per run, N (default 200000; 20000 with --quick); MSET runs N/4")
    p.add_argument("--clients", type=int, default=50, help="redis-benchmark -c (default 50)")
    p.add_argument("--proxy-bin", default=None,
                   help="kodis-proxy binary (default <repo>/target/release/kodis-proxy)")
    p.add_argument("--proxy-args", default="",
                   help="extra kodis-proxy flags, e.g. '--worker-threads 1'")
    p.add_argument("--nutcracker", default=None, help="twemproxy binary (default: nutcracker on PATH or /usr/sbin)")
    p.add_argument("--redis-server", default=None, help="redis-server binary (default: on PATH)")
    p.add_argument("--redis-benchmark", default=None, help="redis-benchmark binary (default: on PATH)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 round, N=20000")
    p.add_argument("--tls", action="store_true",
                   help="compare TLS against plain text through kodis-proxy instead (GET/SET, P=1 and P=16)")
    a = p.parse_args(argv)
    if a.rounds is None:
        a.rounds = 1 if a.quick else 3
    if a.requests is None:
        a.requests = 20_000 if a.quick else 200_000
    if a.rounds < 1 or a.requests < 1 or a.clients < 1:
        p.error("--rounds, --requests and --clients must be positive")
    return a


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = shlex.join(["python3"] + sys.argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    redis_exe = find_exe(args.redis_server, "redis-server", ["/usr/bin/redis-server"])
    rb_exe = find_exe(args.redis_benchmark, "redis-benchmark", ["/usr/bin/redis-benchmark"])
    if not redis_exe or not rb_exe:
        log("redis-server and redis-benchmark are required (Debian: apt-get install redis-server redis-tools)")
        return 2
    nut_exe = find_exe(args.nutcracker, "nutcracker", ["/usr/sbin/nutcracker"])
    kodis_path = Path(args.proxy_bin) if args.proxy_bin else REPO_ROOT / "target/release/kodis-proxy"
    kodis_exe = str(kodis_path.resolve()) if os.access(kodis_path, os.X_OK) else None

    notes: list[str] = []
    if not kodis_exe:
        msg = (f"kodis-proxy not found at {kodis_path}: skipping that target "
               "(build it with `cargo build --release -p kodis-proxy`)")
        log(msg)
        notes.append(msg)
    if not nut_exe:
        msg = "nutcracker (twemproxy) not found: skipping that target (Debian: apt-get install nutcracker)"
        log(msg)
        notes.append(msg)

    versions = {
        "redis-server": first_line([redis_exe, "--version"]),
        "redis-benchmark": first_line([rb_exe, "--version"]),
        "nutcracker": first_line([nut_exe, "--version"]) if nut_exe else "not found",
        "kodis-proxy": first_line([kodis_exe, "--version"]) if kodis_exe else f"not found at {kodis_path}",
    }
    machine = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }

    tmp = Path(tempfile.mkdtemp(prefix="kodis-e2e-"))
    children = Children(tmp)
    try:
        redis_a, port_a = start_redis(children, redis_exe, "redis-a")
        redis_b, port_b = start_redis(children, redis_exe, "redis-b")
        servers = [port_a, port_b]
        be_pids = [redis_a.pid, redis_b.pid]
        log(f"redis-server A on {port_a} (pid {redis_a.pid}), B on {port_b} (pid {redis_b.pid})")
        if args.tls:
            if not kodis_exe:
                return 2
            return tls_mode(args, children, kodis_exe, rb_exe, servers, be_pids, [redis_a, redis_b],
                            versions, machine, command)

        descriptions = {
            "direct": f"redis-server A alone ({HOST}:{port_a}), no sharding; CPU is A+B summed (B idle)",
            "kodis": "not run",
            "twemproxy": "not run",
        }
        targets: list[Target] = [
            Target("direct", port_a, be_pids, [], descriptions["direct"], [redis_a, redis_b])
        ]
        if kodis_exe:
            kodis, kport = start_kodis(children, kodis_exe, servers, shlex.split(args.proxy_args))
            descriptions["kodis"] = f"kodis-proxy on {kport} over A and B (two groups)"
            targets.append(Target("kodis", kport, [kodis.pid], be_pids, descriptions["kodis"],
                                  [kodis, redis_a, redis_b]))
            log(f"kodis-proxy on {kport} (pid {kodis.pid})")
        if nut_exe:
            nut, nport = start_twemproxy(children, nut_exe, servers)
            descriptions["twemproxy"] = (f"nutcracker on {nport} over A and B (ketama, fnv1a_64, "
                                         "server_connections 1)")
            targets.append(Target("twemproxy", nport, [nut.pid], be_pids, descriptions["twemproxy"],
                                  [nut, redis_a, redis_b]))
            log(f"twemproxy on {nport} (pid {nut.pid})")

        tests = make_tests(args.requests)
        # Warm-up: fill the key space through each target's own routing, so GETs hit
        # as often everywhere, and let every proxy open its backend connections.
        warm = Test("warm-up SET", 16, min(args.requests, KEYSPACE * 2), ["-t", "set"])
        for tg in targets:
            check_target(tg)
            log(f"warm-up: {tg.name}")
            run_bench(children, rb_exe, tg, args.clients, warm)

        runs: dict[tuple[str, str], list[dict]] = {(t.name, tg.name): [] for t in tests for tg in targets}
        dead: set[str] = set()
        failures = 0
        for rnd in range(args.rounds):
            # Rotate which target goes first each round, so none is always first/last.
            order = targets[rnd % len(targets):] + targets[: rnd % len(targets)]
            for t in tests:
                for tg in order:
                    if tg.name in dead:
                        runs[(t.name, tg.name)].append({"round": rnd + 1, "error": "target had exited"})
                        continue
                    try:
                        r = run_bench(children, rb_exe, tg, args.clients, t)
                    except RuntimeError as e:
                        gone = [c for c in tg.guard if exited_soon(c)]
                        if gone:
                            dead.add(tg.name)
                            if tg.name == "direct":
                                raise  # the redis-servers are gone: nothing left to measure
                            if not isinstance(e, TargetDied):
                                e = TargetDied(f"{e}\n" + "\n".join(
                                    f"{c.name} has exited (status {c.proc.returncode}); log tail:\n{c.log_tail()}"
                                    for c in gone))
                        # Keep going: one failing target or test must not cost the others.
                        failures += 1
                        msg = f"{tg.name} {t.name} round {rnd + 1} failed: {e}"
                        log(msg)
                        if gone:
                            notes.append(
                                f"{tg.name} {t.name} round {rnd + 1}: "
                                + ", ".join(f"{c.name} exited (status {c.proc.returncode})" for c in gone)
                                + "; its later runs were skipped")
                        else:
                            notes.append(msg.splitlines()[0][:300])
                        runs[(t.name, tg.name)].append({"round": rnd + 1, "error": str(e)})
                        continue
                    r["round"] = rnd + 1
                    runs[(t.name, tg.name)].append(r)
                    log(f"round {rnd + 1}/{args.rounds} {t.name:<16} {tg.name:<10} "
                        f"{r['rps']:>11,.0f} req/s  {r['cpu_us_per_req']:6.2f} µs CPU/req")

        results = []
        for t in tests:
            row = {"test": t.name, "pipeline": t.pipeline, "requests": t.requests}
            for name in ("direct", "kodis", "twemproxy"):
                rs = runs.get((t.name, name), [])
                row[name] = {
                    "rps": median_of(rs, "rps"),
                    "cpu_us_per_req": median_of(rs, "cpu_us_per_req"),
                    "backend_cpu_us_per_req": median_of(rs, "backend_cpu_us_per_req") if name != "direct" else None,
                    "p50_ms": median_of(rs, "p50_ms"),
                    "p99_ms": median_of(rs, "p99_ms"),
                    "runs": rs,
                }
            d, k, tw = row["direct"]["rps"], row["kodis"]["rps"], row["twemproxy"]["rps"]
            row["ratios"] = {
                "kodis_vs_direct": k / d if k and d else None,
                "kodis_vs_twemproxy": k / tw if k and tw else None,
                "twemproxy_vs_direct": tw / d if tw and d else None,
            }
            results.append(row)

        machine["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        report = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command,
            "machine": machine,
            "versions": versions,
            "settings": {"rounds": args.rounds, "requests": args.requests, "clients": args.clients,
                         "keyspace": KEYSPACE, "mset_keys": MSET_KEYS,
                         "mset_requests": max(1, args.requests // MSET_DIVISOR),
                         "clk_tck": CLK_TCK},
            "targets": descriptions,
            "notes": notes,
            "results": results,
        }
        md = render_markdown(report)
        print(md, end="", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
            log(f"JSON written to {args.json}")
        if failures:
            log(f"{failures} run(s) failed; see the notes")
            return 1
        return 0
    except Interrupted as e:
        log(f"interrupted ({e}); stopping")
        return 130
    except RuntimeError as e:
        log(f"error: {e}")
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        children.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
