#!/usr/bin/env bash
# Builds the agent image from `git archive HEAD` without Docker, smoke-tests it, prints its size and
# saves it as an OCI archive that `ctr images import` (containerd, kind) and `skopeo copy` accept.
#
#   bash ci/build-image.sh [--out DIR] [--tag NAME:TAG] [--max-mb N] [--ref TREE-ISH]
#
#   --out     work and output directory (default .ci/out/image); receives krakenplug-<version>.oci.tar
#   --tag     image name (default krakenplug:<version from src/krakenplug/_version.py>)
#   --max-mb  fail when the image is larger (default 200; podman's uncompressed count, in MB = 10^6 B)
#   --ref     what to build (default HEAD: uncommitted changes are not in the image)
#
# Tools, all Debian packages (installed as root with apt-get when missing): mmdebstrap builds the two
# bases from Debian bookworm (the builder's with python3-venv; the runtime one with python3 only, no
# docs, man pages, locales or gconv); buildah builds the Dockerfile with them; podman runs it with runc;
# ctr, with a private containerd started for the check, imports the archive (containerd.io's ctr on
# a Docker host serves as well). The bases are cached in --out, keyed by their package lists.
# Environment: PIP_CERT (CA bundle for pip in the builder; default the host's bundle when present),
# STORAGE_DRIVER (default overlay).
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
out="$repo_root/.ci/out/image" tag="" max_mb=200 ref=HEAD
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?}"; shift 2 ;;
    --tag) tag="${2:?}"; shift 2 ;;
    --max-mb) max_mb="${2:?}"; shift 2 ;;
    --ref) ref="${2:?}"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "build-image: unknown argument $1" >&2; usage ;;
  esac
done

log() { echo "build-image: $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

version="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$repo_root/src/krakenplug/_version.py" | head -n1)"
tag="${tag:-krakenplug:$version}"
commit="$(git -C "$repo_root" rev-parse HEAD)"  # the label names the checkout's commit
driver="${STORAGE_DRIVER:-overlay}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

need=()
for tool in mmdebstrap:mmdebstrap buildah:buildah podman:podman runc:runc ctr:containerd skopeo:skopeo; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
# Elsewhere (an Ubuntu runner) mmdebstrap needs Debian's archive key to check bookworm.
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} with apt-get (as root)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

buildah_() { as_root buildah --storage-driver "$driver" "$@"; }
podman_() { as_root podman --storage-driver "$driver" --runtime runc --cgroup-manager cgroupfs --events-backend file "$@"; }
run_image() { podman_ run --rm --network none --read-only --cap-drop ALL --security-opt no-new-privileges \
  --ulimit nofile=16384:16384 --ulimit nproc=16384:16384 "$@"; }

# base NAME PACKAGES VARIANT: a Debian bookworm root filesystem as a local image; prints its name.
base() {
  local name="$1" packages="$2" variant="$3"
  local opts=(--variant="$variant" --mode=root --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias'
    --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*'
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*'
    --include="$packages")
  local key; key="$(printf '%s\n' "${opts[@]}" | sha256sum | cut -c1-12)"
  local image="localhost/krakenplug-base:$name-$key"
  if ! podman_ image exists "$image"; then
    log "mmdebstrap $name base ($packages)"
    as_root mmdebstrap --quiet "${opts[@]}" bookworm "$out/base-$name.tar" http://deb.debian.org/debian >"$out/mmdebstrap-$name.log" 2>&1 \
      || fail "mmdebstrap $name failed: $(tail -20 "$out/mmdebstrap-$name.log")"
    local container; container="$(buildah_ from scratch)"
    buildah_ add "$container" "$out/base-$name.tar" / >/dev/null
    buildah_ config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$container"
    buildah_ commit -q "$container" "$image" >/dev/null
    buildah_ rm "$container" >/dev/null
    rm -f "$out/base-$name.tar"
  fi
  echo "$image"
}

start=$(date +%s)
builder_base="$(base builder python3,python3-venv,ca-certificates minbase)"
runtime_base="$(base runtime python3,libstdc++6,ca-certificates,netbase essential)"

log "context: git archive $ref"
context="$out/context"
rm -rf "$context" && mkdir -p "$context"
git -C "$repo_root" archive --format=tar "$ref" | tar -x -C "$context"

cert="${PIP_CERT:-}"
if [ -z "$cert" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then cert=/etc/ssl/certs/ca-certificates.crt; fi
build_args=(--build-arg "PYTHON_IMAGE=$builder_base" --build-arg "RUNTIME_IMAGE=$runtime_base"
  --build-arg "VERSION=$version" --build-arg "GIT_COMMIT=$commit")
if [ -n "$cert" ]; then
  build_args+=(--build-arg "PIP_CERT=/run/host-ca.crt" --volume "$cert:/run/host-ca.crt:ro")
fi
log "buildah bud -t $tag"
buildah_ bud --quiet --isolation chroot --pull=never "${build_args[@]}" -t "$tag" "$context" >"$out/build.log" 2>&1 \
  || fail "buildah bud failed: $(tail -30 "$out/build.log")"
rm -rf "$context"

log "smoke test: --help, --version, devices, demo; read-only root, no capabilities, uid 65532"
help="$(run_image "$tag")" || fail "--help (the default command) exited non-zero"
grep -q "krakenplug" <<<"$help" && grep -q "devices" <<<"$help" || fail "--help does not list the commands: $help"
[ "$(run_image "$tag" --version)" = "krakenplug $version" ] || fail "--version is not krakenplug $version"
[ "$(podman_ image inspect --format '{{.Config.User}}' "$tag")" = "65532:65532" ] || fail "image user is not 65532"
[ "$(run_image --entrypoint python3 "$tag" -c 'import os; print(os.getuid(), os.getgid())')" = "65532 65532" ] \
  || fail "the container does not run as 65532:65532"
run_image --entrypoint python3 "$tag" -c 'import pip' 2>/dev/null && fail "pip is in the final image"
run_image --entrypoint sh "$tag" -c 'touch /probe' 2>/dev/null && fail "the root filesystem is writable"
grep -q "Apache License" <<<"$(run_image --entrypoint cat "$tag" /licenses/LICENSE)" || fail "/licenses/LICENSE missing"
devices="$(run_image "$tag" devices)" || fail "devices exited non-zero"
grep -q "fake-0" <<<"$devices" || fail "devices does not list the embedded fake devices: $devices"
demo="$(run_image "$tag" demo 2>&1)" || fail "demo exited non-zero: $demo"
grep -q "Fault injection" <<<"$demo" || fail "demo output lacks its fault injection step: $demo"

size="$(podman_ image inspect --format '{{.Size}}' "$tag")"
size_mb=$(( size / 1000000 ))
echo "image $tag: $size_mb MB uncompressed ($size bytes), limit $max_mb MB"
[ "$size_mb" -le "$max_mb" ] || fail "image is $size_mb MB, over the $max_mb MB limit"

archive="$out/krakenplug-$version.oci.tar"
rm -f "$archive"
podman_ save --quiet --format oci-archive -o "$archive" "$tag"
log "checking the archive with skopeo and ctr"
skopeo inspect "oci-archive:$archive" >/dev/null || fail "skopeo cannot read $archive"
# A private containerd (own root, state and socket), as a kind node would import the archive.
ctr_dir="$(mktemp -d)"
containerd_pid=""
cleanup() { if [ -n "$containerd_pid" ]; then as_root kill "$containerd_pid" 2>/dev/null || true; fi; as_root rm -rf "$ctr_dir"; }
trap cleanup EXIT
printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\n[grpc]\n  address = "%s/sock"\n' \
  "$ctr_dir" "$ctr_dir" "$ctr_dir" >"$ctr_dir/config.toml"
as_root containerd --config "$ctr_dir/config.toml" >"$ctr_dir/log" 2>&1 &
containerd_pid=$!
for _ in $(seq 50); do [ -S "$ctr_dir/sock" ] && break; sleep 0.2; done
[ -S "$ctr_dir/sock" ] || fail "containerd did not start: $(tail -5 "$ctr_dir/log")"
as_root ctr --address "$ctr_dir/sock" -n k8s.io images import --all-platforms "$archive" >/dev/null \
  || fail "ctr images import rejected $archive"
as_root ctr --address "$ctr_dir/sock" -n k8s.io images ls -q | grep -q "$tag" || fail "ctr did not list $tag"
compressed_mb=$(( $(stat -c %s "$archive") / 1000000 ))
echo "archive $archive: $compressed_mb MB, imported by ctr as $(as_root ctr --address "$ctr_dir/sock" -n k8s.io images ls -q | grep "$tag")"
echo "build-image: done in $(( $(date +%s) - start )) s"
