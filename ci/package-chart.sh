#!/usr/bin/env bash
# Packages the chart and (re)builds a chart repository index: the content of a GitHub Pages branch that
# `helm repo add krakenplug <url>` reads.
#
#   ci/package-chart.sh --out DIR --url URL [--chart DIR] [--merge INDEX]
#
#   --out    directory that receives krakenplug-<version>.tgz and index.yaml (created if missing)
#   --url    public URL of that directory (the charts' download URLs in index.yaml)
#   --chart  chart directory (default charts/krakenplug)
#   --merge  an existing index.yaml whose entries are kept (earlier releases)
#
# helm is $HELM, else .tools/helm4/helm/helm (ci/get-helm.sh), else helm on PATH.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
out="" url="" merge="" chart="$repo_root/charts/krakenplug"

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?}"; shift 2 ;;
    --url) url="${2:?}"; shift 2 ;;
    --chart) chart="${2:?}"; shift 2 ;;
    --merge) merge="${2:?}"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "package-chart: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$out" ] && [ -n "$url" ] || usage

helm="${HELM:-}"
if [ -z "$helm" ]; then
  if [ -x "$repo_root/.tools/helm4/helm/helm" ]; then helm="$repo_root/.tools/helm4/helm/helm"
  elif command -v helm >/dev/null; then helm="$(command -v helm)"
  else echo "package-chart: no helm found; run ci/get-helm.sh or set HELM" >&2; exit 1
  fi
fi

mkdir -p "$out"
"$helm" lint --strict "$chart" >&2
"$helm" package "$chart" --destination "$out" >&2
if [ -n "$merge" ]; then
  [ -f "$merge" ] || { echo "package-chart: --merge $merge: no such file" >&2; exit 1; }
  "$helm" repo index "$out" --url "$url" --merge "$merge"
else
  "$helm" repo index "$out" --url "$url"
fi
echo "$out/index.yaml"
