#!/usr/bin/env bash
# Installs what the integration tests need beyond cargo: oidc-provider (npm),
# into tests/oidc/node_modules, exactly as pinned by tests/oidc/package-lock.json.
# Idempotent: does nothing when node_modules is already there and newer than
# the lockfile. Needs node >= 18.12 and npm on PATH, and the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=tests/oidc
lock=$dir/package-lock.json
# npm ci writes this file last; its mtime says when node_modules was installed.
stamp=$dir/node_modules/.package-lock.json

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install-test-deps: '$tool' not found on PATH; the OIDC interop tests need Node.js >= 18.12 and npm" >&2
        exit 1
    fi
done

if [ -f "$stamp" ] && [ -d "$dir/node_modules/oidc-provider" ] && ! [ "$lock" -nt "$stamp" ]; then
    echo "install-test-deps: $dir/node_modules is up to date with $lock (node $(node --version))"
    exit 0
fi

if [ -d "$dir/node_modules" ]; then
    echo "install-test-deps: $lock is newer than $dir/node_modules; reinstalling"
else
    echo "install-test-deps: $dir/node_modules is missing; installing"
fi
echo "install-test-deps: npm ci --prefix $dir --no-audit --no-fund   (node $(node --version), npm $(npm --version))"
npm ci --prefix "$dir" --no-audit --no-fund
# npm ci may keep the lockfile's own mtime order ambiguous on coarse clocks.
touch "$stamp"
echo "install-test-deps: installed oidc-provider $(node -p "require('./$dir/node_modules/oidc-provider/package.json').version")"
