//! Template parser and renderers. Input: one selector byte (context:
//! header / client field / body; top bit: form instead of JSON body), the
//! template, then NUL-separated values (token, token type, id_token,
//! claims JSON; client fields; `<<env.V0>>`, `<<env.V1>>`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut parts = text.split('\0');
    let src = parts.next().unwrap_or_default();
    let values: Vec<String> = parts.take(8).map(str::to_string).collect();
    if let Err(f) = sidekey::fuzz::template(selector, src, &values) {
        if !sidekey::fuzz::is_known(&f) {
            panic!("{f}");
        }
    }
});
