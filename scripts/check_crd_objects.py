#!/usr/bin/env python3
"""Checks of Kodis's rendered Kubernetes manifests that a JSON schema cannot make.

Used by scripts/validate-manifests.sh, once per rendered overlay:

    check_crd_objects.py --metrics deploy/kubernetes/metrics.txt \
        --core-out core.yaml --name dev rendered.yaml

- Custom resources (monitoring.coreos.com: ServiceMonitor, PrometheusRule), which
  kubernetes-validate has no schema for: their required fields, and that each
  ServiceMonitor's endpoint port names a port of a Service it selects.
- The Grafana dashboard ConfigMaps (label grafana_dashboard): the JSON parses and has
  panels with queries.
- Metric names: every `kodis_*` name in an alert, a dashboard query or the
  prometheus-adapter rule is listed in metrics.txt.
- Security: no wildcard in an RBAC rule; every container has runAsNonRoot,
  allowPrivilegeEscalation false and drops ALL capabilities, every pod a RuntimeDefault
  seccomp profile; only HA's pods mount a service account token; no password or token
  in a ConfigMap, a command line or a literal env value; a dashboard API or proxy admin
  port on a non-loopback address, and every container that calls the dashboard
  (--dashboard), gets KODIS_ADMIN_TOKEN from a Secret (without it the binaries refuse
  a public address, and the dashboard answers 401).
- etcd: the StatefulSet's replicas match its ETCD_INITIAL_CLUSTER.

Every other object is written to --core-out for kubernetes-validate. With
--source-root, metrics.txt is also checked against the metrics the code registers
(each exported metric registered, each registered metric listed). Exits 1 with one
line per problem.
"""

import argparse
import base64
import json
import pathlib
import re
import sys

import yaml

CRD_GROUPS = ("monitoring.coreos.com/",)
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
METRIC_RE = re.compile(r"\bkodis_[a-z0-9_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Env names whose value is a secret: they must come from a Secret.
SECRET_ENV = {"KODIS_REDIS_PASSWORD", "KODIS_ADMIN_TOKEN", "KODIS_PROXY_PASSWORD"}
SECRET_WORDS = re.compile(r"^\s*(requirepass|masterauth)\s+\S", re.MULTILINE)
DURATION_RE = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
# Where each binary registers its metrics, and under which prefix.
METRIC_SOURCES = ("proxy/src", "dashboard/src", "ha/src")


class Problems:
    def __init__(self, name):
        self.name = name
        self.items = []

    def add(self, obj, msg):
        where = f"{obj.get('kind', '?')}/{obj.get('metadata', {}).get('name', '?')}" if obj else "-"
        self.items.append(f"{self.name}: {where}: {msg}")


def load_metrics(path):
    """name -> (type, status) from metrics.txt."""
    metrics = {}
    for n, line in enumerate(pathlib.Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 3)
        if len(parts) < 4:
            sys.exit(f"{path}:{n}: expected `name type status meaning`: {line!r}")
        name, mtype, status, _ = parts
        if mtype not in ("counter", "gauge", "histogram") or status not in ("exported", "planned", "derived"):
            sys.exit(f"{path}:{n}: unknown type {mtype!r} or status {status!r}")
        if name in metrics:
            sys.exit(f"{path}:{n}: {name} is listed twice")
        metrics[name] = (mtype, status)
    return metrics


def known_metric(name, metrics):
    if name in metrics:
        return True
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and metrics.get(base, ("",))[0] == "histogram":
            return True
    return False


def check_metric_names(text, where, obj, metrics, problems, used):
    for name in METRIC_RE.findall(text):
        if known_metric(name, metrics):
            used.add(name)
        else:
            problems.add(obj, f"{where} uses {name}, which metrics.txt does not list")


def check_code_metrics(root, metrics):
    """metrics.txt against the `registry.register("name", ...)` calls of the code."""
    problems = []
    registered = set()
    for src in METRIC_SOURCES:
        for f in sorted((root / src).rglob("*.rs")):
            text = f.read_text()
            prefixes = re.findall(r'Registry::with_prefix\(\s*"([a-z0-9_]+)"\s*\)', text)
            if not prefixes:
                continue
            if len(set(prefixes)) > 1:
                problems.append(f"{f}: several metric prefixes, cannot tell them apart")
                continue
            for name in re.findall(r'\.register\(\s*"([a-z0-9_]+)"', text):
                registered.add(f"{prefixes[0]}_{name}")
    if not registered:
        return [f"no registered metric found under {root} ({', '.join(METRIC_SOURCES)})"]
    exported = set()
    for name, (mtype, status) in metrics.items():
        if status != "exported":
            continue
        base = name[: -len("_total")] if mtype == "counter" and name.endswith("_total") else name
        if mtype == "counter" and base == name:
            problems.append(f"metrics.txt: counter {name} must end in _total (its exposed name)")
        exported.add(base)
        if base not in registered:
            problems.append(f"metrics.txt: {name} is marked exported but no code registers {base}")
    for base in sorted(registered - exported):
        problems.append(f"metrics.txt: the code registers {base}, which metrics.txt does not list as exported")
    return problems


def pod_spec(obj):
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    if obj["kind"] in WORKLOAD_KINDS:
        return spec.get("template", {}).get("spec")
    if obj["kind"] == "Pod":
        return spec
    return None


def check_pod(obj, secrets, problems):
    spec = pod_spec(obj)
    if spec is None:
        return
    labels = obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    component = labels.get("app.kubernetes.io/component")
    automount = spec.get("automountServiceAccountToken")
    if component == "ha":
        if automount is not True:
            problems.add(obj, "HA's pods need automountServiceAccountToken: true (the Kubernetes orchestrator)")
    elif automount is not False:
        problems.add(obj, "automountServiceAccountToken must be false (only HA talks to the API server)")
    pod_sc = spec.get("securityContext", {})
    pod_seccomp = pod_sc.get("seccompProfile", {}).get("type")
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        name = f"container {c.get('name')}"
        sc = c.get("securityContext", {})
        if sc.get("runAsNonRoot") is not True:
            problems.add(obj, f"{name}: securityContext.runAsNonRoot must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.add(obj, f"{name}: securityContext.allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.add(obj, f"{name}: securityContext.capabilities.drop must contain ALL")
        if sc.get("seccompProfile", {}).get("type", pod_seccomp) != "RuntimeDefault":
            problems.add(obj, f"{name}: seccompProfile must be RuntimeDefault")
        words = [str(w) for w in c.get("command", []) + c.get("args", [])]
        line = " ".join(words)
        check_admin_token(obj, c, words, problems)
        for bad in ("requirepass", "masterauth", "--password", "--admin-token"):
            if bad in words or f"{bad} " in line or f"{bad}=" in line:
                problems.add(obj, f"{name}: {bad} on the command line (`ps` shows it); use a Secret")
        for value in secrets:
            if value in line:
                problems.add(obj, f"{name}: a Secret's value appears on the command line")
        for env in c.get("env", []):
            if env.get("name") in SECRET_ENV and "value" in env:
                problems.add(obj, f"{name}: env {env['name']} must come from a Secret (secretKeyRef), not a literal")
            elif any(v in str(env.get("value", "")) for v in secrets):
                problems.add(obj, f"{name}: env {env.get('name')} holds a Secret's value in the clear")


# Binary -> (flag of its admin surface, default address): without a token it must be
# loopback (the binary refuses to start otherwise).
ADMIN_SURFACES = {
    "kodis-dashboard": ("--listen", "127.0.0.1:18080"),
    "kodis-proxy": ("--admin-listen", "127.0.0.1:11080"),
}


def flag_value(words, flag):
    """The value of `flag` (`--flag V` or `--flag=V`) in `words`, or None."""
    for i, w in enumerate(words):
        if w == flag and i + 1 < len(words):
            return words[i + 1]
        if w.startswith(flag + "="):
            return w[len(flag) + 1:]
    return None


def is_loopback(addr):
    host = addr.rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


def check_admin_token(obj, c, words, problems):
    """A public admin surface, or a caller of the dashboard, needs the admin token."""
    name = f"container {c.get('name')}"
    needs = []
    for binary, (flag, default) in ADMIN_SURFACES.items():
        if binary in words:
            addr = flag_value(words, flag) or default
            if not is_loopback(addr):
                needs.append(f"{binary} {flag} {addr} is not loopback")
    if flag_value(words, "--dashboard") is not None:
        needs.append("it calls the dashboard, whose API needs the token")
    if not needs:
        return
    env = {e.get("name"): e for e in c.get("env", [])}
    ref = env.get("KODIS_ADMIN_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
    if not ref or ref.get("optional") is True:
        problems.add(obj, f"{name}: needs KODIS_ADMIN_TOKEN from a Secret (non-optional secretKeyRef): {'; '.join(needs)}")


def check_rbac(obj, problems):
    if obj["kind"] not in ("Role", "ClusterRole"):
        return
    for i, rule in enumerate(obj.get("rules", [])):
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            if any("*" in str(v) for v in rule.get(field, [])):
                problems.add(obj, f"rule {i}: wildcard in {field}")


def check_configmap(obj, secrets, metrics, problems, used):
    data = obj.get("data") or {}
    for key, value in data.items():
        value = str(value)
        if SECRET_WORDS.search(value):
            problems.add(obj, f"{key}: requirepass/masterauth in a ConfigMap; the password belongs in a Secret")
        for secret in secrets:
            if secret in value:
                problems.add(obj, f"{key}: holds a Secret's value")
    if obj.get("metadata", {}).get("labels", {}).get("grafana_dashboard") is None:
        return
    dashboards = [k for k in data if k.endswith(".json")]
    if not dashboards:
        problems.add(obj, "labelled grafana_dashboard but has no .json key")
    for key in dashboards:
        try:
            board = json.loads(data[key])
        except json.JSONDecodeError as e:
            problems.add(obj, f"{key}: not JSON: {e}")
            continue
        if not board.get("title") or not board.get("uid"):
            problems.add(obj, f"{key}: a dashboard needs a title and a uid")
        panels = [p for p in board.get("panels", []) if p.get("type") != "row"]
        if not panels:
            problems.add(obj, f"{key}: no panels")
        ids = [p.get("id") for p in board.get("panels", [])]
        if len(ids) != len(set(ids)):
            problems.add(obj, f"{key}: panel ids repeat")
        for p in panels:
            exprs = [t.get("expr", "") for t in p.get("targets", [])]
            if not exprs or not all(exprs):
                problems.add(obj, f"{key}: panel {p.get('title')!r} has a target without a query")
            for e in exprs:
                check_metric_names(e, f"{key}: panel {p.get('title')!r}", obj, metrics, problems, used)


def selects(selector, labels):
    match = selector.get("matchLabels", {})
    return bool(match or selector.get("matchExpressions")) and all(labels.get(k) == v for k, v in match.items())


def check_servicemonitor(obj, services, problems):
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        problems.add(obj, "spec is required")
        return
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        problems.add(obj, "spec.selector with matchLabels or matchExpressions is required")
        return
    endpoints = spec.get("endpoints")
    if not endpoints:
        problems.add(obj, "spec.endpoints must list at least one endpoint")
        return
    matched = [s for s in services if selects(selector, s.get("metadata", {}).get("labels", {}))]
    if not matched:
        problems.add(obj, "spec.selector matches no Service of this overlay")
    ports = {p.get("name") for s in matched for p in s.get("spec", {}).get("ports", [])}
    for i, ep in enumerate(endpoints):
        if not ep.get("port") and not ep.get("targetPort"):
            problems.add(obj, f"endpoint {i}: port (a Service port name) is required")
        elif ep.get("port") and matched and ep["port"] not in ports:
            problems.add(obj, f"endpoint {i}: no selected Service has a port named {ep['port']!r}")
        for field in ("interval", "scrapeTimeout"):
            if field in ep and not DURATION_RE.match(str(ep[field])):
                problems.add(obj, f"endpoint {i}: {field} {ep[field]!r} is not a duration")


def check_prometheusrule(obj, metrics, problems, used):
    groups = obj.get("spec", {}).get("groups")
    if not groups:
        problems.add(obj, "spec.groups must list at least one group")
        return
    names = set()
    for g in groups:
        gname = g.get("name")
        if not gname:
            problems.add(obj, "every group needs a name")
        elif gname in names:
            problems.add(obj, f"group {gname!r} is defined twice")
        names.add(gname)
        if not g.get("rules"):
            problems.add(obj, f"group {gname!r} has no rules")
        for r in g.get("rules", []):
            what = r.get("alert") or r.get("record")
            if bool(r.get("alert")) == bool(r.get("record")):
                problems.add(obj, f"group {gname!r}: each rule needs exactly one of alert and record")
            expr = r.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.add(obj, f"rule {what!r}: expr is required")
                continue
            if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                problems.add(obj, f"rule {what!r}: unbalanced brackets in expr")
            if "for" in r and not DURATION_RE.match(str(r["for"])):
                problems.add(obj, f"rule {what!r}: for {r['for']!r} is not a duration")
            if r.get("alert"):
                if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                    problems.add(obj, f"alert {what!r}: labels.severity must be critical, warning or info")
                if not r.get("annotations", {}).get("summary"):
                    problems.add(obj, f"alert {what!r}: annotations.summary is required")
            check_metric_names(expr, f"rule {what!r}", obj, metrics, problems, used)


def check_etcd(obj, problems):
    if obj["kind"] != "StatefulSet" or obj["metadata"]["name"] != "kodis-etcd":
        return
    replicas = obj["spec"].get("replicas", 1)
    for c in obj["spec"]["template"]["spec"]["containers"]:
        for env in c.get("env", []):
            if env.get("name") == "ETCD_INITIAL_CLUSTER":
                members = [m for m in env.get("value", "").split(",") if m]
                want = [f"kodis-etcd-{i}" for i in range(replicas)]
                if [m.split("=", 1)[0] for m in members] != want:
                    problems.add(obj, f"replicas is {replicas} but ETCD_INITIAL_CLUSTER lists "
                                      f"{len(members)} members ({', '.join(m.split('=')[0] for m in members)})")
                return
    problems.add(obj, "no ETCD_INITIAL_CLUSTER env")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rendered", nargs="?", help="output of `kubectl kustomize` for one overlay")
    ap.add_argument("--name", default="manifests", help="the overlay's name, for messages")
    ap.add_argument("--metrics", required=True, help="deploy/kubernetes/metrics.txt")
    ap.add_argument("--core-out", help="where to write the objects that are not custom resources")
    ap.add_argument("--source-root", help="repository root: check metrics.txt against the code")
    ap.add_argument("--adapter-rules", help="prometheus-adapter rules whose metric names to check")
    args = ap.parse_args()
    metrics = load_metrics(args.metrics)
    failures = []
    used = set()

    if args.source_root:
        failures += check_code_metrics(pathlib.Path(args.source_root), metrics)
    if args.adapter_rules:
        problems = Problems(args.adapter_rules)
        rules = yaml.safe_load(pathlib.Path(args.adapter_rules).read_text())
        for r in rules.get("rules", []):
            text = " ".join(str(r.get(k, "")) for k in ("seriesQuery", "metricsQuery"))
            text += " " + str(r.get("name", {}).get("as", ""))
            check_metric_names(text, "adapter rule", None, metrics, problems, used)
        failures += problems.items

    if args.rendered:
        problems = Problems(args.name)
        with open(args.rendered) as f:
            objects = [o for o in yaml.safe_load_all(f) if o]
        secrets = set()
        for o in objects:
            if o.get("kind") == "Secret":
                secrets |= {v for v in (o.get("stringData") or {}).values() if len(str(v)) >= 6}
                for v in (o.get("data") or {}).values():
                    decoded = base64.b64decode(v).decode(errors="replace")
                    if len(decoded) >= 6:
                        secrets.add(decoded)
        services = [o for o in objects if o.get("kind") == "Service"]
        core, crds = [], []
        for o in objects:
            if not o.get("kind") or not o.get("apiVersion") or not o.get("metadata", {}).get("name"):
                problems.add(o, "apiVersion, kind and metadata.name are required")
                continue
            if o["apiVersion"].startswith(CRD_GROUPS):
                crds.append(o)
                if o["kind"] == "ServiceMonitor":
                    check_servicemonitor(o, services, problems)
                elif o["kind"] == "PrometheusRule":
                    check_prometheusrule(o, metrics, problems, used)
                else:
                    problems.add(o, "a custom resource this script does not know how to check")
                continue
            core.append(o)
            check_pod(o, secrets, problems)
            check_rbac(o, problems)
            check_etcd(o, problems)
            if o["kind"] == "ConfigMap":
                check_configmap(o, secrets, metrics, problems, used)
        if args.core_out:
            with open(args.core_out, "w") as f:
                yaml.safe_dump_all(core, f, sort_keys=False)
        failures += problems.items
        planned = sorted(n for n in used if metrics.get(n, ("", ""))[1] == "planned")
        print(f"{args.name}: {len(core)} core objects for kubernetes-validate, {len(crds)} custom "
              f"resources checked here, {len(used)} metric names used"
              + (f" ({len(planned)} planned, not exported yet: {', '.join(planned)})" if planned else ""))

    for line in failures:
        print(f"FAIL {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
