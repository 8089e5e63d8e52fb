#!/usr/bin/env bash
# Checks deploy/kubernetes offline: renders each overlay with kustomize (which
# also builds the sidecar Component), validates every object against the
# Kubernetes 1.29 API schema (the first release with native sidecars on by
# default), then checks sidekey's wiring (scripts/check-kubernetes-wiring.py).
# Tools come from scripts/install-test-deps.sh; a missing one is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-k8s
k8s_version=1.29.0
deploy=deploy/kubernetes
placeholders=($deploy/example/secrets.placeholder.yaml $deploy/shared-store/secrets.placeholder.yaml)

fail() {
    echo "check-kubernetes: FAIL $*" >&2
    exit 1
}

[ -x "$venv/bin/kubernetes-validate" ] ||
    fail "$venv/bin/kubernetes-validate is missing: run scripts/install-test-deps.sh"
# Components and wildcard replacements need kustomize v5. The system's kubectl
# if it has it, else the one install-test-deps.sh put into the venv.
has_kustomize_v5() { "$1" version --client 2>/dev/null | grep -q 'Kustomize Version: v5'; }
kubectl=kubectl
has_kustomize_v5 "$kubectl" || kubectl=$venv/bin/kubectl
has_kustomize_v5 "$kubectl" ||
    fail "no kubectl with kustomize v5 on PATH or in $venv: run scripts/install-test-deps.sh"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

args=()
for overlay in example:native classic:classic shared-store:native; do
    dir=${overlay%%:*}
    mode=${overlay##*:}
    "$kubectl" kustomize "$deploy/$dir" >"$out/$dir.yaml" || fail "kubectl kustomize $deploy/$dir"
    "$venv/bin/kubernetes-validate" --kubernetes-version "$k8s_version" --strict --quiet "$out/$dir.yaml" ||
        fail "$deploy/$dir does not validate against Kubernetes $k8s_version (rendered: kubectl kustomize $deploy/$dir)"
    args+=("$mode" "$out/$dir.yaml")
done
for p in "${placeholders[@]}"; do
    "$venv/bin/kubernetes-validate" --kubernetes-version "$k8s_version" --strict --quiet "$p" ||
        fail "$p does not validate"
done

wiring=(scripts/check-kubernetes-wiring.py)
for p in "${placeholders[@]}"; do wiring+=(--placeholders "$p"); done
"$venv/bin/python" "${wiring[@]}" --self-test "$out/example.yaml" || fail "the wiring checker's self-test"
"$venv/bin/python" "${wiring[@]}" "${args[@]}" || fail "sidekey wiring (see above)"

echo "check-kubernetes: ok: $deploy/example, $deploy/classic and $deploy/shared-store render, validate against Kubernetes $k8s_version (strict) and wire sidekey correctly ($("$kubectl" version --client | grep Kustomize), kubernetes-validate $("$venv/bin/kubernetes-validate" --version))"
