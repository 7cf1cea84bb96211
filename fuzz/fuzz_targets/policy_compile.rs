//! Any bytes as a policy file: the compiler never panics, and every error it reports carries
//! `file:line:col`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let file = Path::new("/fuzz/policy.yaml");
    if let Err(errors) = policies::compile::compile_str(file, &text, &gateway_fuzz::env(), None) {
        assert!(!errors.0.is_empty());
        for e in &errors.0 {
            assert!(e.location.is_some(), "unlocated: {e}");
        }
    }
});
