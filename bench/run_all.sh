#!/usr/bin/env bash
# Runs every benchmark (device plugin, then exporter) with its default sizes and prints their numbers and ratios.
# Usage: bash bench/run_all.sh            (a few minutes on a 2-core machine)
set -euo pipefail
cd "$(dirname "$0")"
for script in allocate_latency health_propagation restart_reregistration memory scale exporter_scrape exporter_render exporter_memory \
    dra_prepare dra_health; do
  echo "== ${script}"
  python "${script}.py"
  echo
done
