#!/usr/bin/env bash
# Installs the prometheus-operator CRD validators used by the chart tests, from the npm registry only.
#
# @kubernetes-models/prometheus-operator ships validators generated from the operator's CRD schemas
# (ServiceMonitor, PrometheusRule, ...). The chart tests run them with node to check the objects the
# chart renders for the monitoring.coreos.com/v1 API. Installed into .tools/crd-validator (a private
# prefix; the global npm setup is untouched). Idempotent. Environment: TOOLS_DIR, CRD_VALIDATOR_SPEC.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

install_npm_tool crd-validator "${CRD_VALIDATOR_SPEC:-@kubernetes-models/prometheus-operator@6.0.0}" \
  @kubernetes-models/prometheus-operator/package.json
