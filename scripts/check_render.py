#!/usr/bin/env python3
"""Checks that `kodis deploy render` and the kustomize manifests describe the same Redis
groups: each group's StatefulSet, Service and PodDisruptionBudget from the base plus
deploy/kubernetes/groups/N (and components), against `kodis deploy render --groups N`
(and the matching flags). Every field counts: container command and args, ports,
env, probes, preStop, volumes and claims, security context, affinity, ...

What kustomize does on its own is set aside first: hashed ConfigMap and Secret names,
the image tag (set by each overlay), the group number read from a pod label instead of
written in, the order of volumes, and fields left at their Kubernetes default. Anything
else that differs is printed, as is a group object on one side only, and the exit code
is 1.

    scripts/check_render.py KUSTOMIZE.yaml RENDER.yaml
"""
import re
import sys

import yaml

HASH = re.compile(r"-[a-z0-9]{10}$")
GROUP_LABEL = "metadata.labels['kodis.io/group']"
# The kinds `kodis deploy render` writes for a group.
GROUP_KINDS = {"StatefulSet", "Service", "PodDisruptionBudget"}


def objects(path):
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(open(path)) if d}


def normalize(obj):
    """The object with kustomize's own changes undone (in place; returned)."""
    if obj["kind"] != "StatefulSet":
        return obj
    spec = obj["spec"]
    spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    pod = spec["template"]["spec"]
    group = spec["template"]["metadata"].get("labels", {}).get("kodis.io/group")
    for v in pod.get("volumes", []):
        if "configMap" in v:
            v["configMap"]["name"] = HASH.sub("", v["configMap"]["name"])
        if "secret" in v:
            v["secret"]["secretName"] = HASH.sub("", v["secret"]["secretName"])
    pod["volumes"] = sorted(pod.get("volumes", []), key=lambda v: v["name"])
    # A claim template's apiVersion and kind are implied (typed objects write them).
    for t in spec.get("volumeClaimTemplates", []):
        t.pop("apiVersion", None)
        t.pop("kind", None)
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        c["image"] = c["image"].split(":")[0]
        env = c.get("env", [])
        for e in env:
            ref = e.get("valueFrom", {})
            if ref.get("fieldRef", {}).get("fieldPath") == GROUP_LABEL and group:
                e.pop("valueFrom")
                e["value"] = group
            if "secretKeyRef" in ref:
                ref["secretKeyRef"]["name"] = HASH.sub("", ref["secretKeyRef"]["name"])
            if "configMapKeyRef" in ref:
                ref["configMapKeyRef"]["name"] = HASH.sub("", ref["configMapKeyRef"]["name"])
        literal = {e["name"]: e["value"] for e in env if "value" in e}
        for e in env:
            if "value" in e and group:
                e["value"] = e["value"].replace("$(KODIS_GROUP)", literal.get("KODIS_GROUP", "$(KODIS_GROUP)"))
    return obj


def flat(x, path=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from flat(v, "%s.%s" % (path, k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from flat(v, "%s[%d]" % (path, i))
    else:
        yield path, x


def main():
    kustomized, rendered = objects(sys.argv[1]), objects(sys.argv[2])
    problems = []
    # The manifests' group objects that the render has no counterpart of.
    for key, obj in kustomized.items():
        component = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        if key[0] in GROUP_KINDS and component == "redis" and key not in rendered:
            problems.append("%s %s: in the manifests, not rendered" % key)
    for key, obj in rendered.items():
        if key not in kustomized:
            problems.append("%s %s: rendered, not in the manifests" % key)
            continue
        a = dict(flat(normalize(kustomized[key])))
        b = dict(flat(normalize(obj)))
        for f in sorted(set(a) | set(b)):
            if a.get(f) != b.get(f):
                problems.append("%s %s%s: manifests %r, render %r" % (key[0], key[1], f, a.get(f), b.get(f)))
    for p in problems:
        print("check_render: " + p, file=sys.stderr)
    if problems:
        return 1
    groups = sorted({o["metadata"].get("labels", {}).get("kodis.io/group", "?") for o in rendered.values()})
    print("check_render: %d objects of groups %s agree (kustomize and kodis deploy render)"
          % (len(rendered), ", ".join(groups)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
