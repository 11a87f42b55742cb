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
import csv
import ctypes
import datetime
import io
import re
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
KEYSPACE = 100_000  # redis-benchmark -r
MSET_KEYS = 10
MSET_DIVISOR = 4  # MSET runs N/4 requests (each carries 10 keys)
START_DEADLINE_S = 20.0
LATENCY_CLIENTS = 10  # -c of the latency test


def log(msg: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


def _set_pdeathsig() -> None:
    """In the child: get SIGTERM if this script dies, even by SIGKILL (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # tracing's colours
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


@dataclass
class Children:
    tmp: Path
    items: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], cwd: Path | None = None) -> Child:
        log_path = self.tmp / f"{name}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=cwd or self.tmp,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_set_pdeathsig,
            )
        child = Child(name, proc, log_path)
        self.items.append(child)
        return child

    def stop_all(self) -> None:
        for c in self.items:
            if c.proc.poll() is None:
                try:
                    c.proc.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for c in self.items:
            try:
                c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()
        self.items.clear()


class Interrupted(Exception):
    pass


class TargetDied(RuntimeError):
    pass


def _on_signal(signum, _frame):
    raise Interrupted(f"got signal {signal.Signals(signum).name}")


# --------------------------------------------------------------------------- helpers

_used_ports: set[int] = set()


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port


def ping(port: int, timeout: float = 0.5) -> bytes | None:
    """One PING on a fresh connection; returns the first reply line, None if no answer."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            buf = b""
            while b"\r\n" not in buf:
                chunk = s.recv(256)
                if not chunk:
                    return None
                buf += chunk
            return buf.split(b"\r\n", 1)[0]
    except OSError:
        return None


def wait_ready(child: Child, port: int, deadline_s: float = START_DEADLINE_S) -> None:
    """Poll PING until +PONG, the child exits, or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(
                f"{child.name} exited with status {child.proc.returncode} before answering "
                f"PING on port {port}; log tail:\n{child.log_tail()}"
            )
        last = ping(port)
        if last == b"+PONG":
            return
        time.sleep(0.02)
    raise RuntimeError(
        f"{child.name} did not answer PING on port {port} within {deadline_s:.0f}s "
        f"(last reply: {last!r}); log tail:\n{child.log_tail()}"
    )


def exited_soon(child: Child, within_s: float = 1.0) -> bool:
    """Whether the child has exited, or does within a moment (a failure seen by the client
    can come just before the process is gone)."""
    try:
        child.proc.wait(timeout=within_s)
        return True
    except subprocess.TimeoutExpired:
        return False


def cpu_ticks(pid: int) -> int:
    """utime + stime of a whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def first_line(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    text = (r.stdout or r.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def find_exe(explicit: str | None, name: str, extra: list[str]) -> str | None:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which(name)
    if found:
        return found
    for p in extra:
        if os.access(p, os.X_OK):
            return p
    return None


# --------------------------------------------------------------------------- workloads


@dataclass
class Test:
    name: str
    pipeline: int
    requests: int
    args: list[str]  # appended to the common redis-benchmark arguments
    clients: int | None = None  # -c for this test (default: --clients)


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


@dataclass
class Target:
    name: str
    port: int
    cpu_pids: list[int]  # whose CPU time is charged to this target
    backend_pids: list[int]  # redis-servers behind it (recorded in JSON only)
    description: str
    guard: list[Child]  # processes that must stay alive
    client_args: list[str] = field(default_factory=list)  # redis-benchmark's TLS flags
    ssl_context: object = None  # for the SET/GET probe over TLS


def bench_argv(rb: str, port: int, clients: int, t: Test, extra: list[str] | None = None) -> list[str]:
    return [
        rb, "-h", HOST, "-p", str(port), "-c", str(clients), "-r", str(KEYSPACE),
        "-n", str(t.requests), "-P", str(t.pipeline), "-q", "--csv",
    ] + (extra or []) + t.args


def run_bench(children: Children, rb: str, target: Target, clients: int, t: Test) -> dict:
    """One redis-benchmark run; returns rps, latencies and CPU figures."""
    for c in target.guard:
        if c.proc.poll() is not None:
            raise TargetDied(f"{c.name} has exited (status {c.proc.returncode}); log tail:\n{c.log_tail()}")
    argv = bench_argv(rb, target.port, t.clients or clients, t, target.client_args)
    before = [cpu_ticks(p) for p in target.cpu_pids]
    before_be = [cpu_ticks(p) for p in target.backend_pids]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_set_pdeathsig)
    # Tracked so a signal during the run still stops it.
    children.items.append(Child("redis-benchmark", proc, children.tmp / "none"))
    try:
        out, err = proc.communicate(timeout=60 + t.requests / 500)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"redis-benchmark timed out against {target.name}: {shlex.join(argv)}")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        children.items.pop()
    wall = time.monotonic() - t0
    after = [cpu_ticks(p) for p in target.cpu_pids]
    after_be = [cpu_ticks(p) for p in target.backend_pids]
    rows = [r for r in csv.reader(io.StringIO(out)) if r and r[0] != "test"]
    if proc.returncode != 0 or not rows:
        raise RuntimeError(
            f"redis-benchmark failed against {target.name} (status {proc.returncode}): "
            f"{shlex.join(argv)}\nstdout: {out.strip()[-500:]}\nstderr: {err.strip()[-500:]}"
        )
    row = rows[0]
    cpu_s = (sum(after) - sum(before)) / CLK_TCK
    be_s = (sum(after_be) - sum(before_be)) / CLK_TCK
    return {
        "rps": float(row[1]),
        "avg_ms": float(row[2]),
        "p50_ms": float(row[4]),
        "p99_ms": float(row[6]),
        "wall_s": round(wall, 3),
        "requests": t.requests,
        "cpu_s": cpu_s,
        "cpu_us_per_req": cpu_s * 1e6 / t.requests,
        "backend_cpu_us_per_req": be_s * 1e6 / t.requests,
    }


def command(port: int, *args: bytes, ssl_context=None) -> bytes:
    """One request on a fresh connection; returns the raw reply (simple, short replies only)."""
    req = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    raw = socket.create_connection((HOST, port), timeout=5)
    conn = ssl_context.wrap_socket(raw, server_hostname=HOST) if ssl_context else raw
    with conn as s:
        s.sendall(req)
        buf = b""
        while True:
            if b"\r\n" in buf:
                head = buf.split(b"\r\n", 1)[0]
                if not head.startswith(b"$") or int(head[1:]) < 0:
                    return buf
                if len(buf) >= len(head) + 2 + int(head[1:]) + 2:
                    return buf
            chunk = s.recv(4096)
            if not chunk:
                return buf
            buf += chunk


def check_target(tg: Target) -> None:
    """A write and a read back through the target, so a proxy that answers every request
    with an error or a nil cannot post a flattering number."""
    key, val = f"e2e:probe:{tg.name}".encode(), b"probe-value"
    got_set = command(tg.port, b"SET", key, val, ssl_context=tg.ssl_context)
    got_get = command(tg.port, b"GET", key, ssl_context=tg.ssl_context)
    want = b"$%d\r\n%s\r\n" % (len(val), val)
    if got_set != b"+OK\r\n" or got_get != want:
        raise RuntimeError(f"{tg.name} fails a SET/GET probe: SET -> {got_set!r}, GET -> {got_get!r}")


# --------------------------------------------------------------------------- setup


def start_redis(children: Children, exe: str, label: str) -> tuple[Child, int]:
    port = free_port()
    d = children.tmp / label
    d.mkdir()
    child = children.start(
        label,
        [exe, "--save", "", "--appendonly", "no", "--port", str(port), "--bind", HOST,
         "--dir", str(d), "--daemonize", "no"],
        cwd=d,
    )
    wait_ready(child, port)
    return child, port


def twemproxy_yaml(listen: int, servers: list[int]) -> str:
    tmpl = REPO_ROOT / "benches" / "twemproxy.yml.tmpl"
    text = tmpl.read_text()
    server_lines = "".join(f"    - {HOST}:{p}:1\n" for p in servers)
    return text.replace("@LISTEN@", f"{HOST}:{listen}").replace("@SERVERS@\n", server_lines)


def start_twemproxy(children: Children, exe: str, servers: list[int]) -> tuple[Child, int]:
    port, stats = free_port(), free_port()
    conf = children.tmp / "twemproxy.yml"
    conf.write_text(twemproxy_yaml(port, servers))
    t = subprocess.run([exe, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=10)
    if t.returncode != 0:
        raise RuntimeError(f"nutcracker rejects {conf}:\n{t.stdout}{t.stderr}\n{conf.read_text()}")
    child = children.start(
        "twemproxy",
        [exe, "-c", str(conf), "-s", str(stats), "-a", HOST, "-o", str(children.tmp / "nutcracker.log"),
         "-p", str(children.tmp / "nutcracker.pid")],
    )
    child.log_path = children.tmp / "nutcracker.log"
    wait_ready(child, port)
    return child, port


def start_kodis(children: Children, exe: str, servers: list[int], extra: list[str]) -> tuple[Child, int]:
    port, admin = free_port(), free_port()
    argv = [exe, "--listen", f"{HOST}:{port}", "--admin-listen", f"{HOST}:{admin}", *extra]
    for p in servers:
        argv += ["--group", f"{HOST}:{p}"]
    child = children.start("kodis-proxy", argv)
    wait_ready(child, port)
    return child, port


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
        signal.signal(sig, _on_signal)

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
