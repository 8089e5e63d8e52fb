#!/usr/bin/env bash
# Checks deploy/kubernetes and `sidekey inject` offline: renders each overlay
# with kustomize (which also builds the sidecar Components) and each fixture in
# tests/fixtures/kube with `sidekey inject`, validates every object against the
# Kubernetes 1.29 API schema (the first release with native sidecars on by
# default), checks sidekey's wiring (scripts/check-kubernetes-wiring.py) and
# that the app's containers and pod securityContext are as the app wrote them
# (scripts/check-kubernetes-app.py, before against after).
# Tools come from scripts/install-test-deps.sh; a missing one is a failure.
# The sidekey binary: $SIDEKEY_BIN (tests/deploy.rs sets it), else
# target/debug/sidekey (cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-k8s
k8s_version=1.29.0
deploy=deploy/kubernetes
placeholders=($deploy/example/secrets.placeholder.yaml $deploy/shared-store/secrets.placeholder.yaml $deploy/keycloak/secrets.placeholder.yaml)
fixtures=tests/fixtures/kube
sidekey=${SIDEKEY_BIN:-target/debug/sidekey}
# Each overlay's app as its team wrote it: the "before" of the app comparison.
declare -A app_of=([example]=$deploy/example/deployment.yaml [classic]=$deploy/example/deployment.yaml
    [shared-store]=$deploy/example/deployment.yaml [keycloak]=$deploy/keycloak/app.yaml)

fail() {
    echo "check-kubernetes: FAIL $*" >&2
    exit 1
}

[ -x "$sidekey" ] || fail "no sidekey binary at $sidekey: run cargo build or set SIDEKEY_BIN"
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
compare=()
for overlay in example:native classic:classic shared-store:native keycloak:native; do
    dir=${overlay%%:*}
    mode=${overlay##*:}
    "$kubectl" kustomize "$deploy/$dir" >"$out/$dir.yaml" || fail "kubectl kustomize $deploy/$dir"
    "$venv/bin/kubernetes-validate" --kubernetes-version "$k8s_version" --strict --quiet "$out/$dir.yaml" ||
        fail "$deploy/$dir does not validate against Kubernetes $k8s_version (rendered: kubectl kustomize $deploy/$dir)"
    args+=("$mode" "$out/$dir.yaml")
    compare+=("${app_of[$dir]}" "$out/$dir.yaml")
done
# The injector: not a workload with sidekey in it, so only validated (the
# cert-manager kinds have no schema here: warned about, not validated) and
# checked for what keeps pods starting when it is down.
"$kubectl" kustomize "$deploy/injector" >"$out/injector.yaml" || fail "kubectl kustomize $deploy/injector"
"$venv/bin/kubernetes-validate" --kubernetes-version "$k8s_version" --strict --quiet "$out/injector.yaml" ||
    fail "$deploy/injector does not validate against Kubernetes $k8s_version"
"$venv/bin/python" -c 'import sys, yaml
docs = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
hook = docs["MutatingWebhookConfiguration"]
w = hook["webhooks"][0]
want = [
    (w["failurePolicy"] == "Ignore", "failurePolicy: Ignore"),
    (w["reinvocationPolicy"] == "IfNeeded", "reinvocationPolicy: IfNeeded"),
    ("namespaceSelector" in w, "a namespaceSelector"),
    (w["clientConfig"]["service"]["path"] == "/mutate", "path /mutate"),
    ("cert-manager.io/inject-ca-from" in hook["metadata"].get("annotations", {}), "the cainjector annotation"),
    (docs["Deployment"]["spec"]["replicas"] >= 2, "2 replicas"),
    ("PodDisruptionBudget" in docs, "a PodDisruptionBudget"),
]
missing = [what for ok, what in want if not ok]
sys.exit("injector lacks: " + ", ".join(missing) if missing else 0)' "$out/injector.yaml" || fail "$deploy/injector"
# kubernetes-validate has no schema for List: its items are validated one by one.
flatten() {
    "$venv/bin/python" -c 'import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
items = [i for d in docs for i in (d["items"] if d.get("kind") == "List" else [d])]
yaml.safe_dump_all(items, sys.stdout)' "$1"
}
for fixture in "$fixtures"/*.yaml; do
    name=$(basename "$fixture" .yaml)
    "$sidekey" inject -f "$fixture" --log-format json >"$out/inject-$name.yaml" 2>"$out/inject-$name.log" ||
        fail "sidekey inject -f $fixture: $(cat "$out/inject-$name.log")"
    flatten "$out/inject-$name.yaml" >"$out/inject-$name.flat.yaml"
    "$venv/bin/kubernetes-validate" --kubernetes-version "$k8s_version" --strict --quiet "$out/inject-$name.flat.yaml" ||
        fail "sidekey inject -f $fixture does not validate against Kubernetes $k8s_version"
    compare+=("$fixture" "$out/inject-$name.yaml")
done
for p in "${placeholders[@]}"; do
    "$venv/bin/kubernetes-validate" --kubernetes-version "$k8s_version" --strict --quiet "$p" ||
        fail "$p does not validate"
done

wiring=(scripts/check-kubernetes-wiring.py)
for p in "${placeholders[@]}"; do wiring+=(--placeholders "$p"); done
"$venv/bin/python" "${wiring[@]}" --self-test "$out/example.yaml" || fail "the wiring checker's self-test"
"$venv/bin/python" "${wiring[@]}" "${args[@]}" || fail "sidekey wiring (see above)"
app=scripts/check-kubernetes-app.py
"$venv/bin/python" "$app" "${compare[@]}" || fail "an app field was changed (see above)"
"$venv/bin/python" "$app" --self-test "$fixtures/own-settings.yaml" "$out/inject-own-settings.yaml" ||
    fail "the app comparison's self-test"

echo "check-kubernetes: ok: $deploy/example, classic, shared-store, keycloak and injector render and every $fixtures fixture injects, validate against Kubernetes $k8s_version (strict), wire sidekey correctly and leave the app alone ($("$kubectl" version --client | grep Kustomize), kubernetes-validate $("$venv/bin/kubernetes-validate" --version))"
