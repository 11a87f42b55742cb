#!/usr/bin/env python3
"""Kodis chaos suite: faults against the compose cluster under a checked load.

    python3 deploy/compose/chaos/chaos.py [--only NAME,...] [--list] [--json FILE]

Needs the cluster up (`make cluster-up`; `make chaos` does it all). For every scenario:
wait until the cluster is whole, start the load (load.py) through both proxies, let it
run, inject the fault, heal it, wait until the cluster is whole again, stop the load,
read every key back and check the history (check.py). One line per scenario, then
`chaos: N passed, M failed`.

Pass rules. Planned operations and kills of a proxy, dashboard, HA or etcd member: no
acknowledged write lost, no impossible read. A crashed, frozen or cut-off master: no
WAIT-acknowledged write lost and no impossible read; other lost writes are measured and
printed with their cause (asynchronous replication)."""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check  # noqa: E402
import cluster as C  # noqa: E402
from load import Load  # noqa: E402

BEFORE_S = float(os.environ.get("CHAOS_BEFORE_S", "5"))  # load before the fault
AFTER_S = float(os.environ.get("CHAOS_AFTER_S", "5"))  # load after the cluster healed
FAULT_S = float(os.environ.get("CHAOS_FAULT_S", "15"))  # pause and cut-off length
LANES = int(os.environ.get("CHAOS_LANES", "12"))  # per proxy
RATE = float(os.environ.get("CHAOS_RATE", "10"))  # iterations/s per lane (7 requests)
CLIENT_TIMEOUT = float(os.environ.get("CHAOS_CLIENT_TIMEOUT", "30"))


def log(msg):
    print("  [%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def hold(secs):
    """The fault's or the load's planned length (not a wait for a condition)."""
    time.sleep(secs)


def master_of_group(g=1):
    return C.masters()[g]


# ------------------------------------------------------------------ the faults
# Each returns a note for the line (what was done); the runner waits for a whole cluster
# afterwards.


def baseline(ctx):
    """No fault: the reference for the others' figures."""
    hold(FAULT_S)
    return "no fault, %.0fs" % FAULT_S


def kill_master(ctx):
    m = master_of_group(1)
    ctx["fault_at"] = time.monotonic()
    C.docker("kill", m)
    log("docker kill %s (master of group 1)" % m)
    C.wait("group 1's failover", 90, lambda: master_of_group(1) != m)
    log("group 1's master is now %s" % master_of_group(1))
    C.start(m)  # the pod comes back; its gate makes it a replica
    return "killed %s" % m


def pause_master(ctx):
    m = master_of_group(1)
    ctx["fault_at"] = time.monotonic()
    C.docker("pause", m)
    log("docker pause %s for %.0f s" % (m, FAULT_S))
    hold(FAULT_S)
    C.docker("unpause", m)
    ctx["healed_at"] = time.monotonic()
    log("unpaused; group 1's master: %s" % master_of_group(1))
    return "paused %s %.0fs" % (m, FAULT_S)


def cut_master(ctx):
    m = master_of_group(1)
    ctx["fault_at"] = time.monotonic()
    C.docker("network", "disconnect", C.NETWORK, m)
    log("%s disconnected from %s for %.0f s" % (m, C.NETWORK, FAULT_S))
    hold(FAULT_S)
    C.docker("network", "connect", C.NETWORK, m)
    ctx["healed_at"] = time.monotonic()
    log("reconnected; group 1's master: %s" % master_of_group(1))
    return "cut off %s %.0fs" % (m, FAULT_S)


def with_min_replicas(fault):
    """The same fault with min-replicas-to-write 1 (min-replicas-max-lag 5) on every
    server: a master that lost its replica refuses writes (NOREPLICAS)."""

    def run(ctx):
        set_min_replicas(1)
        try:
            return fault(ctx) + ", min-replicas-to-write 1"
        finally:
            C.wait_healthy()
            set_min_replicas(0)

    return run


def set_min_replicas(n):
    for names in C.groups().values():
        for name in names:
            C.redis_cli(name, "CONFIG", "SET", "min-replicas-to-write", str(n))
            C.redis_cli(name, "CONFIG", "SET", "min-replicas-max-lag", "5")


def kill_replica_min_replicas(ctx):
    """What min-replicas-to-write costs: a replica dies, its master refuses writes
    until the replica is back (here 10 s later)."""
    set_min_replicas(1)
    try:
        r = C.groups()[1][1]
        ctx["fault_at"] = time.monotonic()
        C.docker("kill", r)
        log("docker kill %s (replica of group 1), back in 10 s" % r)
        hold(10)
        C.start(r)
        C.wait_healthy()
    finally:
        set_min_replicas(0)
    return "killed replica %s, min-replicas-to-write 1" % r


def kill_and_restart(ctx, name, secs, why):
    """docker kill `name`, start it again after `secs` (a pod coming back)."""
    ctx["fault_at"] = time.monotonic()
    C.docker("kill", name)
    log("docker kill %s; %s" % (name, why))
    hold(secs)
    C.start(name)
    return "killed %s" % name


def kill_leader(ctx, what, leader, took_over):
    """docker kill the instance `leader()` names, wait until another leads, start it
    again; `took_over` words the note."""
    old = C.wait("a %s" % what, 60, leader)
    ctx["fault_at"] = time.monotonic()
    C.docker("kill", old)
    log("docker kill %s (the %s)" % (old, what))
    new = C.wait("another %s" % what, 60, leader)
    log("%s is the %s" % (new, what))
    C.start(old)
    return "killed %s, %s %s" % (old, new, took_over)


def kill_proxy(ctx):
    return kill_and_restart(ctx, C.PROXY_NAMES[0], 5, "restarted in 5 s (a Deployment's new pod)")


def kill_dashboard(ctx):
    return kill_leader(ctx, "active dashboard", C.active_dashboard, "took over")


def kill_ha_leader(ctx):
    return kill_leader(ctx, "HA leader", C.ha_leader, "leads")


def kill_etcd(ctx):
    return kill_and_restart(ctx, "kodis-etcd-2", 10, "back in 10 s")


def partition_dashboard(ctx):
    """The control plane cut off from the data plane: the dashboards and the Service in
    front of them leave the network; proxies keep their last topology."""
    names = ["kodis-dashboard", "kodis-dashboard-1", "kodis-dashboard-2"]
    ctx["fault_at"] = time.monotonic()
    for n in names:
        C.docker("network", "disconnect", C.NETWORK, n)
    log("dashboards cut off from the proxies for %.0f s" % FAULT_S)
    hold(FAULT_S)
    for n in names:
        C.docker("network", "connect", C.NETWORK, n)
    return "dashboards cut off %.0fs" % FAULT_S


def rebalance(ctx):
    """Group 4 joins, the slots are rebalanced to it, and meanwhile a proxy, the active
    dashboard and a source master are killed in turn (each back after a while)."""
    if 4 not in C.groups():
        C.script("add-group")
        C.wait_healthy()
    plan = C.api("/rebalance", "POST", {})
    log("rebalance started: %s" % str(plan)[:120])
    ctx["fault_at"] = time.monotonic()
    p = C.PROXY_NAMES[1]
    C.docker("kill", p)
    log("docker kill %s" % p)
    hold(3)
    C.start(p)
    d = C.wait("an active dashboard", 60, C.active_dashboard)
    C.docker("kill", d)
    log("docker kill %s (active dashboard)" % d)
    C.wait("the standby to take over", 60, C.active_dashboard)
    C.start(d)
    m = master_of_group(1)
    C.docker("kill", m)
    log("docker kill %s (master of source group 1)" % m)
    C.wait("group 1's failover", 90, lambda: master_of_group(1) != m)
    C.start(m)

    def done():
        mig = C.api("/migrations")
        t = C.api("/topology")
        return not mig.get("migrations") and not t.get("migrations") and not t.get("queued")

    C.wait("the rebalance to finish", 600, done, every=2)
    slots4 = sum(r["end"] - r["start"] + 1 for r in C.api("/topology")["slots"] if r["group"] == 4)
    log("rebalance done: group 4 owns %d slots" % slots4)
    if slots4 == 0:
        raise RuntimeError("rebalance finished with no slot on group 4")
    return "rebalance to group 4 (%d slots) with kills of %s, %s, %s" % (slots4, p, d, m)


def rolling_restart(ctx):
    """kubectl rollout restart of every group (highest ordinal first; a master's preStop
    hands its role over first) and then of the proxies (SIGTERM: finish, deregister)."""
    ctx["fault_at"] = time.monotonic()
    for g, names in sorted(C.groups().items()):
        for name in sorted(names, reverse=True):
            C.script("stop-server", name)  # preStop (kodis-ha prestop) + docker stop
            C.start(name)
            C.wait_healthy()
            log("restarted %s (group %d)" % (name, g))
    for p in C.PROXY_NAMES:
        C.docker("stop", "-t", "30", p)
        C.start(p)
        C.wait_healthy()
        log("restarted %s" % p)
    return "every server and proxy restarted"


# kind: "master" (loss measured, WAIT-acked must survive) or "safe" (nothing lost)
SCENARIOS = [
    ("baseline", "safe", baseline),
    ("kill-master", "master", kill_master),
    ("pause-master", "master", pause_master),
    ("cut-master", "master", cut_master),
    ("pause-master-minrep", "master", with_min_replicas(pause_master)),
    ("cut-master-minrep", "master", with_min_replicas(cut_master)),
    ("kill-replica-minrep", "safe", kill_replica_min_replicas),
    ("kill-proxy", "safe", kill_proxy),
    ("kill-dashboard", "safe", kill_dashboard),
    ("kill-ha-leader", "safe", kill_ha_leader),
    ("kill-etcd-member", "safe", kill_etcd),
    ("partition-dashboard", "safe", partition_dashboard),
    ("rebalance-under-kills", "master", rebalance),
    ("rolling-restart", "safe", rolling_restart),
]


def cause(r, ctx, kind):
    if r["lost"] == 0:
        return ""
    t = ctx.get("fault_at")
    lt = r.get("lost_times") or []
    if t is None or not lt:
        return "cause: %d lost (counters/registers)" % r["lost"]
    lo, hi = min(lt) - t, max(lt) - t
    where = "acked %+.1fs..%+.1fs from the fault" % (lo, hi)
    if hi <= 1.0:
        why = "acked by the old master and not yet replicated when it failed (async replication)"
    else:
        why = "acked by the old master after the fault, before it was demoted"
    return "cause: %s; %s" % (why, where)


def run_one(name, kind, fault):
    ctx = {}
    C.wait_healthy()
    log("cluster whole; load starts")
    load = Load(C.PROXIES, lanes_per_target=LANES, rate=RATE, timeout=CLIENT_TIMEOUT)
    load.start()
    err = None
    note = ""
    try:
        hold(BEFORE_S)
        note = fault(ctx)
        C.wait_healthy()
        hold(AFTER_S)
    except Exception as e:  # noqa: BLE001 - reported as the scenario's failure
        err = "%s: %s" % (type(e).__name__, e)
    finally:
        load.stop()
        log("load stopped: %d requests" % len(load.history))
    if err is None:
        try:
            C.wait_healthy()
        except Exception as e:  # noqa: BLE001
            err = "%s: %s" % (type(e).__name__, e)
    final = load.final_read(*C.PROXIES[0])
    log("final read: %d keys" % len(final))
    r = check.check(load.history, final, load.stopped)
    if kind == "safe":
        ok = r["lost"] == 0 and r["impossible"] == 0
    else:
        ok = r["lost_wait"] == 0 and r["impossible"] == 0
    ok = ok and err is None
    dur = load.stopped - load.started
    r.update(
        name=name,
        kind=kind,
        passed=ok,
        note=note,
        error=err,
        cause=cause(r, ctx, kind),
        seconds=round(dur, 1),
        ops_per_s=round(r["ops"] / dur) if dur else 0,
    )
    return r


def line(r):
    errs = sum(r["errors"].values())
    top = ", ".join("%s %d" % kv for kv in r["errors"].most_common(3))
    s = "%-22s %s  lost %d (WAIT-acked %d of %d)  stale %d  impossible %d  unwritable %.1fs  errors %d%s  ops %d" % (
        r["name"],
        "PASS" if r["passed"] else "FAIL",
        r["lost"],
        r["lost_wait"],
        r["wait_acked"],
        r["stale"],
        r["impossible"],
        r["unwritable_s"],
        errs,
        " (%s)" % top if top else "",
        r["ops"],
    )
    if r["cause"]:
        s += "\n    " + r["cause"]
    if r["error"]:
        s += "\n    error: " + r["error"]
    if not r["passed"] and r.get("error_samples"):
        s += "\n    error samples: %s" % r["error_samples"]
    if r["bad_reads"] and (r["impossible"] or not r["passed"]):
        s += "\n    reads: %s" % r["bad_reads"][:3]
    return s


def table(results):
    rows = [
        "| scenario | result | acked writes | lost (WAIT-acked lost / WAIT-acked) | stale reads | impossible reads | longest unwritable | error replies | what |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        top = ", ".join("%s %d" % kv for kv in r["errors"].most_common(3))
        rows.append(
            "| %s | %s | %d | %d (%d / %d) | %d | %d | %.1f s | %d%s | %s%s |"
            % (
                r["name"],
                "pass" if r["passed"] else "FAIL",
                r["acked_writes"],
                r["lost"],
                r["lost_wait"],
                r["wait_acked"],
                r["stale"],
                r["impossible"],
                r["unwritable_s"],
                sum(r["errors"].values()),
                " (%s)" % top if top else "",
                r["note"],
                "; " + r["cause"] if r["cause"] else "",
            )
        )
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--table", help="write the markdown table to this file")
    a = ap.parse_args()
    names = [n for n, _, _ in SCENARIOS]
    if a.list:
        print("\n".join(names))
        return 0
    todo = SCENARIOS
    if a.only:
        want = a.only.split(",")
        bad = [w for w in want if w not in names]
        if bad:
            print("chaos: unknown scenario %s (--list)" % bad, file=sys.stderr)
            return 2
        todo = [s for s in SCENARIOS if s[0] in want]
    results = []
    for name, kind, fault in todo:
        print("chaos: %s ..." % name, flush=True)
        try:
            r = run_one(name, kind, fault)
        except Exception as e:  # noqa: BLE001 - e.g. the final read never answered
            r = {
                "name": name, "kind": kind, "passed": False, "lost": 0, "lost_wait": 0,
                "wait_acked": 0, "stale": 0, "impossible": 0, "unwritable_s": 0.0,
                "errors": check.collections.Counter(), "ops": 0, "acked_writes": 0,
                "cause": "", "note": "", "error": "%s: %s" % (type(e).__name__, e),
                "bad_reads": [],
            }
        results.append(r)
        print(line(r), flush=True)
        if a.json:  # after every scenario: a long run stopped half way keeps its figures
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1, default=str)
        if a.table:
            with open(a.table, "w") as f:
                f.write(table(results) + "\n")
    passed = sum(1 for r in results if r["passed"])
    print(table(results))
    print("chaos: %d passed, %d failed" % (passed, len(results) - passed))
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
