//! deploy/kubernetes: the manifests, rendered and checked offline by
//! scripts/check-kubernetes.sh, and the files they hand sidekey, laid out as
//! kubelet lays them out and read by the real binary as the image's uid.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{chown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The image's user and group (distroless nonroot), set by sidekey's own containers.
const UID: u32 = 65532;
/// kubelet's AtomicWriter puts each version of a volume's files in a folder
/// named like this, behind the `..data` symlink it swaps on updates.
const PAYLOAD: &str = "..2026_12_06_10_00_00.123456789";

/// The manifests render, validate against the Kubernetes API schema and wire
/// sidekey correctly. kubectl and .venv-k8s come from
/// scripts/install-test-deps.sh (scripts/test.sh runs it first), so a missing
/// tool fails this test rather than skipping it.
#[test]
fn kubernetes_manifests_render_validate_and_wire_sidekey() {
    let out = Command::new("bash")
        .arg(Path::new(REPO).join("scripts/check-kubernetes.sh"))
        .env("SIDEKEY_BIN", env!("CARGO_BIN_EXE_sidekey"))
        .output()
        .expect("run bash scripts/check-kubernetes.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "scripts/check-kubernetes.sh failed (kubectl or .venv-k8s missing? run scripts/install-test-deps.sh):\n{text}"
    );
    eprintln!("{text}");
}

/// The check fails when an app field is overwritten: an injector that also
/// sets the pod's runAsUser (what the Component used to do) makes
/// scripts/check-kubernetes.sh fail, naming the workload and the field.
#[test]
fn kubernetes_check_fails_when_an_app_field_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    // A sidekey whose inject overwrites the app's runAsUser 1000 and NO_PROXY.
    let fake = dir.path().join("sidekey");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\n\"{}\" \"$@\" | sed -e 's/runAsUser: 1000/runAsUser: 65532/' -e 's/value: \".corp.example,10.0.0.0\\/8,/value: \"/'\n",
            env!("CARGO_BIN_EXE_sidekey")
        ),
    )
    .unwrap();
    set_mode(&fake, 0o755);
    let out = Command::new("bash")
        .arg(Path::new(REPO).join("scripts/check-kubernetes.sh"))
        .env("SIDEKEY_BIN", &fake)
        .output()
        .expect("run bash scripts/check-kubernetes.sh");
    let text = all(&out);
    assert!(
        !out.status.success(),
        "the check passed an overwritten app field:\n{text}"
    );
    assert!(
        text.contains("Deployment/billing: pod securityContext changed"),
        "should name the workload and the field:\n{text}"
    );
    assert!(
        text.contains("env NO_PROXY lost the app's entries"),
        "{text}"
    );
    assert!(text.contains("FAIL an app field was changed"), "{text}");
}

/// `ca bundle --ca-cert`: the init step's command needs the CA certificate and
/// nothing else (no config exists in its working directory); a missing file
/// is an error naming the flag.
#[test]
fn ca_bundle_needs_only_the_ca_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let gen = Command::new(env!("CARGO_BIN_EXE_sidekey"))
        .args(["ca", "generate", "--out", "ca"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", all(&gen));
    let bundle = |cert: &str| {
        Command::new(env!("CARGO_BIN_EXE_sidekey"))
            .args([
                "ca",
                "bundle",
                "--out",
                "trust/bundle.pem",
                "--ca-cert",
                cert,
            ])
            .current_dir(dir.path())
            .env_remove("SIDEKEY_CONFIG")
            .output()
            .unwrap()
    };
    let out = bundle("ca/ca.crt");
    assert!(out.status.success(), "{}", all(&out));
    let pem = fs::read_to_string(dir.path().join("trust/bundle.pem")).unwrap();
    let ca = fs::read_to_string(dir.path().join("ca/ca.crt")).unwrap();
    assert!(pem.contains(ca.trim()) && !pem.contains("PRIVATE KEY"));

    let out = bundle("ca/missing.crt");
    assert!(!out.status.success());
    assert!(
        all(&out).contains("--ca-cert: cannot read ca/missing.crt"),
        "{}",
        all(&out)
    );
}

/// The example's proxy.toml, with the Secrets mounted as kubelet mounts them
/// with `defaultMode: 0444` and no pod fsGroup (files root:root, mode 0444):
/// sidekey running as 65532 without supplementary groups checks it, writes
/// the CA bundle from ca.crt alone, reads the client secrets for real (a
/// token fetch), starts, turns ready and stops on SIGTERM.
#[test]
fn example_config_runs_as_nonroot_on_kubelet_secret_layout() {
    if !running_as_root() {
        eprintln!("skipped: needs root to lay files out as root:root and to run sidekey as uid {UID} (CI runs as root)");
        return;
    }
    let token = TokenEndpoint::start();
    let pod = Pod::new("example/proxy.toml", 0o444, 0, &token);

    let check = pod
        .sidekey(&["check", "--config", &pod.config()])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&check).trim(),
        "ok",
        "sidekey check as {UID}:\n{}",
        all(&check)
    );

    // The sidekey-ca-bundle init step, into an emptyDir (kubelet makes it
    // 0777): system roots plus the CA certificate, readable by app containers.
    // As deployed: --ca-cert only, no config and no secret but the certificate.
    let trust = pod.dir.path().join("trust");
    fs::create_dir(&trust).unwrap();
    set_mode(&trust, 0o777);
    let bundle = trust.join("ca-bundle.pem").display().to_string();
    let out = pod
        .sidekey(&[
            "ca",
            "bundle",
            "--out",
            &bundle,
            "--ca-cert",
            &pod.dir.path().join("ca/ca.crt").display().to_string(),
            "--log-format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sidekey ca bundle as {UID}:\n{}",
        all(&out)
    );
    let pem = fs::read_to_string(&bundle).unwrap();
    let ca = fs::read_to_string(pod.dir.path().join("generated/ca.crt")).unwrap();
    assert!(
        pem.contains(ca.trim()),
        "the bundle lacks sidekey's CA certificate"
    );
    assert!(
        pem.matches("BEGIN CERTIFICATE").count() > 1,
        "the bundle lacks the system roots"
    );
    assert!(
        !pem.contains("PRIVATE KEY"),
        "the bundle must never hold a key"
    );
    assert_eq!(
        fs::metadata(&bundle).unwrap().mode() & 0o004,
        0o004,
        "app containers may run as another uid: the bundle must be world-readable"
    );

    // `token` reads client_id/client_secret through the <<file:...>> links.
    for org in ["org-a", "org-b"] {
        let client = format!("capillary_{}", org.replace('-', "_"));
        let out = pod
            .sidekey(&["token", &client, "--config", &pod.config()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sidekey token {client} as {UID}:\n{}",
            all(&out)
        );
        let bodies = token.bodies.lock().unwrap().join("\n");
        let sent = format!(r#""key":"{org}-key","secret":"{org}-secret""#);
        assert!(
            bodies.contains(&sent),
            "token endpoint never got {sent}: {bodies}"
        );
    }

    let mut run = Running::start(&pod);
    run.wait_ready();
    run.stop();
}

/// The same files at 0400 root:root (`defaultMode: 0400`, no fsGroup): the
/// 0444 mode is what makes the layout above work.
#[test]
fn secrets_unreadable_without_fsgroup_fail_with_a_clear_error() {
    if !running_as_root() {
        eprintln!("skipped: needs root to lay files out as root:root and to run sidekey as uid {UID} (CI runs as root)");
        return;
    }
    let token = TokenEndpoint::start();
    let pod = Pod::new("example/proxy.toml", 0o400, 0, &token);

    let check = pod
        .sidekey(&["check", "--config", &pod.config()])
        .output()
        .unwrap();
    let text = all(&check);
    assert!(
        !check.status.success(),
        "check should fail on 0400 root:root files:\n{text}"
    );
    assert!(
        text.contains("Permission denied") && text.contains("secrets/org-a/secret"),
        "check should name the unreadable file:\n{text}"
    );
    assert!(
        !text.contains("is not defined"),
        "no follow-on errors for clients that failed on their own:\n{text}"
    );

    let run = pod.sidekey(&["run", "--config", &pod.config(), "--log-format", "json"]);
    let out = wait_output(run, Duration::from_secs(20));
    assert!(
        !out.status.success(),
        "run should refuse to start:\n{}",
        all(&out)
    );
    assert!(
        all(&out).contains("Permission denied"),
        "run should say why:\n{}",
        all(&out)
    );
}

/// The keycloak overlay's config (no [tls]; its client secret from the
/// Secret keycloak-client) is valid too.
#[test]
fn keycloak_config_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("keycloak");
    fs::create_dir(&secrets).unwrap();
    fs::write(secrets.join("client-secret"), "s3cret\n").unwrap();
    let text =
        fs::read_to_string(Path::new(REPO).join("deploy/kubernetes/keycloak/proxy.toml")).unwrap();
    let mounted = format!("{}/", secrets.display());
    let text = rewrite(&text, &[("/var/run/secrets/sidekey/keycloak/", &mounted)]);
    let config = dir.path().join("proxy.toml");
    fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sidekey"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out).trim(),
        "ok",
        "deploy/kubernetes/keycloak/proxy.toml:\n{}",
        all(&out)
    );
}

/// The classic overlay's config (with [proxy] shutdown_delay) is valid too.
#[test]
fn classic_config_passes_check() {
    let token = TokenEndpoint::start();
    let gid = if running_as_root() {
        0
    } else {
        fs::metadata("/proc/self").unwrap().gid()
    };
    let pod = Pod::new("classic/proxy.toml", 0o444, gid, &token);
    let out = Command::new(&pod.bin)
        .args(["check", "--config", &pod.config()])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out).trim(),
        "ok",
        "deploy/kubernetes/classic/proxy.toml:\n{}",
        all(&out)
    );
}

/// The shared-store overlay's config ([store] on Redis/Valkey; its password
/// and encryption key from the Secret sidekey-store, laid out like the other
/// Secrets) is valid too. `check` does not open the store's files; `run` does
/// when it builds the store: as the pod's uid it reads them at 0444
/// root:root and turns ready while Redis is unreachable (sidekey then fetches
/// on its own), and without them it refuses to start and names the file.
#[test]
fn shared_store_config_passes_check() {
    let token = TokenEndpoint::start();
    let gid = if running_as_root() {
        0
    } else {
        fs::metadata("/proc/self").unwrap().gid()
    };
    let pod = Pod::new("shared-store/proxy.toml", 0o444, gid, &token);
    let out = Command::new(&pod.bin)
        .args(["check", "--config", &pod.config()])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out).trim(),
        "ok",
        "deploy/kubernetes/shared-store/proxy.toml:\n{}",
        all(&out)
    );

    if !running_as_root() {
        eprintln!("skipped the run part: needs root to run sidekey as uid {UID} (CI runs as root)");
        return;
    }
    // No Redis here: a loopback port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let text = fs::read_to_string(pod.config()).unwrap();
    let text = rewrite(&text, &[("valkey.data.svc.cluster.local:6379", &closed)]);
    fs::write(pod.config(), text).unwrap();
    let mut run = Running::start(&pod);
    run.wait_ready();
    run.stop();

    // The pod without the sidekey-store volume: sidekey never gets ready.
    fs::remove_dir_all(pod.dir.path().join("secrets/store")).unwrap();
    let run = pod.sidekey(&["run", "--config", &pod.config(), "--log-format", "json"]);
    let out = wait_output(run, Duration::from_secs(20));
    assert!(
        !out.status.success() && all(&out).contains("secrets/store/password"),
        "run should refuse to start without the store's files and name them:\n{}",
        all(&out)
    );
}

fn running_as_root() -> bool {
    // /proc/self belongs to the process's effective uid.
    fs::metadata("/proc/self").unwrap().uid() == 0
}

/// One pod's worth of files under a temp dir: sidekey's config ConfigMap and
/// its Secret volumes (client keys, store password and key, CA from `sidekey
/// ca generate`), the config's paths, ports and token URL rewritten to point
/// into it.
struct Pod {
    dir: tempfile::TempDir,
    bin: PathBuf,
    admin: String,
}

impl Pod {
    fn new(config: &str, secret_mode: u32, secret_gid: u32, token: &TokenEndpoint) -> Pod {
        let dir = tempfile::Builder::new()
            .prefix("sidekey-deploy-")
            .tempdir_in("/tmp")
            .unwrap();
        let root = dir.path();
        set_mode(root, 0o755); // traversable by the pod's uid, like kubelet's dirs

        // A copy of the binary, so the uid need not reach the build dir. Made
        // by a child process: a write fd held in this multi-threaded process
        // could leak into another test's fork and make exec fail (ETXTBSY).
        let bin = root.join("sidekey");
        let copied = Command::new("install")
            .args(["-m", "0755", env!("CARGO_BIN_EXE_sidekey")])
            .arg(&bin)
            .status()
            .unwrap();
        assert!(
            copied.success(),
            "install the sidekey binary into {}",
            root.display()
        );

        let gen = root.join("generated");
        let out = Command::new(&bin)
            .args(["ca", "generate", "--out"])
            .arg(&gen)
            .output()
            .unwrap();
        assert!(out.status.success(), "sidekey ca generate:\n{}", all(&out));
        let ca: Vec<(&str, Vec<u8>)> = ["ca.crt", "ca.key"]
            .into_iter()
            .map(|f| (f, fs::read(gen.join(f)).unwrap()))
            .collect();
        kubelet_volume(&root.join("ca"), &ca, secret_mode, secret_gid);
        for org in ["org-a", "org-b"] {
            let files = [
                ("key", format!("{org}-key\n").into_bytes()),
                ("secret", format!("{org}-secret\n").into_bytes()),
            ];
            kubelet_volume(
                &root.join("secrets").join(org),
                &files,
                secret_mode,
                secret_gid,
            );
        }

        // Secret sidekey-store (the shared-store overlay's [store]): the
        // Redis password and the store's encryption key, 32 random bytes in
        // base64 as `openssl rand -base64 32` writes them.
        let store_key =
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let store = [
            ("password", b"store-password\n".to_vec()),
            ("encryption-key", format!("{store_key}\n").into_bytes()),
        ];
        kubelet_volume(&root.join("secrets/store"), &store, secret_mode, secret_gid);

        let [proxy_port, admin_port] = free_ports();
        let admin = format!("127.0.0.1:{admin_port}");
        let text =
            fs::read_to_string(Path::new(REPO).join("deploy/kubernetes").join(config)).unwrap();
        let text = rewrite(
            &text,
            &[
                (
                    "/var/run/secrets/sidekey/",
                    &format!("{}/secrets/", root.display()),
                ),
                ("/etc/sidekey/ca/", &format!("{}/ca/", root.display())),
                ("127.0.0.1:3128", &format!("127.0.0.1:{proxy_port}")),
                // In the pod 0.0.0.0, for kubelet's probes; loopback here.
                ("0.0.0.0:9901", &admin),
                (
                    "https://eu.api.capillarytech.com/v3/",
                    &format!("http://{}/v3/", token.addr),
                ),
            ],
        );
        // ConfigMap files keep kubelet's default mode 0644, root-owned.
        kubelet_volume(
            &root.join("config"),
            &[("proxy.toml", text.into_bytes())],
            0o644,
            0,
        );
        Pod { dir, bin, admin }
    }

    fn config(&self) -> String {
        self.dir
            .path()
            .join("config/proxy.toml")
            .display()
            .to_string()
    }

    /// sidekey as the pod runs it: uid and gid 65532, no supplementary
    /// groups (the pod sets no fsGroup).
    fn sidekey(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            format!("--reuid={UID}"),
            format!("--regid={UID}"),
            "--clear-groups".to_owned(),
        ])
        .arg(&self.bin)
        .args(args)
        .stdin(Stdio::null());
        cmd
    }
}

/// Writes files as kubelet's AtomicWriter does: DIR/<PAYLOAD>/NAME with the
/// volume's mode, owned root:GID, DIR/..data -> <PAYLOAD>, DIR/NAME -> ..data/NAME.
fn kubelet_volume(dir: &Path, files: &[(&str, Vec<u8>)], mode: u32, gid: u32) {
    let payload = dir.join(PAYLOAD);
    fs::create_dir_all(&payload).unwrap();
    for d in [dir, &payload] {
        set_mode(d, 0o755);
    }
    for (name, content) in files {
        let f = payload.join(name);
        fs::write(&f, content).unwrap();
        if running_as_root() {
            chown(&f, Some(0), Some(gid)).unwrap();
        }
        set_mode(&f, mode);
        symlink(format!("..data/{name}"), dir.join(name)).unwrap();
    }
    symlink(PAYLOAD, dir.join("..data")).unwrap();
}

/// Replaces each pattern, which must occur: if the deploy config changes
/// shape, this says so instead of testing something else.
fn rewrite(text: &str, pairs: &[(&str, &str)]) -> String {
    pairs.iter().fold(text.to_string(), |t, (from, to)| {
        assert!(
            t.contains(from),
            "deploy config no longer contains {from:?}"
        );
        t.replace(from, to)
    })
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn free_ports() -> [u16; 2] {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    [
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    ]
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn all(out: &Output) -> String {
    format!(
        "{:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn wait_output(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!(
                "still running after {limit:?}: {:?}",
                child.wait_with_output().map(|o| all(&o))
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `sidekey run` as the pod's uid; killed if the test fails midway.
struct Running<'a> {
    pod: &'a Pod,
    child: Option<Child>,
    log: PathBuf,
}

impl<'a> Running<'a> {
    fn start(pod: &'a Pod) -> Running<'a> {
        let log = pod.dir.path().join("sidekey.log");
        let child = pod
            .sidekey(&["run", "--config", &pod.config(), "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Running {
            pod,
            child: Some(child),
            log,
        }
    }

    fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What kubelet's startupProbe does: GET /readyz on the admin port until 200.
    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "sidekey run exited ({status}) before ready:\n{}",
                    self.logs()
                );
            }
            if http_status(&self.pod.admin, "/readyz") == Some(200) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no /readyz 200 within 30 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, as kubelet stops the pod: sidekey drains and exits 0.
    fn stop(&mut self) {
        let mut child = self.child.take().unwrap();
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -TERM failed");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(40) {
                child.kill().unwrap();
                panic!(
                    "sidekey did not exit within 40 s of SIGTERM:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "sidekey exited with {status} after SIGTERM:\n{}",
            self.logs()
        );
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    reply.split_whitespace().nth(1)?.parse().ok()
}

/// A Capillary-style token endpoint on loopback that records request bodies
/// (`{"key": ..., "secret": ...}`) and answers with a token.
struct TokenEndpoint {
    addr: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl TokenEndpoint {
    fn start() -> TokenEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        // Lives as long as the test process.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let Some(body) = read_request_body(&mut s) else {
                    continue;
                };
                seen.lock().unwrap().push(body);
                let reply =
                    r#"{"data":{"accessToken":"test-token","ttlSeconds":900},"errors":null}"#;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        TokenEndpoint { addr, bodies }
    }
}

fn read_request_body(s: &mut TcpStream) -> Option<String> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf[head_end..]).into_owned())
}
