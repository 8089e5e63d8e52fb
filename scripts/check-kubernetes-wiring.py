"""Checks how sidekey is wired into rendered Kubernetes manifests.

kubernetes-validate checks each object against the API schema; this checks
what the schema cannot: that sidekey's --config resolves to a mounted
ConfigMap key, every file proxy.toml names is mounted, probes hit the admin
port, every app container gets the proxy (and with [tls] the CA-trust) env,
Secrets are readable by the non-root user without a pod fsGroup, ca.key never
reaches an app container, and the memory limit holds max_connections.
Every workload kind with a pod template is checked.

    check-kubernetes-wiring.py [--placeholders SECRETS.yaml ...] native|classic RENDERED.yaml ...
    check-kubernetes-wiring.py [--placeholders SECRETS.yaml ...] --self-test RENDERED_NATIVE.yaml

--placeholders (repeatable) names files of placeholder Secrets: with them the
checker also knows which keys each Secret holds.

Run by scripts/check-kubernetes.sh with the .venv-k8s python (PyYAML).
"""

import copy
import os.path
import re
import sys
import tomllib

import yaml

SIDEKEY = "sidekey"  # the proxy container
BUNDLE = "sidekey-ca-bundle"  # the init container writing the CA bundle
UID = 65532  # distroless nonroot, USER in deploy/Dockerfile
TRUST_ENV = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE"]
NO_PROXY_MUST = ["localhost", "127.0.0.1", "::1", ".svc", ".cluster.local", "kubernetes.default.svc"]
DEFAULT_DRAIN_S = 30  # [proxy] drain_timeout default (SPEC.md)
DEFAULT_MAX_CONNECTIONS = 10000  # [proxy] max_connections default
CONN_KIB = 12.0  # measured per idle client connection (bench/README.md)
BASE_MIB = 16  # sidekey's resident baseline, rounded up
PATHS = {
    "Deployment": ["spec", "template"],
    "StatefulSet": ["spec", "template"],
    "DaemonSet": ["spec", "template"],
    "ReplicaSet": ["spec", "template"],
    "Job": ["spec", "template"],
    "CronJob": ["spec", "jobTemplate", "spec", "template"],
}


def pod_spec(obj):
    t = obj
    for k in PATHS[obj["kind"]]:
        t = t[k]
    return t["spec"]


def mebibytes(q):
    m = re.fullmatch(r"(\d+)(Mi|Gi)", str(q))
    if not m:
        raise ValueError(f"cannot read memory quantity {q!r}")
    return int(m[1]) * (1024 if m[2] == "Gi" else 1)


def seconds(d):
    m = re.fullmatch(r"(\d+)(ms|s|m)", d or "0s")
    if not m:
        raise ValueError(f"cannot read duration {d!r}")
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60}[m[2]]


def mount_for(container, volumes, path):
    """The (mount, volume, relative path) that serves `path` in `container`."""
    best = None
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if path.startswith(mp + "/") and (best is None or len(mp) > len(best[0]["mountPath"])):
            best = (m, volumes.get(m["name"]), path[len(mp) + 1 :])
    return best


def volume_keys(volume, secrets, configmaps):
    """Files a Secret/ConfigMap volume holds, or None when unknown."""
    for kind, ref, objs in (("secret", "secretName", secrets), ("configMap", "name", configmaps)):
        if kind in volume:
            src = volume[kind]
            if src.get("items"):
                return {i["path"]: i["key"] for i in src["items"]}
            data = objs.get(src[ref])
            return None if data is None else {k: k for k in data}
    return None


def check_workload(mode, dep, configmaps, secrets, err):
    spec = pod_spec(dep)
    inits, conts = spec.get("initContainers", []), spec["containers"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    names = [c["name"] for c in inits + conts]
    if names.count(SIDEKEY) != 1:
        return err(f"expected exactly one container {SIDEKEY!r}, found {names.count(SIDEKEY)}")
    if names.count(BUNDLE) > 1:
        return err(f"expected at most one container {BUNDLE!r}")
    sk = next(c for c in inits + conts if c["name"] == SIDEKEY)
    bundle = next((c for c in inits + conts if c["name"] == BUNDLE), None)
    apps = [c for c in conts if c["name"] != SIDEKEY]
    if not apps:
        err("no app container")
    if bundle is not None and (bundle not in inits or bundle.get("restartPolicy")):
        err(f"{BUNDLE} must be a plain init container (it runs to completion before the app)")

    # Where sidekey sits in the pod.
    if mode == "native":
        if sk not in inits or sk.get("restartPolicy") != "Always":
            err("native: sidekey must be an init container with restartPolicy: Always")
        if not sk.get("startupProbe"):
            err("native: sidekey needs a startupProbe, or app containers start before it is ready")
    else:
        if sk not in conts or "restartPolicy" in sk:
            err("classic: sidekey must be a regular container without restartPolicy")

    # --config resolves to a mounted ConfigMap key (a directory mount, so
    # kubelet's ..data swaps reach sidekey; subPath mounts never update).
    args = sk.get("args", [])
    if args[:1] != ["run"] or "--config" not in args:
        return err(f"sidekey args should be run --config PATH, got {args}")
    config_path = args[args.index("--config") + 1]
    found = mount_for(sk, volumes, config_path)
    if not found or "configMap" not in (found[1] or {}):
        return err(f"--config {config_path} is not in a ConfigMap volume mounted into sidekey")
    m, vol, rel = found
    if m.get("subPath"):
        err(f"the config mount {m['mountPath']} uses subPath: ConfigMap edits would never reach sidekey")
    cm_name = vol["configMap"]["name"]
    if cm_name not in configmaps:
        return err(f"ConfigMap {cm_name} (for --config {config_path}) is not in the rendered output")
    keys = volume_keys(vol, secrets, configmaps)
    if rel not in keys:
        return err(f"ConfigMap {cm_name} has no key {rel!r} (keys: {sorted(keys)})")
    cfg = tomllib.loads(configmaps[cm_name][keys[rel]])
    proxy = cfg.get("proxy", {})
    tls = "ca_cert" in cfg.get("tls", {})
    if tls and bundle is None:
        return err(f"proxy.toml has [tls] ca_cert: the app needs the {BUNDLE} step (include sidecar-tls)")
    if not tls and bundle is not None:
        err(f"proxy.toml has no [tls] ca_cert: {BUNDLE} has no CA to add (leave sidecar-tls out)")
    if bundle is not None:
        # `ca bundle --ca-cert`: the step reads the certificate alone, never the config or a secret.
        args = bundle.get("args", [])
        if "--config" in args or "--ca-cert" not in args:
            err(f"{BUNDLE} must use --ca-cert (no config, no secret), got {args}")
        else:
            cert = args[args.index("--ca-cert") + 1]
            found = mount_for(bundle, volumes, cert)
            files = volume_keys(found[1], secrets, configmaps) if found and found[1] else None
            if not found or found[1] is None or "secret" not in found[1]:
                err(f"{BUNDLE}: --ca-cert {cert} is not on a mounted Secret volume")
            elif files is None or sorted(files.values()) != ["ca.crt"]:
                err(f"{BUNDLE}: the volume with {cert} must hold ca.crt only (items), not {files}")

    # Every file the config names is mounted into sidekey.
    paths = [p for k, p in cfg.get("tls", {}).items() if k in ("ca_cert", "ca_key")]
    paths += cfg.get("tls", {}).get("extra_roots", [])
    paths += re.findall(r"<<file:([^>]+)>>", configmaps[cm_name][keys[rel]])
    ca_secrets = set()
    for c in (sk,):
        for p in paths:
            found = mount_for(c, volumes, p)
            if not found or found[1] is None:
                err(f"{c['name']}: {p} (named in proxy.toml) is not on any mounted volume")
                continue
            files = volume_keys(found[1], secrets, configmaps)
            if files is not None and found[2] not in files:
                err(f"{c['name']}: {p}: volume {found[0]['name']} has no file {found[2]!r} (has {sorted(files)})")
            if p == cfg.get("tls", {}).get("ca_key") and "secret" in found[1]:
                ca_secrets.add(found[1]["secret"]["secretName"])
            if "secret" not in found[1] and "configMap" not in found[1]:
                err(f"{c['name']}: {p} should come from a Secret volume")

    # Admin port: probes and Prometheus reach it from outside the pod.
    admin = proxy.get("admin", "127.0.0.1:9901")
    host, _, port = admin.rpartition(":")
    if host not in ("0.0.0.0", "[::]"):
        err(f"proxy.toml admin = {admin!r}: kubelet probes cannot reach a loopback admin port")
    ports = {p.get("name"): p["containerPort"] for p in sk.get("ports", [])}
    if str(ports.get("admin")) != port:
        err(f"sidekey port 'admin' is {ports.get('admin')}, proxy.toml admin port is {port}")
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        got = sk.get(probe)
        if got is None:
            if probe != "startupProbe":
                err(f"sidekey has no {probe}")
            continue
        http = got.get("httpGet", {})
        if http.get("path") != path or http.get("port") not in ("admin", ports.get("admin")):
            err(f"sidekey {probe} should be GET {path} on the admin port, got {http}")

    # Classic shutdown: the grace period outlasts shutdown_delay + drain.
    if mode == "classic":
        if "shutdown_delay" not in proxy:
            err("classic: proxy.toml needs [proxy] shutdown_delay")
        need = seconds(proxy.get("shutdown_delay")) + seconds(proxy.get("drain_timeout", f"{DEFAULT_DRAIN_S}s"))
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace <= need:
            err(f"classic: terminationGracePeriodSeconds {grace} must exceed shutdown_delay + drain_timeout = {need}s")

    # Security: sidekey's containers carry their own; the pod's is the app's.
    psc = spec.get("securityContext", {})
    for c in [x for x in (sk, bundle) if x is not None]:
        sc = c.get("securityContext", {})
        if sc.get("runAsNonRoot") is not True or sc.get("runAsUser") != UID or sc.get("runAsGroup") != UID:
            err(f"{c['name']}: securityContext must set runAsNonRoot and runAsUser/runAsGroup {UID} itself")
        if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            err(f"{c['name']}: securityContext.seccompProfile.type should be RuntimeDefault")
        if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
            err(f"{c['name']}: needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            err(f"{c['name']}: capabilities.drop must include ALL")
        if sc.get("runAsUser", UID) != UID or sc.get("runAsGroup", UID) != UID:
            err(f"{c['name']}: must run as {UID}:{UID} (the image's user)")
        res = c.get("resources", {})
        if not (res.get("requests", {}).get("memory") and res.get("limits", {}).get("memory")):
            err(f"{c['name']}: needs memory requests and limits")
        if any(e["name"].lower() in ("http_proxy", "https_proxy") for e in c.get("env", [])):
            err(f"{c['name']}: sidekey containers must not get the app's proxy env")

    # Memory: every idle client connection costs CONN_KIB.
    limit = sk.get("resources", {}).get("limits", {}).get("memory")
    if limit:
        max_conn = proxy.get("max_connections", DEFAULT_MAX_CONNECTIONS)
        need = BASE_MIB + max_conn * CONN_KIB / 1024
        if mebibytes(limit) < need:
            err(f"sidekey memory limit {limit} < {need:.0f}Mi needed for max_connections = {max_conn} ({CONN_KIB} KiB each): lower max_connections or raise the limit")

    # Secret files are root-owned: without a pod fsGroup sidekey (65532)
    # reads them as "other" (0444); with the app's fsGroup, 0440 works too.
    mounted_by_sidekey = {m["name"] for c in (sk, bundle) if c for m in c.get("volumeMounts", [])}
    for v in volumes.values():
        if v["name"] not in mounted_by_sidekey:
            continue
        srcs = [v["secret"]] if "secret" in v else [s["secret"] for s in v.get("projected", {}).get("sources", []) if "secret" in s]
        for s in srcs:
            modes = [s.get("defaultMode", v.get("projected", {}).get("defaultMode", 0o644))]
            modes += [i["mode"] for i in s.get("items", []) if "mode" in i]
            for mode_ in modes:
                ok = (0o444,) if "fsGroup" not in psc else (0o440, 0o444)
                if mode_ not in ok:
                    err(f"volume {v['name']}: mode {oct(mode_)}: sidekey ({UID}) cannot read it without the pod's fsGroup; use 0444")

    # App containers: proxy env, CA-trust env and a read-only trust mount.
    want_proxy = "http://" + proxy.get("listen", "127.0.0.1:3128")
    bundle_args = bundle.get("args", []) if bundle else []
    out = bundle_args[bundle_args.index("--out") + 1] if "--out" in bundle_args else None
    if bundle is not None and out is None:
        err(f"{BUNDLE}: args need --out FILE")
    others = apps + [c for c in inits if c["name"] not in (SIDEKEY, BUNDLE)]
    for c in apps:
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        where = f"app container {c['name']}"
        for k in ("HTTP_PROXY", "HTTPS_PROXY"):
            if env.get(k) != want_proxy:
                err(f"{where}: {k} should be {want_proxy}, got {env.get(k)}")
        no_proxy = (env.get("NO_PROXY") or "").split(",")
        missing = [h for h in NO_PROXY_MUST if h not in no_proxy]
        if missing:
            err(f"{where}: NO_PROXY lacks {missing}")
        for k in TRUST_ENV if bundle else []:
            if env.get(k) != out:
                err(f"{where}: {k} should be the CA bundle {out}, got {env.get(k)}")
        if bundle and out:
            found = mount_for(c, volumes, out)
            wrote = mount_for(bundle, volumes, out)
            if not found or not wrote or found[0]["name"] != wrote[0]["name"] or "emptyDir" not in (found[1] or {}):
                err(f"{where}: {out} is not on the emptyDir that {BUNDLE} writes")
            elif found[0].get("readOnly") is not True:
                err(f"{where}: the trust volume must be mounted readOnly: true")
    for c in others:
        for m in c.get("volumeMounts", []):
            v = volumes.get(m["name"], {})
            refs = [v["secret"]] if "secret" in v else [s["secret"] for s in v.get("projected", {}).get("sources", []) if "secret" in s]
            for s in refs:
                items = [i["key"] for i in s.get("items", [])] or None
                if s["secretName"] in ca_secrets and (items is None or "ca.key" in items):
                    err(f"container {c['name']} mounts Secret {s['secretName']} with ca.key: only sidekey may see the CA key")


def check(mode, docs, secrets, label):
    errors = []
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    deps = [d for d in docs if d["kind"] in PATHS]
    if not deps:
        errors.append(f"{label}: no workload rendered")
    for dep in deps:
        prefix = f"{label}: {dep['kind'].lower()}/{dep['metadata']['name']}: "
        check_workload(mode, dep, configmaps, secrets, lambda msg: errors.append(prefix + msg))
    return errors


def load_secrets(path):
    if not path:
        return {}
    out = {}
    for d in yaml.safe_load_all(open(path)):
        if d and d["kind"] == "Secret":
            out[d["metadata"]["name"]] = {**d.get("data", {}), **d.get("stringData", {})}
    return out


def self_test(docs, secrets):
    """The checker must catch each of these mistakes in a good render."""

    def pod(ds):
        return next(d for d in ds if d["kind"] == "Deployment")["spec"]["template"]["spec"]

    def ctr(ds, name):
        return next(c for c in pod(ds)["initContainers"] + pod(ds)["containers"] if c["name"] == name)

    def app2(ds):
        return pod(ds)["containers"][1]

    mutations = {
        "second app container without HTTP_PROXY": lambda ds: app2(ds)["env"].pop(0),
        "second app container without SSL_CERT_FILE": lambda ds: app2(ds).update(env=[e for e in app2(ds)["env"] if e["name"] != "SSL_CERT_FILE"]),
        "Secret mode 0400": lambda ds: next(v for v in pod(ds)["volumes"] if "secret" in v)["secret"].update(defaultMode=0o400),
        "Secret mode 0440 without fsGroup": lambda ds: next(v for v in pod(ds)["volumes"] if "secret" in v)["secret"].update(defaultMode=0o440),
        "bundle step reads the config": lambda ds: ctr(ds, BUNDLE)["args"].extend(["--config", "/etc/sidekey/proxy.toml"]),
        "bundle step sees ca.key": lambda ds: next(v for v in pod(ds)["volumes"] if v["name"] == "sidekey-ca-cert")["secret"].pop("items"),
        "memory limit below max_connections": lambda ds: ctr(ds, SIDEKEY)["resources"]["limits"].update(memory="32Mi"),
        "sidekey not a native sidecar": lambda ds: ctr(ds, SIDEKEY).pop("restartPolicy"),
        "startupProbe on the wrong path": lambda ds: ctr(ds, SIDEKEY)["startupProbe"]["httpGet"].update(path="/healthz"),
        "config mounted elsewhere": lambda ds: next(m for m in ctr(ds, SIDEKEY)["volumeMounts"] if m["mountPath"] == "/etc/sidekey").update(mountPath="/config"),
        "ca.key mounted into an app": lambda ds: app2(ds)["volumeMounts"].append({"name": "sidekey-ca", "mountPath": "/ca"}),
        "writable trust mount": lambda ds: app2(ds)["volumeMounts"][-1].pop("readOnly"),
        "privilege escalation": lambda ds: ctr(ds, SIDEKEY)["securityContext"].update(allowPrivilegeEscalation=True),
    }
    if check("native", docs, secrets, "self-test"):
        return ["self-test: the unmodified render should pass"]
    missed = []
    for name, mutate in mutations.items():
        ds = copy.deepcopy(docs)
        mutate(ds)
        if not check("native", ds, secrets, "self-test"):
            missed.append(f"self-test: the checker did not catch: {name}")
    return missed


def main(argv):
    secrets = {}
    while "--placeholders" in argv:
        i = argv.index("--placeholders")
        secrets.update(load_secrets(argv[i + 1]))
        del argv[i : i + 2]
    if argv[:1] == ["--self-test"]:
        errors = self_test([d for d in yaml.safe_load_all(open(argv[1])) if d], secrets)
    else:
        errors = []
        for mode, path in zip(argv[::2], argv[1::2]):
            if mode not in ("native", "classic"):
                sys.exit(f"usage: {__doc__}")
            docs = [d for d in yaml.safe_load_all(open(path)) if d]
            errors += check(mode, docs, secrets, os.path.basename(path))
    for e in errors:
        print(f"check-kubernetes: FAIL {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
