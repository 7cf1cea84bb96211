//! Any bytes as the start of an HTTP/1 request: the strict edge's head check
//! (`gateway::framing::check_h1_head`, what the listener runs before Pingora) never panics, and
//! an accepted head lies within the bytes and within the size limit.
#![no_main]

use gateway::framing::{HeadCheck, check_h1_head};
use libfuzzer_sys::fuzz_target;

const MAX_HEADER_BYTES: u64 = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    if let HeadCheck::Accepted { len, .. } = check_h1_head(data, MAX_HEADER_BYTES) {
        assert!(len <= data.len());
        assert!(len as u64 <= MAX_HEADER_BYTES);
    }
});
