"""Checks that injecting sidekey left the app alone.

For every workload in BEFORE (the app as its team wrote it) the same workload
(kind and name) in AFTER (rendered with the Component, or `sidekey inject`
output) must have the same pod securityContext, the same init containers and,
in every app container, every field as it was, except:
  - HTTP_PROXY/HTTPS_PROXY (and lowercase) now point at sidekey,
  - NO_PROXY/no_proxy keep every entry they had (sidekey's are added),
  - the CA-bundle variables and the read-only sidekey-trust mount are added.
sidekey's own containers (sidekey, sidekey-ca-bundle) are not the app's.

    check-kubernetes-app.py BEFORE.yaml AFTER.yaml [BEFORE.yaml AFTER.yaml ...]
    check-kubernetes-app.py --self-test BEFORE.yaml AFTER.yaml

Run by scripts/check-kubernetes.sh with the .venv-k8s python (PyYAML).
"""

import copy
import sys

import yaml

OURS = {"sidekey", "sidekey-ca-bundle"}
PROXY_ENV = {"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"}
NO_PROXY_ENV = {"NO_PROXY", "no_proxy"}
CA_ENV = {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE"}
TRUST_MOUNT = "sidekey-trust"
PATHS = {
    "Pod": ["spec"],
    "Deployment": ["spec", "template", "spec"],
    "StatefulSet": ["spec", "template", "spec"],
    "DaemonSet": ["spec", "template", "spec"],
    "ReplicaSet": ["spec", "template", "spec"],
    "Job": ["spec", "template", "spec"],
    "CronJob": ["spec", "jobTemplate", "spec", "template", "spec"],
}


def workloads(docs):
    out = {}
    for d in docs:
        if d.get("kind") == "List":
            out.update(workloads(d.get("items", [])))
        elif d.get("kind") in PATHS:
            spec = d
            for k in PATHS[d["kind"]]:
                spec = (spec or {}).get(k)
            out[(d["kind"], d["metadata"]["name"])] = spec or {}
    return out


def quantities(resources):
    """`cpu: 1` and `cpu: "1"` are the same quantity."""
    return {k: {n: str(q) for n, q in (v or {}).items()} for k, v in (resources or {}).items()}


def compare_container(before, after, err):
    before, after = dict(before), dict(after)
    for c in (before, after):
        if "resources" in c:
            c["resources"] = quantities(c["resources"])
    for key in sorted(set(before) | set(after)):
        if key in ("env", "volumeMounts"):
            continue
        if before.get(key) != after.get(key):
            err(f"{key} changed: {before.get(key)!r} -> {after.get(key)!r}")
    env_b = {e["name"]: e for e in before.get("env", [])}
    env_a = {e["name"]: e for e in after.get("env", [])}
    for name in sorted(set(env_b) | set(env_a)):
        b, a = env_b.get(name), env_a.get(name)
        if name in PROXY_ENV:
            if not a or not (a.get("value") or "").startswith("http://127.0.0.1:"):
                err(f"env {name} should point at sidekey, got {a!r}")
        elif name in NO_PROXY_ENV:
            kept = set(((a or {}).get("value") or "").split(","))
            lost = [h for h in ((b or {}).get("value") or "").split(",") if h and h not in kept]
            if lost:
                err(f"env {name} lost the app's entries {lost}")
        elif name in CA_ENV and b is None:
            continue
        elif b != a:
            err(f"env {name} changed: {b!r} -> {a!r}")
    mounts_b = before.get("volumeMounts", [])
    mounts_a = [m for m in after.get("volumeMounts", []) if m not in mounts_b]
    for m in mounts_a:
        if m.get("name") != TRUST_MOUNT or m.get("readOnly") is not True:
            err(f"volumeMount added that is not sidekey's read-only trust mount: {m!r}")
    for m in mounts_b:
        if m not in after.get("volumeMounts", []):
            err(f"volumeMount {m.get('name')!r} changed or removed")


def compare(before_docs, after_docs, label):
    errors = []
    before, after = workloads(before_docs), workloads(after_docs)
    for key, b in before.items():
        where = f"{label}: {key[0]}/{key[1]}"
        if key not in after:
            errors.append(f"{where}: missing from the output")
            continue
        a = after[key]
        if b.get("securityContext") != a.get("securityContext"):
            errors.append(f"{where}: pod securityContext changed: {b.get('securityContext')!r} -> {a.get('securityContext')!r}")
        inits_a = [c for c in a.get("initContainers", []) if c["name"] not in OURS]
        if b.get("initContainers", []) != inits_a:
            errors.append(f"{where}: the app's init containers changed")
        conts_a = {c["name"]: c for c in a.get("containers", []) if c["name"] not in OURS}
        for c in b.get("containers", []):
            if c["name"] not in conts_a:
                errors.append(f"{where}: container {c['name']} missing")
                continue
            compare_container(c, conts_a[c["name"]], lambda m, n=c["name"]: errors.append(f"{where}: container {n}: {m}"))
    return errors


def load(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]


def self_test(before, after):
    """The comparison must catch each of these overwrites in a good pair."""

    def spec(ds):
        return next(iter(workloads(ds).values()))

    def app(ds):
        return spec(ds)["containers"][-1]

    def env(ds, name):
        return next(e for e in app(ds)["env"] if e["name"] == name)

    mutations = {
        "pod runAsUser replaced": lambda ds: spec(ds).setdefault("securityContext", {}).update(runAsUser=65532),
        "pod fsGroup added": lambda ds: spec(ds).setdefault("securityContext", {}).update(fsGroup=65532),
        "NO_PROXY replaced": lambda ds: env(ds, "NO_PROXY").update(value="localhost,.svc"),
        "app env var dropped": lambda ds: app(ds)["env"].remove(env(ds, "LOG_LEVEL")),
        "app image changed": lambda ds: app(ds).update(image="other"),
        "app securityContext changed": lambda ds: app(ds).update(securityContext={}),
        "secret mounted into the app": lambda ds: app(ds).setdefault("volumeMounts", []).append({"name": "sidekey-ca", "mountPath": "/ca"}),
    }
    if compare(before, after, "self-test"):
        return ["self-test: the unmodified pair should pass: " + "; ".join(compare(before, after, "self-test"))]
    missed = []
    for name, mutate in mutations.items():
        ds = copy.deepcopy(after)
        mutate(ds)
        if not compare(before, ds, "self-test"):
            missed.append(f"self-test: the comparison did not catch: {name}")
    return missed


def main(argv):
    if argv[:1] == ["--self-test"]:
        errors = self_test(load(argv[1]), load(argv[2]))
    else:
        errors = []
        for before, after in zip(argv[::2], argv[1::2]):
            errors += compare(load(before), load(after), before)
    for e in errors:
        print(f"check-kubernetes: FAIL {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
