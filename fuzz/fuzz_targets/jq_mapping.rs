//! Any JSON document through every inbound and outbound mapping: no panic, and an output
//! bounded by the input's size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let in_len = input.to_string().len();
    let catalog = gateway_fuzz::catalog();
    for m in catalog.mappings() {
        if let Ok(out) = m.apply(input.clone()) {
            assert!(
                out.to_string().len() <= gateway_fuzz::output_bound(in_len),
                "{}",
                m.name()
            );
        }
    }
    for m in catalog.outbound_mappings() {
        let _ = m.apply(input.clone());
    }
});
