//! `sidekey login CLIENT`: authorization code + PKCE (RFC 7636, S256) for a
//! `refresh_token` client; the refresh token lands in `state_file`.

use std::io::Write;
use std::path::Path;

pub async fn login(_path: &Path, client: &str, _no_browser: bool, _out: &mut dyn Write) -> anyhow::Result<()> {
    anyhow::bail!("login for {client:?}: not available yet")
}
