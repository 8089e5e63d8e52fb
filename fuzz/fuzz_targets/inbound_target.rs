//! The application's side of the proxy: `sidekey::inbound::target` and
//! `connect_target` on arbitrary URIs, `Proxy-Authorization`, and
//! hop-by-hop stripping. Byte 0 picks which (see
//! `sidekey::fuzz::inbound`); the rest is the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if let Err(f) = sidekey::fuzz::inbound(mode, rest) {
        if !sidekey::fuzz::is_known(&f) {
            panic!("{f}");
        }
    }
});
