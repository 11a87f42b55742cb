#!/usr/bin/env python3
"""Instructions per request of kodis-proxy and twemproxy, counted by callgrind.

Wall-clock and CPU-time figures on a shared 2-core machine move by 10-20% from run to
run; instruction counts do not (valgrind counts what the program executes, whatever
else the machine does). So this is the regression guard of the request path: each
proxy runs under `valgrind --tool=callgrind` over the same two redis-servers, a warm-up
fills the key space, the counters are zeroed (`callgrind_control -z`), one fixed
redis-benchmark load runs, and the counters are dumped (`callgrind_control -d`). The
figure is user-space instructions (Ir) per request of the proxy process, all threads;
the kernel's side of each system call is not in it (see `kb.py` for CPU time).

    python3 benches/callgrind.py                      # GET/SET P=1, GET P=16, MSET 10 keys
    python3 benches/callgrind.py --check benches/callgrind-baseline.json
    python3 benches/callgrind.py --write-baseline benches/callgrind-baseline.json
    python3 benches/callgrind.py --keep DIR           # keep the callgrind.out files

`--check` exits with status 1 when kodis' instructions per request of any test are
more than `--tolerance` (default 3%) above the baseline's, and says which. Counts still
move a little with how requests happen to batch (the loads are small under valgrind);
the tolerance covers that, a real regression is larger. Read a profile with
`callgrind_annotate --inclusive=yes DIR/kodis.GET_P1.out | less`.

Stdlib only; needs valgrind (callgrind_control), redis-server, redis-benchmark and,
for the reference column, nutcracker. Every process it starts is stopped again.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kodis_bench as kb  # noqa: E402
from kodis_bench import HOST, Children, log  # noqa: E402

# (name, redis-benchmark arguments, requests). Small: the proxy runs ~30x slower
# under callgrind, and the count per request settles after a few thousand.
TESTS = [
    ("GET P=1", ["-t", "get", "-P", "1"], 20000),
    ("SET P=1", ["-t", "set", "-P", "1"], 20000),
    ("GET P=16", ["-t", "get", "-P", "16"], 80000),
    ("MSET 10 keys", ["-P", "1", "MSET"] + [x for i in range(10) for x in ("key:__rand_int__", "xxx")], 5000),
]
CLIENTS = 10


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def callgrind(argv: list[str], out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv]


def control(pid: int, flag: str) -> None:
    r = subprocess.run(["callgrind_control", flag, str(pid)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"callgrind_control {flag} {pid} failed: {r.stdout}{r.stderr}")


def wait_dump(base: Path, seen: set[Path], deadline_s: float = 30.0) -> Path:
    """The dump file callgrind writes for `callgrind_control -d` (base.1, base.2, ...)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for p in sorted(base.parent.glob(base.name + ".*")):
            if p not in seen and p.stat().st_size > 0 and "summary:" in p.read_text(errors="replace"):
                seen.add(p)
                return p
        time.sleep(0.1)
    raise RuntimeError(f"no callgrind dump appeared next to {base}")


def total_ir(dump: Path) -> int:
    m = re.search(r"^summary:\s+(\d+)", dump.read_text(errors="replace"), re.M)
    if not m:
        raise RuntimeError(f"{dump}: no summary line")
    return int(m.group(1))


def bench(rb: str, port: int, args: list[str], n: int) -> None:
    argv = [rb, "-h", HOST, "-p", str(port), "-c", str(CLIENTS), "-n", str(n), "-r", "100000", "-q", *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or "ERR" in r.stdout:
        raise RuntimeError(f"{' '.join(argv)} failed: {r.stdout[-500:]}{r.stderr[-500:]}")


def measure(children: Children, name: str, argv: list[str], port: int, rb: str, keep: Path) -> dict[str, int]:
    """Starts argv under callgrind, runs every test, returns Ir per request per test."""
    base = keep / f"{name}.out"
    child = children.start(name, callgrind(argv, base))
    kb.wait_ready(child, port, deadline_s=120)
    bench(rb, port, ["-t", "set", "-P", "16"], 100000)  # warm-up: fills the key space
    seen: set[Path] = set()
    result = {}
    for test, args, n in TESTS:
        control(child.pid, "-z")
        bench(rb, port, args, n)
        control(child.pid, "-d")
        dump = wait_dump(base, seen)
        final = keep / f"{name}.{slug(test)}.out"
        dump.rename(final)
        result[test] = round(total_ir(final) / n)
        log(f"{name:10} {test:13} {result[test]:>7} Ir/request")
    child.proc.send_signal(signal.SIGTERM)
    return result


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proxy-bin", default=str(kb.REPO_ROOT / "target/release/kodis-proxy"))
    ap.add_argument("--workers", type=int, default=1, help="kodis-proxy --worker-threads (default 1)")
    ap.add_argument("--keep", help="directory for the callgrind.out files (default: a temp dir, removed)")
    ap.add_argument("--check", help="baseline JSON: fail when kodis is above it by more than --tolerance")
    ap.add_argument("--tolerance", type=float, default=0.03)
    ap.add_argument("--write-baseline", help="write kodis' figures to this JSON file")
    ap.add_argument("--no-twemproxy", action="store_true", help="skip the twemproxy column")
    args = ap.parse_args(argv)
    # valgrind runs in a temp dir: a relative --proxy-bin would not be found there.
    args.proxy_bin = str(Path(args.proxy_bin).absolute())
    for tool in ("valgrind", "callgrind_control", "redis-server", "redis-benchmark"):
        if not shutil.which(tool):
            print(f"callgrind.py: {tool} not found (make deps installs valgrind's and Redis' packages)", file=sys.stderr)
            return 2
    if not Path(args.proxy_bin).exists():
        print(f"callgrind.py: {args.proxy_bin} missing: cargo build --release -p kodis-proxy", file=sys.stderr)
        return 2
    rs, rb = shutil.which("redis-server"), shutil.which("redis-benchmark")
    nutcracker = None if args.no_twemproxy else kb.find_exe(None, "nutcracker", ["/usr/sbin/nutcracker"])
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, kb.on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="kodis-callgrind-"))
    keep = Path(args.keep) if args.keep else tmp
    keep.mkdir(parents=True, exist_ok=True)
    children = Children(tmp)
    try:
        _, a = kb.start_redis(children, rs, "redis-a")
        _, b = kb.start_redis(children, rs, "redis-b")
        kport, kadmin = kb.free_port(), kb.free_port()
        kargv = kb.proxy_argv(args.proxy_bin, kport, kadmin, [a, b], ["--worker-threads", str(args.workers)])
        kodis = measure(children, "kodis", kargv, kport, rb, keep)
        twem = {}
        if nutcracker:
            tport, tstats = kb.free_port(), kb.free_port()
            conf = kb.write_twemproxy_conf(tmp, tport, [a, b])
            targv = [nutcracker, "-c", str(conf), "-s", str(tstats), "-a", HOST, "-o", str(tmp / "nutcracker.log")]
            twem = measure(children, "twemproxy", targv, tport, rb, keep)
    finally:
        children.stop_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ncallgrind: user-space instructions per request, {CLIENTS} clients, "
          f"kodis-proxy --worker-threads {args.workers}")
    print("command: python3 benches/callgrind.py " + " ".join(argv) + "\n")
    print("| test | kodis Ir/req | twemproxy Ir/req | kodis / twemproxy |")
    print("|---|---|---|---|")
    for test, _, _ in TESTS:
        t = twem.get(test)
        ratio = f"{kodis[test] / t:.2f}" if t else "-"
        print(f"| {test} | {kodis[test]} | {t or '-'} | {ratio} |")
    if args.write_baseline:
        base = {
            "recorded": time.strftime("%Y-%m-%d"),
            "command": "python3 benches/callgrind.py " + " ".join(argv),
            "clients": CLIENTS,
            "workers": args.workers,
            "ir_per_request": kodis,
            "twemproxy_ir_per_request": twem,
        }
        Path(args.write_baseline).write_text(json.dumps(base, indent=2) + "\n")
        log(f"wrote {args.write_baseline}")
    if args.check:
        base = json.loads(Path(args.check).read_text())["ir_per_request"]
        worse = [f"{t}: {kodis[t]} Ir/req, baseline {base[t]} (+{(kodis[t] / base[t] - 1) * 100:.1f}%)"
                 for t in base if t in kodis and kodis[t] > base[t] * (1 + args.tolerance)]
        if worse:
            print("\nslower than the baseline by more than "
                  f"{args.tolerance * 100:.0f}%:\n  " + "\n  ".join(worse), file=sys.stderr)
            return 1
        print(f"\nwithin {args.tolerance * 100:.0f}% of the baseline {args.check}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
