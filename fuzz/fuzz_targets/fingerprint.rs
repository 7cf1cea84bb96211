//! Any JSON document: its compact and pretty spellings (the same canonical JSON) have the
//! same idempotency fingerprint, and it never equals the fingerprint of the raw bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policies::kinds::idempotency::fingerprint;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let fp = fingerprint(Some(&doc), data);
    for text in [
        serde_json::to_string(&doc).unwrap_or_default(),
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    ] {
        let again: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(fingerprint(Some(&again), text.as_bytes()), fp, "{text}");
    }
    assert_ne!(fingerprint(None, data), fp);
});
