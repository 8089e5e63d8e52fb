//! Interception fixtures shared by the HTTPS tests: an upstream behind TLS
//! with its own CA, sidekey with an interception CA and that upstream's CA
//! in `extra_roots`, and an app-side TLS connection through CONNECT.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::pki::{new_ca, TestCa};
use super::sidekey::Proxy;
use super::upstream::Upstream;

pub struct Interception {
    pub proxy: Proxy,
    /// TLS upstream for `localhost` (h2 and http/1.1).
    pub up: Upstream,
    pub sidekey_ca: TestCa,
    pub upstream_ca: TestCa,
    _dir: tempfile::TempDir,
}

impl Interception {
    /// `proxy_extra` goes into `[proxy]` (the upstream's port is allowed for
    /// CONNECT); `rest` is the clients and routes, after `[tls]`.
    pub async fn start(proxy_extra: &str, rest: &str) -> Interception {
        super::init_crypto();
        let upstream_ca = new_ca("upstream CA");
        let sidekey_ca = new_ca("sidekey CA");
        let up = Upstream::start_tls(
            upstream_ca.server_config(&["localhost", "127.0.0.1"], &[b"h2", b"http/1.1"]),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let tls = tls_section(&dir, &sidekey_ca, &upstream_ca);
        let proxy = Proxy::start(
            &format!("connect_ports = [{}]\n{proxy_extra}", up.addr.port()),
            &format!("{tls}{rest}"),
        )
        .await;
        Interception {
            proxy,
            up,
            sidekey_ca,
            upstream_ca,
            _dir: dir,
        }
    }

    /// App: a TLS connection to `localhost:<upstream port>` through CONNECT.
    pub async fn tls(&self, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
        connect_tls(
            self.proxy.addr,
            self.up.addr.port(),
            &self.sidekey_ca,
            "localhost",
            alpn,
        )
        .await
        .unwrap()
    }

    /// App: reqwest through the proxy, trusting sidekey's CA.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(self.proxy.url()).unwrap())
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.sidekey_ca.cert_pem.as_bytes()).unwrap(),
            )
            .build()
            .unwrap()
    }
}

/// `[tls]` with `ca` as the interception CA and `upstream` trusted.
pub fn tls_section(dir: &tempfile::TempDir, ca: &TestCa, upstream: &TestCa) -> String {
    let (cert, key) = ca.write_to(dir.path());
    let roots: PathBuf = dir.path().join("upstream-roots.pem");
    std::fs::write(&roots, &upstream.cert_pem).unwrap();
    format!(
        "[tls]\nca_cert = \"{}\"\nca_key = \"{}\"\nextra_roots = [\"{}\"]\n\n",
        cert.display(),
        key.display(),
        roots.display()
    )
}

/// App: `CONNECT localhost:port`, then TLS with `sni`, trusting `ca`.
pub async fn connect_tls(
    proxy: SocketAddr,
    port: u16,
    ca: &TestCa,
    sni: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut tcp = TcpStream::connect(proxy).await?;
    tcp.write_all(
        format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes(),
    )
    .await?;
    // The answer's head, byte by byte so no TLS byte is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await?);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tokio_rustls::TlsConnector::from(ca.client_config(alpn))
        .connect(sni.to_string().try_into().unwrap(), tcp)
        .await
}
