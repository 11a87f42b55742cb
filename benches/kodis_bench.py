"""Helpers shared by the end-to-end benchmarks in benches/ (e2e.py, commands.py,
migration.py, idle.py, failover.py, callgrind.py): free ports, child processes that are
always stopped, starting redis-server, kodis-proxy, kodis-dashboard and twemproxy
(nutcracker), waiting with a deadline, a minimal RESP client, the dashboard's REST API,
running redis-benchmark and parsing its CSV, and the CPU time and memory of a pid.

Stdlib only (Python 3.11).
"""

from __future__ import annotations

import csv
import ctypes
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
KEYSPACE = 100_000  # redis-benchmark -r (a script may set another)
START_DEADLINE_S = 20.0
_SCRIPT = Path(sys.argv[0]).stem or "bench"


def log(msg: str) -> None:
    """A timestamped line on stderr, prefixed with the script's name."""
    print(f"[{_SCRIPT} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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
    """A process started by `Children`, its output in `log_path`."""

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
    """Every process a benchmark started, all stopped by `stop_all` (SIGTERM, then SIGKILL)."""

    tmp: Path
    items: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], cwd: Path | None = None) -> Child:
        log_path = self.tmp / f"{name}.log"
        if os.sep in argv[0]:
            # A relative path means this script's directory, not the child's.
            argv = [str(Path(argv[0]).absolute()), *argv[1:]]
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
    """Raised by `on_signal`."""


class TargetDied(RuntimeError):
    """A process under test exited."""


def on_signal(signum, _frame):
    """A signal handler (SIGINT, SIGTERM) that unwinds the script through `finally`."""
    raise Interrupted(f"got signal {signal.Signals(signum).name}")


# --------------------------------------------------------------------------- ports


_used_ports: set[int] = set()


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port


# --------------------------------------------------------------------------- RESP


def resp(*args: bytes | str) -> bytes:
    """A command as a RESP array of bulk strings (str arguments are UTF-8 encoded)."""
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in parts)


def read_reply(f):
    """One RESP2 reply from a binary file object: bytes for simple strings, integers
    and bulk strings, None for nil, a list for an array; an error reply raises."""
    line = f.readline()
    t, rest = line[:1], line[1:-2]
    if t in (b"+", b":"):
        return rest
    if t == b"-":
        raise RuntimeError(rest.decode())
    if t == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if t == b"*":
        n = int(rest)
        return None if n < 0 else [read_reply(f) for _ in range(n)]
    raise RuntimeError(f"bad reply {line!r}")


class Client:
    """A minimal RESP2 client on one connection: enough to count replies and read arrays."""

    def __init__(self, port: int):
        self.s = socket.create_connection((HOST, port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.s.makefile("rb")

    def send(self, data: bytes) -> None:
        self.s.sendall(data)

    def reply(self):
        return read_reply(self.f)


def command(port: int, *args: bytes, ssl_context=None) -> bytes:
    """One request on a fresh connection; returns the raw reply (simple, short replies only)."""
    req = resp(*args)
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


def info_field(port: int, section: bytes, name: str) -> str | None:
    """One field of INFO `section` of the server on `port`."""
    raw = command(port, b"INFO", section)
    for line in raw.decode(errors="replace").splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return None


def ping(port: int, timeout: float = 0.5) -> bytes | None:
    """One PING on a fresh connection; returns the first reply line, None if no answer."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(resp(b"PING"))
            buf = b""
            while b"\r\n" not in buf:
                chunk = s.recv(256)
                if not chunk:
                    return None
                buf += chunk
            return buf.split(b"\r\n", 1)[0]
    except OSError:
        return None


# --------------------------------------------------------------------------- waiting


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


def wait_until(what: str, check, deadline_s: float = 30.0):
    """Polls `check` until it returns something true (returned), or raises after
    `deadline_s`; an OSError counts as not yet."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            v = check()
        except OSError:
            v = None
        if v:
            return v
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not within {deadline_s:.0f}s")


# --------------------------------------------------------------------------- HTTP


def rest(base: str, method: str, path: str, body: dict | None = None) -> dict:
    """One call to the dashboard's REST API; its JSON answer ({} when empty)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read()
    return json.loads(text) if text else {}


def http_get(url: str) -> str:
    """GET `url` (2 s timeout), the body as text."""
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.read().decode()


# --------------------------------------------------------------------------- CPU and memory


def cpu_ticks(pid: int) -> int:
    """utime + stime of a whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def rss_kib(pid: int) -> int:
    """The resident memory of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# --------------------------------------------------------------------------- programs


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


# --------------------------------------------------------------------------- redis-benchmark


@dataclass
class Test:
    name: str
    pipeline: int
    requests: int
    args: list[str]  # appended to the common redis-benchmark arguments
    clients: int | None = None  # -c for this test (default: --clients)


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
    rows = parse_csv(out)
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


def parse_csv(out: str) -> list[list[str]]:
    """The result rows of `redis-benchmark --csv` (the header row left out)."""
    return [r for r in csv.reader(io.StringIO(out)) if r and r[0] != "test"]


# --------------------------------------------------------------------------- servers


def start_redis(children: Children, exe: str, label: str, extra: list[str] | None = None) -> tuple[Child, int]:
    """A throw-away redis-server (no persistence) on a free port, once it answers PING."""
    port = free_port()
    d = children.tmp / label
    d.mkdir()
    child = children.start(
        label,
        [exe, "--save", "", "--appendonly", "no", "--port", str(port), "--bind", HOST,
         "--dir", str(d), "--daemonize", "no", *(extra or [])],
        cwd=d,
    )
    wait_ready(child, port)
    return child, port


def twemproxy_yaml(listen: int, servers: list[int]) -> str:
    tmpl = REPO_ROOT / "benches" / "twemproxy.yml.tmpl"
    text = tmpl.read_text()
    server_lines = "".join(f"    - {HOST}:{p}:1\n" for p in servers)
    return text.replace("@LISTEN@", f"{HOST}:{listen}").replace("@SERVERS@\n", server_lines)


def write_twemproxy_conf(tmp: Path, listen: int, servers: list[int]) -> Path:
    """tmp/twemproxy.yml for nutcracker on `listen` over these redis-servers."""
    conf = tmp / "twemproxy.yml"
    conf.write_text(twemproxy_yaml(listen, servers))
    return conf


def start_twemproxy(children: Children, exe: str, servers: list[int]) -> tuple[Child, int]:
    port, stats = free_port(), free_port()
    conf = write_twemproxy_conf(children.tmp, port, servers)
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


def proxy_argv(exe: str, port: int, admin: int, servers: list[int] = (), extra: list[str] = ()) -> list[str]:
    """kodis-proxy on `port` (admin endpoint on `admin`), one group per server in
    `servers` (a static topology; none when it gets one from a dashboard in `extra`)."""
    argv = [exe, "--listen", f"{HOST}:{port}", "--admin-listen", f"{HOST}:{admin}", *extra]
    for p in servers:
        argv += ["--group", f"{HOST}:{p}"]
    return argv


def start_kodis(children: Children, exe: str, servers: list[int], extra: list[str]) -> tuple[Child, int]:
    """kodis-proxy (see `proxy_argv`), once it answers PING."""
    port, admin = free_port(), free_port()
    child = children.start("kodis-proxy", proxy_argv(exe, port, admin, servers, extra))
    wait_ready(child, port)
    return child, port


def start_dashboard(children: Children, exe: str, extra: list[str] | None = None) -> tuple[Child, str]:
    """kodis-dashboard with its store in the temp dir, once it is active; its base URL."""
    port = free_port()
    base = f"http://{HOST}:{port}"
    child = children.start("kodis-dashboard", [
        exe, "--listen", f"{HOST}:{port}", "--data-dir", str(children.tmp / "dashboard"), *(extra or [])])
    wait_until("the dashboard to become active", lambda: rest(base, "GET", "/healthz").get("active"))
    return child, base


def add_group(base: str, gid: int, ports: list[int]) -> None:
    """Creates group `gid` through the dashboard and adds these servers (master first)."""
    rest(base, "POST", "/api/v1/groups", {"id": gid})
    for p in ports:
        rest(base, "POST", f"/api/v1/groups/{gid}/servers", {"addr": f"{HOST}:{p}"})
