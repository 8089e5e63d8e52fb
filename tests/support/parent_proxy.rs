//! A real parent proxy (Debian's tinyproxy) for the corporate-network
//! tests: on an ephemeral loopback port, its own config and log in a temp
//! dir, Basic credentials required; killed when dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Tinyproxy {
    pub addr: SocketAddr,
    pub user: &'static str,
    pub password: &'static str,
    dir: tempfile::TempDir,
    child: Child,
}

impl Tinyproxy {
    pub async fn start() -> Tinyproxy {
        let dir = tempfile::tempdir().unwrap();
        let (user, password) = ("corp", "s3cret");
        let mut tries = 0;
        loop {
            let addr = super::sidekey::free_port();
            let conf = dir.path().join("tinyproxy.conf");
            // No ConnectPort line: CONNECT may reach any port (the test
            // upstreams are on ephemeral ones).
            std::fs::write(
                &conf,
                format!(
                    "Port {}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Info\n\
                     MaxClients 64\nAllow 127.0.0.1\nDisableViaHeader Yes\nBasicAuth {user} {password}\n",
                    addr.port(),
                    dir.path().join("tinyproxy.log").display()
                ),
            )
            .unwrap();
            let mut child = Command::new("/usr/bin/tinyproxy")
                .arg("-d")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("tinyproxy is installed (scripts/install-test-deps.sh)");
            for _ in 0..200 {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return Tinyproxy {
                        addr,
                        user,
                        password,
                        dir,
                        child,
                    };
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
            // The port picked may have been taken meanwhile: a new one.
            tries += 1;
            assert!(
                tries < 3,
                "tinyproxy did not start; log:\n{}",
                Self::read_log(&dir)
            );
        }
    }

    /// `http://user:password@addr`, as `upstream_proxy` takes it.
    pub fn url_with_credentials(&self) -> String {
        format!("http://{}:{}@{}", self.user, self.password, self.addr)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request lines tinyproxy logged ("GET http://host/path HTTP/1.1",
    /// "CONNECT host:port HTTP/1.1").
    pub fn requests(&self) -> Vec<String> {
        Self::read_log(&self.dir)
            .lines()
            .filter_map(|l| l.split_once("): ").filter(|_| l.contains("Request (")))
            .map(|(_, r)| r.to_string())
            .collect()
    }

    fn read_log(dir: &tempfile::TempDir) -> String {
        std::fs::read_to_string(dir.path().join("tinyproxy.log")).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
