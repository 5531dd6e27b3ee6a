#!/usr/bin/env bash
# Pushes the OCI archive that ci/build-image.sh saved to one or more destinations with skopeo.
#
#   ci/push-image.sh ARCHIVE DEST [DEST ...]
#
#   ARCHIVE  krakenplug-<version>.oci.tar from ci/build-image.sh
#   DEST     a skopeo destination: docker://ghcr.io/<owner>/krakenplug:<tag> for a registry,
#            oci:DIR:TAG for a local OCI layout
#
# Credentials for docker:// destinations: REGISTRY_USER and REGISTRY_PASSWORD (the workflow passes
# github.actor and GITHUB_TOKEN); without them skopeo uses its own login (skopeo login / podman login).
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
case "$1" in -h|--help) usage ;; esac
archive="$1"; shift
[ -f "$archive" ] || { echo "push-image: $archive: no such file (run ci/build-image.sh first)" >&2; exit 1; }
command -v skopeo >/dev/null || { echo "push-image: skopeo not found (apt-get install skopeo)" >&2; exit 1; }

creds=()
if [ -n "${REGISTRY_USER:-}" ] && [ -n "${REGISTRY_PASSWORD:-}" ]; then
  creds=(--dest-creds "$REGISTRY_USER:$REGISTRY_PASSWORD")
fi
for dest in "$@"; do
  extra=()
  case "$dest" in docker://*) extra=("${creds[@]}") ;; esac
  echo "push-image: $archive -> $dest" >&2
  skopeo copy --quiet "${extra[@]}" "oci-archive:$archive" "$dest"
done
