//! Test actors, each started on 127.0.0.1:0 by the test that needs it:
//! an upstream that records what arrived, a token server that counts calls
//! and can fail, a throwaway PKI, and sidekey itself.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

pub mod oidc;
pub mod pki;
pub mod sidekey;
pub mod token_server;
pub mod upstream;

pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
