# Functions shared by the ci/ scripts. Source it: . "$(dirname "$0")/lib.sh"

# install_npm_tool NAME SPEC MARKER
# Installs the npm package SPEC (name@version) into ${TOOLS_DIR:-<repo>/.tools}/NAME, a private prefix
# (the global npm setup is untouched), from the npm registry only, without running package scripts, and
# prints that directory. Idempotent: when MARKER (a path under node_modules/) is there, it says so and
# installs nothing.
install_npm_tool() {
  local name="$1" spec="$2" marker="$3" script repo_root dest
  script="$(basename "$0" .sh)"
  repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  dest="${TOOLS_DIR:-$repo_root/.tools}/$name"
  if [ -f "$dest/node_modules/$marker" ]; then
    echo "$script: already present in $dest" >&2
    return 0
  fi
  command -v npm >/dev/null || { echo "$script: npm not found" >&2; return 1; }
  mkdir -p "$dest"
  npm install --prefix "$dest" --no-save --no-audit --no-fund --ignore-scripts --loglevel=error "$spec" >&2
  echo "$dest"
}
