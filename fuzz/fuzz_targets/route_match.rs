//! Route matching: fuzzed route lines and a fuzzed request (see
//! `sidekey::fuzz::route_match` for the format); `RouteTable::decide`
//! must agree with a plain scan in file order, and the upstream URI must
//! name the request's own host.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(f) = sidekey::fuzz::route_match(text) {
            if !sidekey::fuzz::is_known(&f) {
                panic!("{f}");
            }
        }
    }
});
