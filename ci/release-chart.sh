#!/usr/bin/env bash
# Publishes the chart version in charts/krakenplug the two ways `helm` reads charts:
#
#   ci/release-chart.sh --pages DIR [--oci REGISTRY/PATH]
#
#   --pages  a checkout of the gh-pages branch: receives krakenplug-<version>.tgz and an index.yaml that
#            keeps every earlier release, served by GitHub Pages at https://<owner>.github.io/<repository>
#            (from GITHUB_REPOSITORY, e.g. c2net-ai/krakenplug; PAGES_URL overrides it), so that
#            `helm repo add krakenplug https://c2net-ai.github.io/krakenplug` works
#   --oci    also push the package to oci://REGISTRY/PATH, e.g. ghcr.io/c2net-ai/charts, so that
#            `helm install krakenplug oci://ghcr.io/c2net-ai/charts/krakenplug` works; logs in first
#            when REGISTRY_USER and REGISTRY_PASSWORD are set
#
# A version already in DIR is not published again (bump charts/krakenplug/Chart.yaml to release).
# helm is $HELM, else .tools/helm4/helm/helm (ci/get-helm.sh), else helm on PATH.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
pages="" oci=""
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --pages) pages="${2:?}"; shift 2 ;;
    --oci) oci="${2:?}"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "release-chart: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$pages" ] || usage
[ -d "$pages" ] || { echo "release-chart: --pages $pages: no such directory" >&2; exit 1; }

helm="${HELM:-}"
if [ -z "$helm" ]; then
  if [ -x "$repo_root/.tools/helm4/helm/helm" ]; then helm="$repo_root/.tools/helm4/helm/helm"
  else helm="$(command -v helm || true)"; fi
fi
[ -n "$helm" ] || { echo "release-chart: no helm found; run ci/get-helm.sh or set HELM" >&2; exit 1; }

version="$(sed -n 's/^version: *//p' "$repo_root/charts/krakenplug/Chart.yaml")"
if [ -f "$pages/krakenplug-$version.tgz" ]; then
  echo "release-chart: chart $version is already published; bump charts/krakenplug/Chart.yaml version to release" >&2
  exit 0
fi
if [ -z "${PAGES_URL:-}" ]; then
  repository="${GITHUB_REPOSITORY:?release-chart: set GITHUB_REPOSITORY (owner/name) or PAGES_URL}"
  owner="${repository%%/*}"
  PAGES_URL="https://${owner,,}.github.io/${repository#*/}"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
merge=()
if [ -f "$pages/index.yaml" ]; then merge=(--merge "$pages/index.yaml"); fi
HELM="$helm" bash "$repo_root/ci/package-chart.sh" --out "$work" --url "$PAGES_URL" "${merge[@]}" >/dev/null
cp "$work/krakenplug-$version.tgz" "$work/index.yaml" "$pages/"
echo "release-chart: krakenplug $version -> $PAGES_URL" >&2

if [ -n "$oci" ]; then
  if [ -n "${REGISTRY_USER:-}" ] && [ -n "${REGISTRY_PASSWORD:-}" ]; then
    printf '%s' "$REGISTRY_PASSWORD" | "$helm" registry login "${oci%%/*}" -u "$REGISTRY_USER" --password-stdin >&2
  fi
  "$helm" push "$pages/krakenplug-$version.tgz" "oci://$oci" >&2
  echo "release-chart: krakenplug $version -> oci://$oci/krakenplug" >&2
fi
