//! The store's refresh-token record across an `encryption_key` rotation.

use std::sync::Arc;

use super::SharedStore;
use crate::secret::Secret;

const KEY_1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_2: &str = "HwAeHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

/// A store on `path` sealing with `key`, and its one client.
fn store(path: &std::path::Path, key: &str) -> (Arc<SharedStore>, crate::config::ClientSettings) {
    let source = format!(
        "[store]\nbackend = \"file\"\npath = \"{}\"\nencryption_key = \"{key}\"\n\
         [clients.c]\ngrant = \"refresh_token\"\ntoken_url = \"https://idp.example/token\"\n\
         client_id = \"i\"\nclient_secret = \"s\"\nrefresh_token = \"rt-0\"\n",
        path.display()
    );
    let dir = path.parent().unwrap();
    let cfg = crate::config::load_str(&dir.join("proxy.toml"), &source, &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let store = SharedStore::build(&cfg.store, &cfg.tls, metrics)
        .unwrap()
        .unwrap();
    (store, (*cfg.clients["c"]).clone())
}

/// After `encryption_key` is rotated the stored refresh token no longer
/// opens; the next rotation must replace it, or the store keeps the
/// unreadable value for good and every restart (and every other replica)
/// goes back to the config's long-consumed refresh token.
#[tokio::test]
async fn a_refresh_token_that_no_longer_opens_is_replaced_by_the_next_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let (old, client) = store(&path, KEY_1);
    assert!(old.swap_refresh(&client, None, &Secret::new("rt-1")).await);
    drop(old);

    let (new, client) = store(&path, KEY_2);
    assert!(
        new.load_refresh(&client).await.is_none(),
        "sealed with the old key"
    );
    assert!(
        new.swap_refresh(&client, None, &Secret::new("rt-2")).await,
        "the unreadable record is replaced"
    );
    let (rt, _) = new.load_refresh(&client).await.unwrap();
    assert_eq!(rt.expose(), "rt-2");
    drop(new);

    // And a restart with the new key reads it.
    let (again, client) = store(&path, KEY_2);
    let (rt, _) = again.load_refresh(&client).await.unwrap();
    assert_eq!(rt.expose(), "rt-2");
}
