//! The command line's promises to an operator: `check` reports every error
//! at once on stderr, exit codes say what went wrong (1 for `check`, 78
//! EX_CONFIG for a config another command cannot load), and `ca generate`
//! never destroys an existing CA key unless told to.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

fn sidekey(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sidekey"))
        .args(args)
        .env_remove("SIDEKEY_CONFIG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn ca_generate_refuses_to_overwrite_an_existing_key_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let first = sidekey(&["ca", "generate", "--out", out]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let key = std::fs::read(dir.path().join("ca.key")).unwrap();
    let cert = std::fs::read(dir.path().join("ca.crt")).unwrap();

    // A second run without --force fails, names the file and keeps both.
    let again = sidekey(&["ca", "generate", "--out", out]);
    assert_eq!(again.status.code(), Some(1));
    let err = text(&again.stderr);
    assert!(err.contains("ca.key") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("ca.key")).unwrap(), key);
    assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), cert);

    // A lone ca.crt (the key kept elsewhere) is not overwritten either.
    let lone = tempfile::tempdir().unwrap();
    std::fs::write(lone.path().join("ca.crt"), "keep me").unwrap();
    let o = sidekey(&["ca", "generate", "--out", lone.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(lone.path().join("ca.crt")).unwrap(),
        "keep me"
    );
    assert!(!lone.path().join("ca.key").exists());

    // --force replaces them, and the key keeps mode 0600.
    let forced = sidekey(&["ca", "generate", "--force", "--out", out]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_ne!(std::fs::read(dir.path().join("ca.key")).unwrap(), key);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/broken")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn check_reports_all_seven_mistakes_on_stderr_in_one_run() {
    let path = fixture("seven_mistakes.toml");
    let o = sidekey(&["check", "--config", &path]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty(), "diagnostics belong on stderr");
    let err = text(&o.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with(&format!("{path}:")))
        .collect();
    assert_eq!(lines.len(), 7, "{err}");
    for (line, names) in lines.iter().zip([
        "proxy: unknown field `listne`",
        "proxy.upstream_timeout:",
        "client \"api\": client_secret: invalid type: integer",
        "client \"api\": unknown field `refresh_befor`",
        "route \"orders\": client \"nope\" is not defined",
        "route \"billing\": retry_on_401:",
        "route \"static\": missing field `hosts`",
    ]) {
        assert!(line.contains(names), "expected {names:?} in {line:?}");
    }
}

#[test]
fn a_config_that_cannot_be_loaded_is_ex_config_for_every_other_command() {
    let path = fixture("seven_mistakes.toml");
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("bundle.pem");
    for args in [
        vec!["run", "--config", &path],
        vec!["token", "api", "--config", &path],
        vec!["login", "api", "--no-browser", "--config", &path],
        vec![
            "ca",
            "bundle",
            "--out",
            bundle.to_str().unwrap(),
            "--config",
            &path,
        ],
    ] {
        let o = sidekey(&args);
        assert_eq!(o.status.code(), Some(78), "{args:?}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(
            err.contains(&format!("{path}:10:17: client \"api\": client_secret")),
            "{args:?}: {err}"
        );
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    // A config file that is not there is EX_CONFIG as well.
    let o = sidekey(&["run", "--config", "/nonexistent/proxy.toml"]);
    assert_eq!(o.status.code(), Some(78));
}
