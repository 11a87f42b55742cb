#!/usr/bin/env python3
"""Failover time: from the SIGKILL of a master to the first write acknowledged again
through kodis-proxy, for kodis-ha's detection settings (--interval, --down-after).

For each setting and round it starts a group of a master and a replica, a
kodis-dashboard (embedded store), a kodis-proxy and kodis-ha, writes through the proxy
without pause (SET, one client, 0.5 s timeout per request), SIGKILLs the master (a
plain redis-server, so no gate restarts it: HA's detection is what is measured), and
records the window until a write succeeds again, plus how many acknowledged writes the
promoted replica lacks (replication is asynchronous). Prints a markdown table of medians.

    cargo build --release -p kodis-proxy -p kodis-dashboard -p kodis-ha
    python3 benches/failover.py [--rounds 3] [--settings "1s:3,500ms:3,1s:2"] [--json out.json]

Stdlib only (Python 3.11); its helpers are in benches/kodis_bench.py.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kodis_bench as kb  # noqa: E402
from kodis_bench import HOST, Children, http_get, log, resp, rest, wait_until  # noqa: E402


def info_field(port: int, name: str) -> str | None:
    """A field of the server's INFO replication."""
    return kb.info_field(port, b"replication", name)


class Writer(threading.Thread):
    """SETs through the proxy without pause; records what was acknowledged, and when."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.acked: list[tuple[bytes, float]] = []
        self.failures: list[float] = []

    def run(self) -> None:
        i = 0
        sock = None
        while not self.stop.is_set():
            i += 1
            key = b"fo:%d" % i
            try:
                if sock is None:
                    sock = socket.create_connection((HOST, self.port), timeout=0.5)
                sock.sendall(resp(b"SET", key, b"%d" % i))
                reply = sock.recv(64)
                if reply.startswith(b"+OK"):
                    self.acked.append((key, time.monotonic()))
                else:
                    self.failures.append(time.monotonic())
                    time.sleep(0.01)
            except OSError:
                self.failures.append(time.monotonic())
                if sock is not None:
                    sock.close()
                sock = None
                time.sleep(0.01)
        if sock is not None:
            sock.close()


def trial(bins: Path, rs: str, interval: str, down_after: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="kodis-failover-bench-") as tmp:
        children = Children(Path(tmp))
        try:
            (master, mport), (_, rport) = (
                kb.start_redis(children, rs, "redis-master"),
                kb.start_redis(children, rs, "redis-replica"),
            )
            _, base = kb.start_dashboard(children, str(bins / "kodis-dashboard"))
            kb.add_group(base, 1, [mport, rport])
            rest(base, "POST", "/api/v1/slots/init")
            wait_until("the replica's first sync", lambda: info_field(rport, "master_link_status") == "up")
            _, proxy_port = kb.start_kodis(children, str(bins / "kodis-proxy"), [], ["--dashboard", base])
            ha_port = kb.free_port()
            children.start("kodis-ha", [
                str(bins / "kodis-ha"), "--dashboard", base, "--listen", f"{HOST}:{ha_port}",
                "--data-dir", str(Path(tmp) / "ha"), "--interval", interval,
                "--down-after", str(down_after)])
            wait_until("kodis-ha to lead", lambda: json.loads(http_get(f"http://{HOST}:{ha_port}/healthz"))["leader"])

            writer = Writer(proxy_port)
            writer.start()
            wait_until("writes to flow", lambda: len(writer.acked) > 1000)
            wait_until("the replica to catch up", lambda: int(info_field(mport, "master_repl_offset") or 0)
                       - int(info_field(rport, "slave_repl_offset") or 0) < 1000)
            killed = time.monotonic()
            master.proc.kill()
            master.proc.wait()

            def recovered():
                first_fail = next((t for t in writer.failures if t > killed), None)
                if first_fail is None:
                    return None
                return next((t for _, t in reversed(writer.acked) if t > first_fail), None)

            back = wait_until("a write to succeed after the kill", recovered, deadline_s=60)
            writer.stop.set()
            writer.join()
            lost = 0
            with socket.create_connection((HOST, rport), timeout=5) as s:
                f = s.makefile("rb")
                for key, _ in writer.acked:
                    s.sendall(resp(b"EXISTS", key))
                    if f.readline().strip() != b":1":
                        lost += 1
            return {"window_s": back - killed, "lost": lost, "acked": len(writer.acked)}
        finally:
            children.stop_all()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--settings", default="1s:3,500ms:3,1s:2,200ms:3",
                   help="comma-separated INTERVAL:DOWN_AFTER pairs (the default first)")
    p.add_argument("--bin-dir", default=str(kb.REPO_ROOT / "target" / "release"))
    p.add_argument("--json")
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, kb.on_signal)
    bins = Path(a.bin_dir)
    for exe in ("kodis-proxy", "kodis-dashboard", "kodis-ha"):
        if not (bins / exe).is_file():
            log(f"{bins / exe} is missing: cargo build --release -p kodis-proxy -p kodis-dashboard -p kodis-ha")
            return 2
    rs = kb.find_exe(None, "redis-server", [])
    if not rs:
        log("redis-server is needed (make deps)")
        return 2
    results: dict[str, list[dict]] = {}
    for setting in a.settings.split(","):
        interval, down_after = setting.split(":")
        runs = results.setdefault(setting, [])
        for r in range(a.rounds):
            run = trial(bins, rs, interval, int(down_after))
            log(f"--interval {interval} --down-after {down_after} round {r + 1}: "
                f"{run['window_s']:.2f}s, {run['lost']} of {run['acked']} acknowledged writes lost")
            runs.append(run)
    print("| kodis-ha settings | detection bound (interval x down-after) | kill -> first write, median (min-max) | acknowledged writes lost (per round) |")
    print("|---|---:|---:|---|")
    for setting, runs in results.items():
        interval, down_after = setting.split(":")
        w = [r["window_s"] for r in runs]
        print(f"| `--interval {interval} --down-after {down_after}` | {interval} x {down_after} "
              f"| {statistics.median(w):.2f} s ({min(w):.2f}-{max(w):.2f}) "
              f"| {', '.join(str(r['lost']) for r in runs)} |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (kb.Interrupted, KeyboardInterrupt) as e:
        log(f"stopped: {e}")
        sys.exit(130)
