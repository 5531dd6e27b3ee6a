#!/usr/bin/env bash
# Runs every device-plugin benchmark with its default sizes and prints their numbers and ratios.
# Usage: bash bench/run_all.sh            (about a minute on a 2-core machine)
set -euo pipefail
cd "$(dirname "$0")"
for script in allocate_latency health_propagation restart_reregistration memory scale; do
  echo "== ${script}"
  python "${script}.py"
  echo
done
