//! Drives `sidekey login` as a person would: starts it, reads the URL it
//! prints, and (when the test says so) follows it like a browser, which the
//! test IdP redirects back to sidekey's loopback listener.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

pub struct Login {
    pub child: tokio::process::Child,
    pub url: reqwest::Url,
    /// Kept open: sidekey prints its result there, and a closed pipe
    /// would fail that write.
    _stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Login {
    pub async fn start(config: &Path, client: &str) -> Login {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sidekey"))
            .args(["login", client, "--no-browser", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut url = None;
        while let Some(l) = lines.next_line().await.unwrap() {
            if let Some(u) = l.trim().strip_prefix("http") {
                url = Some(format!("http{u}"));
            }
            if l.starts_with("Waiting") {
                break;
            }
        }
        let url = reqwest::Url::parse(&url.expect("login printed a URL")).unwrap();
        Login {
            child,
            url,
            _stdout: lines,
        }
    }

    /// The authorize URL's query parameters.
    pub fn query(&self) -> HashMap<String, String> {
        self.url.query_pairs().into_owned().collect()
    }

    /// Browser: opens the URL (the IdP redirects to the callback); then
    /// `sidekey login` must exit successfully.
    pub async fn follow(mut self) {
        let browser = reqwest::Client::builder().no_proxy().build().unwrap();
        let page = browser.get(self.url.clone()).send().await.unwrap();
        assert_eq!(page.status(), 200, "{:?}", page.text().await);
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "sidekey login failed");
    }
}
