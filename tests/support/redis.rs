//! A real redis-server for a test, on an ephemeral loopback port, with no
//! persistence; killed (and restartable on the same port) by the test.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Redis {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Redis {
    pub async fn start() -> Redis {
        Self::start_on(super::sidekey::free_port()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Redis {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/install-test-deps.sh)");
        let r = Redis {
            addr,
            child: Some(child),
        };
        for _ in 0..200 {
            if r.query::<String>(&redis::cmd("PING")).await.is_ok() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start on {addr}");
    }

    /// redis-server speaking only TLS (`--port 0`) with the given PEM
    /// files; clients need not present a certificate. Ready once the port
    /// accepts connections (the plain `query` helper cannot speak TLS).
    pub async fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Redis {
        let addr = super::sidekey::free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &addr.port().to_string()])
            .arg("--tls-cert-file")
            .arg(cert)
            .arg("--tls-key-file")
            .arg(key)
            .arg("--tls-ca-cert-file")
            .arg(ca)
            .args(["--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/install-test-deps.sh)");
        let r = Redis {
            addr,
            child: Some(child),
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server (TLS) did not start on {addr}");
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        cmd.query_async(&mut conn).await
    }

    /// Keys matching `pattern`.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        self.query(redis::cmd("KEYS").arg(pattern)).await.unwrap()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
