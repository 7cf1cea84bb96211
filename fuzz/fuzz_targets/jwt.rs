//! Any bytes as a bearer token: the `jwt` policy never panics and never accepts (a fuzzer does
//! not find an RS256 signature or the HS256 secret).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut value = b"Bearer ".to_vec();
    value.extend_from_slice(data);
    assert_ne!(gateway_fuzz::jwt().accepts(&value), Some(true));
});
