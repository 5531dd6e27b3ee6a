#!/usr/bin/env bash
# Runs every benchmark (device plugin, then exporter) with its default sizes, prints their numbers and
# ratios, and lists every missed target at the end; a miss never stops the benchmarks after it.
# Usage: bash bench/run_all.sh            (about ten minutes on a 2-core machine)
set -uo pipefail
cd "$(dirname "$0")"
scripts=(startup allocate_latency health_propagation restart_reregistration idle_cpu memory scale
         exporter_scrape exporter_memory dra_prepare dra_health)
missed=()
log=$(mktemp)
trap 'rm -f "${log}"' EXIT
for script in "${scripts[@]}"; do
  echo "== ${script}"
  python "${script}.py" 2>&1 | tee "${log}"
  status=${PIPESTATUS[0]}
  while IFS= read -r line; do
    missed+=("${script}: ${line#MISS }")
  done < <(grep '^MISS' "${log}")
  if [[ ${status} -ne 0 ]] && ! grep -q '^MISS' "${log}"; then
    missed+=("${script}: a target missed or the script failed (exit status ${status}; see its output above)")
  fi
  echo
done
echo "== summary"
if [[ ${#missed[@]} -eq 0 ]]; then
  echo "every target met"
  exit 0
fi
echo "${#missed[@]} target(s) missed:"
printf '  %s\n' "${missed[@]}"
exit 1
