//! `sidekey::config::load_str` on arbitrary text (via
//! `sidekey::fuzz::config`): no panic, every error rendered with the
//! file's name, a valid config's derived values computable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(f) = sidekey::fuzz::config(text) {
            if !sidekey::fuzz::is_known(&f) {
                panic!("{f}");
            }
        }
    }
});
