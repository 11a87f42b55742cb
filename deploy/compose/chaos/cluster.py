"""The compose cluster as the chaos suite sees it (deploy/compose/README.md, the contract):
docker commands, the dashboard's API, and waits that poll with a deadline."""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SECRETS = os.environ.get("CHAOS_SECRETS") or os.path.join(ROOT, "deploy", "compose", "secrets.env")
NETWORK = "kodis_net"
DASHBOARD = "http://127.0.0.1:18080"
PROXIES = [("127.0.0.1", 19000), ("127.0.0.1", 19001)]
PROXY_NAMES = ["kodis-proxy-1", "kodis-proxy-2"]
DASHBOARD_PORTS = {"kodis-dashboard-1": 18081, "kodis-dashboard-2": 18082}
HA_PORTS = {"kodis-ha-1": 18091, "kodis-ha-2": 18092}


class Timeout(Exception):
    pass


def secrets():
    out = {}
    with open(SECRETS) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            out[k] = v
    return out


def token():
    return secrets().get("KODIS_ADMIN_TOKEN", "")


def docker(*args, check=True):
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise RuntimeError("docker %s: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout.strip()


def script(*args):
    subprocess.run([os.path.join(ROOT, "scripts", "cluster.sh"), *args], check=True, cwd=ROOT)


def http(url, method="GET", body=None, timeout=5):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token())
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode()


def api(path, method="GET", body=None, retry_secs=30):
    """A call through the dashboard Service. A 503 (no active dashboard yet: during a
    takeover the load balancer needs its next health check to find the new one, or
    the dashboard is a standby) is retried for `retry_secs`, as any client would; a
    503 changes nothing, so a POST is safe to send again."""
    end = time.monotonic() + retry_secs
    while True:
        try:
            return http(DASHBOARD + "/api/v1" + path, method, body)
        except urllib.error.HTTPError as e:
            if e.code != 503 or time.monotonic() > end:
                raise
        time.sleep(0.5)


def wait(what, secs, pred, every=0.5):
    """Polls pred() until it returns something true (returned); Timeout after secs."""
    end = time.monotonic() + secs
    last = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - not there yet
            last = e
        if time.monotonic() > end:
            raise Timeout("timed out after %ds waiting for %s (%s)" % (secs, what, last))
        time.sleep(every)


def container(addr):
    return addr.rsplit(":", 1)[0]


def masters():
    """{group id: master container} from the topology (first server is the master)."""
    t = api("/topology")
    return {g["id"]: container(g["servers"][0]) for g in t["groups"]}


def groups():
    t = api("/topology")
    return {g["id"]: [container(s) for s in g["servers"]] for g in t["groups"]}


def healthy_reason():
    """None when the cluster is whole: every server of every group up in its role (the
    replicas' links up), both proxies registered at the current epoch, HA reporting, no
    migration in flight; else what is not."""
    o = api("/overview")
    for g in o["groups"]:
        for s in g["servers"]:
            if not s.get("reachable") or s.get("role") != s.get("reported_role"):
                return "group %s server %s: %s" % (g["id"], s["addr"], s)
    if len(o["proxies"]) < len(PROXIES):
        return "%d proxies registered" % len(o["proxies"])
    for p in o["proxies"]:
        if p.get("acked_epoch") != o["epoch"]:
            return "proxy %s at epoch %s, not %s" % (p["id"], p.get("acked_epoch"), o["epoch"])
    ha = o.get("ha") or {}
    if ha.get("age_secs") is None or ha["age_secs"] > 5:
        return "no recent HA report"
    for g in groups().values():
        for name in g[1:]:
            if "master_link_status:up" not in redis_cli(name, "INFO", "replication"):
                return "%s: replication link not up" % name
    m = api("/migrations")
    if isinstance(m, dict) and (m.get("migrations") or m.get("queued")):
        return "migration in flight"
    return None


def wait_healthy(secs=180):
    state = {"why": None}

    def ok():
        state["why"] = healthy_reason()
        return state["why"] is None

    try:
        wait("a whole cluster", secs, ok, every=1.0)
    except Timeout as e:
        raise Timeout("%s; last: %s" % (e, state["why"])) from e


def redis_cli(name, *args):
    pw = secrets()["KODIS_REDIS_PASSWORD"]
    return docker(
        "exec", "-e", "REDISCLI_AUTH=" + pw, name, "redis-cli", "--user", "default", *args
    )


def active_dashboard():
    for name, port in DASHBOARD_PORTS.items():
        try:
            if http("http://127.0.0.1:%d/healthz" % port, timeout=2).get("active"):
                return name
        except Exception:  # noqa: BLE001 - down or unreachable
            pass
    return None


def ha_leader():
    for name, port in HA_PORTS.items():
        try:
            m = http("http://127.0.0.1:%d/metrics" % port, timeout=2)
        except Exception:  # noqa: BLE001
            continue
        for line in str(m).splitlines():
            if line.startswith("kodis_ha_leader") and line.split()[-1] in ("1", "1.0"):
                return name
    return None


def running(name):
    return docker("inspect", "-f", "{{.State.Running}}", name, check=False) == "true"


def start(name):
    docker("start", name)
    wait(name + " running", 60, lambda: running(name))
