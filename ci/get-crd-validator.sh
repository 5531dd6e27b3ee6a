#!/usr/bin/env bash
# Installs the prometheus-operator CRD validators used by the chart tests, from the npm registry only.
#
# @kubernetes-models/prometheus-operator ships validators generated from the operator's CRD schemas
# (ServiceMonitor, PrometheusRule, ...). The chart tests run them with node to check the objects the
# chart renders for the monitoring.coreos.com/v1 API. Installed into .tools/crd-validator (a private
# prefix; the global npm setup is untouched). Idempotent. Environment: TOOLS_DIR, CRD_VALIDATOR_SPEC.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${TOOLS_DIR:-$repo_root/.tools}/crd-validator"
spec="${CRD_VALIDATOR_SPEC:-@kubernetes-models/prometheus-operator@6.0.0}"

if [ -f "$dest/node_modules/@kubernetes-models/prometheus-operator/package.json" ]; then
  echo "get-crd-validator: already present in $dest" >&2
  exit 0
fi
command -v npm >/dev/null || { echo "get-crd-validator: npm not found" >&2; exit 1; }
mkdir -p "$dest"
npm install --prefix "$dest" --no-save --no-audit --no-fund --ignore-scripts --loglevel=error "$spec" >&2
echo "$dest"
