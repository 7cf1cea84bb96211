//! The deep check: documents generated from each channel's schema (the minimal valid one and
//! seeded random ones, see [`generator`]), run through the route's mapping for that channel,
//! must map to a valid canonical document. A schema-valid input the mapping fails on (a jq
//! error, no or several outputs, an output the canonical schema refuses) is a finding: the
//! gateway would answer it 500. A rejection (`reject(...)`, answered 422) is the mapping
//! refusing what a schema cannot express (one currency per document, a real calendar date);
//! those are counted per route and channel, with their reasons, but are no finding.

pub mod generator;
pub mod pattern;
pub mod shrink;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::Value;
use transforms::{Mapping, TransformError};

use crate::surface::{RouteSurface, Security, Surface};
use generator::Generator;

/// Candidates tried when shrinking one failing input (each is one mapping run).
const SHRINK_BUDGET: usize = 400;

/// Settings of a deep check.
#[derive(Debug, Clone, Copy)]
pub struct DeepOptions {
    /// Seed of the generator: the same seed generates the same documents.
    pub seed: u64,
    /// Randomized documents per route and channel (besides the minimal one).
    pub samples: u32,
}

/// One way the mapping fails on schema-valid inputs, with the smallest input found failing so.
#[derive(Debug, Clone)]
pub struct DeepFinding {
    /// The route (several, comma-separated, when routes share the schema and mapping).
    pub route: String,
    /// The channel.
    pub channel: String,
    /// What went wrong, with the failing output pointer.
    pub message: String,
    /// The generated input (the smallest of those failing this way).
    pub input: serde_json::Value,
    /// The failing pointer in the mapping's output (None: the mapping failed outright).
    pub pointer: Option<String>,
    /// The schema, as the policy file names it.
    pub schema: String,
    /// The mapping, `<channel>/<document>`.
    pub mapping: String,
    /// Which generated document the input is: `minimal` or `sample N` (of [`Self::seed`]).
    pub document: String,
    /// The seed the pair's generator started from.
    pub seed: u64,
    /// How many of the generated documents fail this way.
    pub occurrences: usize,
}

/// What one schema and mapping pair did with its generated documents.
#[derive(Debug, Clone)]
pub struct PairReport {
    /// The routes using the pair.
    pub routes: Vec<String>,
    /// The channel.
    pub channel: String,
    /// The schema, as the policy file names it.
    pub schema: String,
    /// The mapping.
    pub mapping: String,
    /// Documents generated (the minimal one included).
    pub documents: usize,
    /// Mapped to a valid canonical document.
    pub mapped: usize,
    /// Rejected by the mapping, per reason.
    pub rejected: BTreeMap<String, usize>,
    /// Failed (findings).
    pub failed: usize,
}

/// Everything a deep check found.
#[derive(Debug, Clone, Default)]
pub struct DeepReport {
    /// The failures, one per distinct way of failing.
    pub findings: Vec<DeepFinding>,
    /// Per schema and mapping pair, in route order.
    pub pairs: Vec<PairReport>,
}

/// Runs the deep check over every route and channel with a schema and a mapping.
pub fn check(surface: &Surface, options: DeepOptions) -> Result<Vec<DeepFinding>, String> {
    report(surface, options).map(|r| r.findings)
}

/// Runs the deep check and keeps the per-pair counts too. An error (a keyword the generator
/// does not know, a schema no document meets) names the schema file and pointer.
pub fn report(surface: &Surface, options: DeepOptions) -> Result<DeepReport, String> {
    // Routes sharing a schema and mapping (the order webhook and the order route for
    // Shopify) are checked once.
    let mut pairs: Vec<Pair> = Vec::new();
    let mut schemas: BTreeMap<String, (Arc<Value>, String)> = BTreeMap::new();
    for route in &surface.routes {
        let reachable = reachable_channels(route);
        for (channel, mapping) in &route.mappings {
            if reachable.as_ref().is_some_and(|r| !r.contains(channel)) {
                continue;
            }
            let Some(schema) = route.schemas.for_channel(channel) else {
                continue;
            };
            let name = schema
                .path
                .as_ref()
                .map_or_else(|| schema.reference.clone(), |p| p.display().to_string());
            schemas.insert(
                schema.reference.clone(),
                (schema.value.clone(), name.clone()),
            );
            match pairs
                .iter_mut()
                .find(|p| p.reference == schema.reference && p.mapping.name() == mapping.name())
            {
                Some(p) => p.routes.push(route.name.clone()),
                None => pairs.push(Pair {
                    reference: schema.reference.clone(),
                    channel: channel.clone(),
                    mapping: mapping.clone(),
                    routes: vec![route.name.clone()],
                    file: name,
                }),
            }
        }
    }
    let mut report = DeepReport::default();
    for Pair {
        reference,
        channel,
        mapping,
        routes,
        file,
    } in pairs
    {
        let Some((schema, _)) = schemas.get(&reference) else {
            continue;
        };
        let examples: Vec<&Value> = mapping.golden_cases().iter().map(|c| &c.input).collect();
        let generator = Generator::new(&file, schema)
            .map_err(|e| e.to_string())?
            .with_examples(examples);
        let seed = options.seed ^ stable_hash(&format!("{reference}\n{}", mapping.name()));
        let documents = generator
            .documents(seed, options.samples)
            .map_err(|e| e.to_string())?;
        let (pair, findings) = run_pair(
            &generator, &routes, &channel, &reference, &mapping, seed, &documents,
        );
        report.pairs.push(pair);
        report.findings.extend(findings);
    }
    Ok(report)
}

/// A schema and mapping pair to check, with the routes using it.
struct Pair {
    /// The schema as the policy file names it.
    reference: String,
    channel: String,
    mapping: Arc<Mapping>,
    routes: Vec<String>,
    /// The schema's file, for error messages.
    file: String,
}

/// One way of failing: its message and pointer, the smallest input failing so (its index and
/// size), and how many inputs fail so.
struct Failure<'d> {
    message: String,
    pointer: Option<String>,
    input: &'d Value,
    index: usize,
    size: usize,
    occurrences: usize,
}

/// The channels whose documents can reach a route without a `{channel}` parameter: those its
/// signature or certificate policies bind (a Shopify webhook route only sees Shopify
/// orders). None: any channel.
fn reachable_channels(route: &RouteSurface) -> Option<Vec<String>> {
    if route.channel_param {
        return None;
    }
    let mut bound: Option<Vec<String>> = None;
    for s in &route.security {
        if let Security::WebhookSignature { channels, .. } | Security::ClientCert { channels, .. } =
            s
        {
            bound
                .get_or_insert_with(Vec::new)
                .extend(channels.iter().cloned());
        }
    }
    bound
}

/// Maps every document and groups the failures.
fn run_pair(
    generator: &Generator,
    routes: &[String],
    channel: &str,
    reference: &str,
    mapping: &Mapping,
    seed: u64,
    documents: &[Value],
) -> (PairReport, Vec<DeepFinding>) {
    let mut pair = PairReport {
        routes: routes.to_vec(),
        channel: channel.to_owned(),
        schema: reference.to_owned(),
        mapping: mapping.name().to_owned(),
        documents: documents.len(),
        mapped: 0,
        rejected: BTreeMap::new(),
        failed: 0,
    };
    // Per way of failing: (message, pointer, smallest input, its index, occurrences).
    let mut failures: BTreeMap<String, Failure<'_>> = BTreeMap::new();
    for (index, doc) in documents.iter().enumerate() {
        let failed = match mapping.apply(doc.clone()) {
            Ok(_) => {
                pair.mapped += 1;
                continue;
            }
            Err(TransformError::Rejected { message, .. }) => {
                *pair.rejected.entry(message).or_default() += 1;
                continue;
            }
            Err(e) => failures_of(&e),
        };
        pair.failed += 1;
        let size = doc.to_string().len();
        for (key, message, pointer) in failed {
            let entry = failures.entry(key).or_insert(Failure {
                message: message.clone(),
                pointer: pointer.clone(),
                input: doc,
                index,
                size,
                occurrences: 0,
            });
            entry.occurrences += 1;
            if size < entry.size {
                entry.message = message;
                entry.pointer = pointer;
                entry.input = doc;
                entry.index = index;
                entry.size = size;
            }
        }
    }
    let findings = failures
        .into_iter()
        .map(|(key, f)| {
            // The smallest input still valid and still failing this way (same key).
            let fails_so = |v: &Value| -> Option<(String, Option<String>)> {
                if !generator.is_valid(v) {
                    return None;
                }
                let err = mapping.apply(v.clone()).err()?;
                failures_of(&err)
                    .into_iter()
                    .find(|(k, _, _)| *k == key)
                    .map(|(_, message, pointer)| (message, pointer))
            };
            let input = shrink::shrink(f.input, |v| fails_so(v).is_some(), SHRINK_BUDGET);
            let shrunk = input != *f.input;
            let (message, pointer) = fails_so(&input).unwrap_or((f.message, f.pointer));
            let mut document = if f.index == 0 {
                "minimal".to_owned()
            } else {
                format!("sample {}", f.index)
            };
            if shrunk {
                document.push_str(", shrunk");
            }
            DeepFinding {
                route: routes.join(", "),
                channel: channel.to_owned(),
                message,
                input,
                pointer,
                schema: reference.to_owned(),
                mapping: mapping.name().to_owned(),
                document,
                seed,
                occurrences: f.occurrences,
            }
        })
        .collect();
    (pair, findings)
}

/// The ways a mapping error is a failure: (grouping key, message, output pointer) per
/// violation of the canonical schema, or the error itself.
fn failures_of(error: &TransformError) -> Vec<(String, String, Option<String>)> {
    match error {
        TransformError::InvalidOutput {
            document,
            violations,
            ..
        } => violations
            .violations
            .iter()
            .map(|v| {
                let at = if v.pointer.is_empty() {
                    "(root)"
                } else {
                    &v.pointer
                };
                (
                    format!("{}|{}", general_pointer(&v.pointer), v.keyword),
                    format!(
                        "the mapping produced an invalid canonical {document}: at {at}: {} [{}]",
                        v.message, v.keyword
                    ),
                    Some(v.pointer.clone()),
                )
            })
            .collect(),
        other => vec![(other.to_string(), other.to_string(), None)],
    }
}

/// A pointer with array indices generalized (`/lines/3/sku` -> `/lines/*/sku`), so the same
/// failure at another line is the same finding.
fn general_pointer(pointer: &str) -> String {
    pointer
        .split('/')
        .map(|t| {
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                "*"
            } else {
                t
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// FNV-1a: a hash that stays the same across builds and platforms (the seed of a pair must).
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The findings for people: each with its route, channel, failing pointer and input.
pub fn render_text(findings: &[DeepFinding]) -> String {
    let mut out = String::new();
    for f in findings {
        let _ = writeln!(
            out,
            "FAIL route {} channel {} (schema {}, mapping {}): {}",
            f.route, f.channel, f.schema, f.mapping, f.message
        );
        if let Some(p) = &f.pointer {
            let _ = writeln!(
                out,
                "  failing pointer: {}",
                if p.is_empty() { "(root)" } else { p }
            );
        }
        let _ = writeln!(
            out,
            "  input ({}, seed {}; {} generated document(s) fail this way): {}",
            f.document, f.seed, f.occurrences, f.input
        );
    }
    out
}

/// Per schema and mapping pair: documents generated, mapped, rejected (with the most common
/// reasons) and failed.
pub fn render_summary(report: &DeepReport) -> String {
    let mut out = String::new();
    for p in &report.pairs {
        let rejected: usize = p.rejected.values().sum();
        let _ = writeln!(
            out,
            "{} [{}] {} -> {}: {} documents, {} mapped, {} rejected, {} failed",
            p.routes.join(", "),
            p.channel,
            p.schema,
            p.mapping,
            p.documents,
            p.mapped,
            rejected,
            p.failed
        );
        let mut reasons: Vec<(&String, &usize)> = p.rejected.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (reason, n) in reasons.iter().take(3) {
            let _ = writeln!(out, "  rejected {n}x: {reason}");
        }
        if reasons.len() > 3 {
            let _ = writeln!(
                out,
                "  ... and {} other rejection reason(s)",
                reasons.len() - 3
            );
        }
    }
    out
}
