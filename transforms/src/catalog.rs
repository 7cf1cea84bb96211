//! The mappings of every channel, loaded and compiled once: `Catalog::load` reads a mappings
//! folder (`<channel>/<document>.jq` plus golden cases), and a `Mapping` turns one channel
//! document into its canonical form and checks the result against the canonical schema.
//!
//! Layout under the root (see `mappings/README.md`):
//! ```text
//! <channel>/<document>.jq                          the mapping
//! <channel>/cases/<document>/<name>.input.json     a golden input
//! <channel>/cases/<document>/<name>.expected.json  its expected canonical output
//! erp/ack.jq, erp/error.jq                         the response mappings
//! <channel>/outbound/<operation>.jq                the outbound mappings (canonical -> a
//!                                                  marketplace's request), see `outbound`
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::canonical_schemas::{self, SchemaValidator};
use crate::engine::{Program, RunError};
use crate::golden::{self, GoldenCase, GoldenOutcome};
use crate::mapping_files::{LoadError, file_name, sorted_entries};
use crate::value;

pub use crate::outbound::{
    OUTBOUND_CHANNELS, OUTBOUND_OPERATIONS, OutboundMapping, OutboundRequest, outbound_body_schema,
    outbound_body_validator,
};

/// The folder of a channel holding its outbound mappings (never an inbound document).
pub const OUTBOUND_FOLDER: &str = "outbound";

/// The folder of the response mappings (ERP answer -> canonical answer or problem).
pub const RESPONSE_CHANNEL: &str = "erp";

/// How many schema violations of a mapping's output an error lists (all are counted).
const MAX_LISTED_VIOLATIONS: usize = 20;

/// The canonical document a mapping produces, from where it sits: `<channel>/<document>.jq`
/// produces that document, and so does a version of it, `<channel>/<document>.<version>.jq`
/// (`amazon/order.v1`: what an older version of a route maps); `erp/ack.jq` the answer and
/// `erp/error.jq` the problem.
pub fn output_document(channel: &str, document: &str) -> Option<&'static str> {
    if channel == RESPONSE_CHANNEL {
        return match document {
            "ack" => Some("answer"),
            "error" => Some("problem"),
            _ => None,
        };
    }
    let document = match document.split_once('.') {
        Some((d, version)) if is_version(version) => d,
        Some(_) => return None,
        None => document,
    };
    canonical_schemas::CANONICAL_DOCUMENTS
        .into_iter()
        .filter(|d| !matches!(*d, "answer" | "problem"))
        .find(|d| *d == document)
}

pub use crate::error::TransformError;

/// One compiled mapping, with its golden cases.
pub struct Mapping {
    name: String,
    channel: String,
    document: String,
    output: &'static str,
    path: PathBuf,
    program: Program,
    validator: &'static SchemaValidator,
    cases: Vec<GoldenCase>,
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("name", &self.name)
            .field("output", &self.output)
            .field("path", &self.path)
            .field("cases", &self.cases.len())
            .finish_non_exhaustive()
    }
}

impl Mapping {
    /// Compiles a mapping from its source; `path` is only used in error messages. The output
    /// document follows from `channel` and `document` as in [`output_document`].
    pub fn compile(
        channel: &str,
        document: &str,
        source: &str,
        path: &Path,
    ) -> Result<Mapping, Vec<LoadError>> {
        let Some(output) = output_document(channel, document) else {
            let known = if channel == RESPONSE_CHANNEL {
                "ack, error".to_owned()
            } else {
                "order, order_change, inventory_adjustment, shipment, return, each optionally with a .<version>".to_owned()
            };
            return Err(vec![LoadError::at(
                path,
                format!("no canonical document is called {document:?} (known: {known})"),
            )]);
        };
        let Some(validator) = canonical_schemas::canonical_validator(output) else {
            return Err(vec![LoadError::at(
                path,
                format!("the canonical schema of {output} does not compile"),
            )]);
        };
        let program =
            Program::compile(source).map_err(|errors| LoadError::in_source(path, errors))?;
        Ok(Mapping {
            name: format!("{channel}/{document}"),
            channel: channel.to_owned(),
            document: document.to_owned(),
            output,
            path: path.to_owned(),
            program,
            validator,
            cases: Vec::new(),
        })
    }

    /// `<channel>/<document>`, e.g. `amazon/order`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The channel document it reads (`order`, `order_change`, ..., `ack`, `error`).
    pub fn document(&self) -> &str {
        &self.document
    }

    /// The canonical document it produces (`order`, ..., `answer`, `problem`).
    pub fn output_document(&self) -> &'static str {
        self.output
    }

    /// The `.jq` file it was compiled from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Maps one channel document to its canonical form, validated against the canonical
    /// schema: the result is either a valid canonical document or an error.
    pub fn apply(&self, input: Value) -> Result<Value, TransformError> {
        self.checked(self.program.run_json(input))
    }

    /// [`Mapping::apply`] through jaq alone, never the compiled form: what the compiled form
    /// is compared against in tests and benches.
    #[doc(hidden)]
    pub fn apply_interpreted(&self, input: Value) -> Result<Value, TransformError> {
        self.checked(self.program.run(value::to_jaq(input)))
    }

    /// Whether [`Mapping::apply`] runs the compiled form of the mapping (jaq runs the
    /// mappings that use jq the compiled form does not know, and every error).
    pub fn runs_compiled(&self) -> bool {
        self.program.is_compiled()
    }

    fn checked(&self, result: Result<Value, RunError>) -> Result<Value, TransformError> {
        let output = result.map_err(|err| self.run_error(err))?;
        self.validator
            .validate(&output, MAX_LISTED_VIOLATIONS)
            .map_err(|violations| TransformError::InvalidOutput {
                mapping: self.name.clone(),
                document: self.output,
                violations,
            })?;
        Ok(output)
    }

    fn run_error(&self, err: RunError) -> TransformError {
        let mapping = self.name.clone();
        match err {
            RunError::Rejected(message) => TransformError::Rejected { mapping, message },
            RunError::Failed(message) => TransformError::Failed { mapping, message },
            RunError::NoOutput => TransformError::NoOutput { mapping },
            RunError::SeveralOutputs => TransformError::SeveralOutputs { mapping },
            RunError::NotJson(source) => TransformError::NotJson { mapping, source },
        }
    }

    /// The golden cases found next to the mapping.
    pub fn golden_cases(&self) -> &[GoldenCase] {
        &self.cases
    }

    /// Runs every golden case; a failed one carries a readable diff or the error.
    pub fn run_golden_cases(&self) -> Vec<GoldenOutcome> {
        self.cases
            .iter()
            .map(|case| golden::run_case(case, self.apply(case.input.clone())))
            .collect()
    }
}

/// Every mapping under a root folder, compiled.
#[derive(Debug, Default)]
pub struct Catalog {
    mappings: BTreeMap<String, Arc<Mapping>>,
    /// The outbound mappings, by `<channel>/outbound/<operation>`.
    outbound: BTreeMap<String, Arc<OutboundMapping>>,
}

impl Catalog {
    /// Loads and compiles every mapping and golden case under `root`; fails with every
    /// problem found, not just the first.
    pub fn load(root: &Path) -> Result<Catalog, Vec<LoadError>> {
        let mut errors = Vec::new();
        let mut mappings = BTreeMap::new();
        let mut outbound = BTreeMap::new();
        let channels = match sorted_entries(root) {
            Ok(entries) => entries,
            Err(err) => return Err(vec![LoadError::at(root, err)]),
        };
        for channel_dir in channels.into_iter().filter(|p| p.is_dir()) {
            let Some(channel) = file_name(&channel_dir) else {
                continue;
            };
            if channel.starts_with(['.', '_']) {
                continue;
            }
            if !is_channel_name(&channel) {
                errors.push(LoadError::at(
                    &channel_dir,
                    "a channel folder is named in lower case letters, digits, '-' and '_'",
                ));
                continue;
            }
            load_channel(&channel, &channel_dir, &mut mappings, &mut errors);
            let outbound_dir = channel_dir.join(OUTBOUND_FOLDER);
            if outbound_dir.is_dir() {
                load_outbound(&channel, &outbound_dir, &mut outbound, &mut errors);
            }
        }
        if errors.is_empty() {
            Ok(Catalog { mappings, outbound })
        } else {
            Err(errors)
        }
    }

    /// The mapping of a channel's document (`mapping("amazon", "order")`).
    pub fn mapping(&self, channel: &str, document: &str) -> Option<Arc<Mapping>> {
        self.get(&format!("{channel}/{document}"))
    }

    /// A mapping by its name, `<channel>/<document>` (as `gateway transform --mapping` takes it).
    pub fn get(&self, name: &str) -> Option<Arc<Mapping>> {
        self.mappings.get(name).cloned()
    }

    /// A response mapping: `ack` (ERP acknowledgement -> canonical answer) or `error` (ERP
    /// error -> problem).
    pub fn response_mapping(&self, name: &str) -> Option<Arc<Mapping>> {
        self.mapping(RESPONSE_CHANNEL, name)
    }

    /// Every mapping, by name.
    pub fn mappings(&self) -> impl Iterator<Item = &Arc<Mapping>> {
        self.mappings.values()
    }

    /// The names of every mapping, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.mappings.keys().map(String::as_str)
    }

    /// The outbound mapping of a channel's operation (`outbound("amazon", "shipment")`).
    pub fn outbound(&self, channel: &str, operation: &str) -> Option<Arc<OutboundMapping>> {
        self.outbound
            .get(&format!("{channel}/{OUTBOUND_FOLDER}/{operation}"))
            .cloned()
    }

    /// Every outbound mapping, by name (`<channel>/outbound/<operation>`).
    pub fn outbound_mappings(&self) -> impl Iterator<Item = &Arc<OutboundMapping>> {
        self.outbound.values()
    }
}

fn load_channel(
    channel: &str,
    dir: &Path,
    mappings: &mut BTreeMap<String, Arc<Mapping>>,
    errors: &mut Vec<LoadError>,
) {
    let entries = match sorted_entries(dir) {
        Ok(entries) => entries,
        Err(err) => return errors.push(LoadError::at(dir, err)),
    };
    let mut loaded: BTreeMap<String, Mapping> = BTreeMap::new();
    for path in entries
        .iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "jq"))
    {
        let Some(document) = path.file_stem().and_then(|s| s.to_str()) else {
            errors.push(LoadError::at(path, "the file name is not UTF-8"));
            continue;
        };
        let source = match std::fs::read_to_string(path) {
            Ok(source) => source,
            Err(err) => {
                errors.push(LoadError::at(path, format!("cannot read: {err}")));
                continue;
            }
        };
        match Mapping::compile(channel, document, &source, path) {
            Ok(mapping) => {
                loaded.insert(document.to_owned(), mapping);
            }
            Err(mut found) => errors.append(&mut found),
        }
    }
    let cases_dir = dir.join("cases");
    if cases_dir.is_dir() {
        load_cases(&cases_dir, &mut loaded, errors);
    }
    for (document, mapping) in loaded {
        mappings.insert(format!("{channel}/{document}"), Arc::new(mapping));
    }
}

/// `<channel>/outbound/<operation>.jq` and `<channel>/outbound/cases/<operation>/`: the same
/// layout as a channel's inbound mappings, one level down.
fn load_outbound(
    channel: &str,
    dir: &Path,
    outbound: &mut BTreeMap<String, Arc<OutboundMapping>>,
    errors: &mut Vec<LoadError>,
) {
    let entries = match sorted_entries(dir) {
        Ok(entries) => entries,
        Err(err) => return errors.push(LoadError::at(dir, err)),
    };
    let mut loaded: BTreeMap<String, OutboundMapping> = BTreeMap::new();
    for path in entries
        .iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "jq"))
    {
        let Some(operation) = path.file_stem().and_then(|s| s.to_str()) else {
            errors.push(LoadError::at(path, "the file name is not UTF-8"));
            continue;
        };
        let source = match std::fs::read_to_string(path) {
            Ok(source) => source,
            Err(err) => {
                errors.push(LoadError::at(path, format!("cannot read: {err}")));
                continue;
            }
        };
        match OutboundMapping::compile(channel, operation, &source, path) {
            Ok(mapping) => {
                loaded.insert(operation.to_owned(), mapping);
            }
            Err(mut found) => errors.append(&mut found),
        }
    }
    let cases_dir = dir.join("cases");
    if cases_dir.is_dir() {
        let operations = match sorted_entries(&cases_dir) {
            Ok(entries) => entries,
            Err(err) => return errors.push(LoadError::at(&cases_dir, err)),
        };
        for case_dir in operations.into_iter().filter(|p| p.is_dir()) {
            let operation = file_name(&case_dir).unwrap_or_default();
            let Some(mapping) = loaded.get_mut(&operation) else {
                errors.push(LoadError::at(
                    &case_dir,
                    format!("golden cases for {operation:?}, which has no outbound mapping here"),
                ));
                continue;
            };
            match golden::load_cases(&case_dir) {
                Ok(cases) => mapping.cases = cases,
                Err(mut found) => errors.append(&mut found),
            }
        }
    }
    for (operation, mapping) in loaded {
        outbound.insert(
            format!("{channel}/{OUTBOUND_FOLDER}/{operation}"),
            Arc::new(mapping),
        );
    }
}

/// `cases/<document>/<name>.input.json` with `<name>.expected.json` beside it.
fn load_cases(dir: &Path, loaded: &mut BTreeMap<String, Mapping>, errors: &mut Vec<LoadError>) {
    let documents = match sorted_entries(dir) {
        Ok(entries) => entries,
        Err(err) => return errors.push(LoadError::at(dir, err)),
    };
    for case_dir in documents.into_iter().filter(|p| p.is_dir()) {
        let document = file_name(&case_dir).unwrap_or_default();
        let Some(mapping) = loaded.get_mut(&document) else {
            errors.push(LoadError::at(
                &case_dir,
                format!("golden cases for {document:?}, which has no mapping here"),
            ));
            continue;
        };
        match golden::load_cases(&case_dir) {
            Ok(cases) => mapping.cases = cases,
            Err(mut found) => errors.append(&mut found),
        }
    }
}

/// A mapping version: letters, digits, `-` and `_` (`v1`, `2025-01`).
fn is_version(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 32
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_channel_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && name.len() <= 32
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(document: &str, source: &str) -> Mapping {
        Mapping::compile("test", document, source, Path::new("test.jq")).expect("compiles")
    }

    /// The compiled form must answer the golden cases itself (a fast path that always left
    /// the run to jaq would pass every other test), and answer them as jaq does.
    #[test]
    fn the_compiled_form_answers_the_golden_cases() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let catalog = Catalog::load(&root).expect("the shipped mappings load");
        let mut answered = Vec::new();
        for mapping in catalog.mappings().filter(|m| m.runs_compiled()) {
            for case in mapping.golden_cases() {
                if case.expected_rejection().is_some() {
                    continue;
                }
                let jaq = mapping.program.run(value::to_jaq(case.input.clone()));
                let compiled = mapping.program.run_compiled(&case.input);
                assert_eq!(
                    compiled.as_ref(),
                    jaq.as_ref().ok(),
                    "{} {}: the compiled form answered differently from jaq",
                    mapping.name(),
                    case.name
                );
                answered.push(format!("{}/{}", mapping.name(), case.name));
            }
        }
        for name in ["amazon/order", "erp/ack"] {
            assert!(
                answered.iter().any(|a| a.starts_with(&format!("{name}/"))),
                "{name} has golden cases the compiled form answers: {answered:?}"
            );
        }
    }

    #[test]
    fn mappings_using_jq_the_compiled_form_does_not_know_run_on_jaq() {
        let plain = compile("order", "{status: \"accepted\", erp_document_id: .id}");
        assert!(plain.runs_compiled());
        let labelled = compile(
            "order",
            "label $out | {status: \"accepted\", erp_document_id: .id}",
        );
        assert!(!labelled.runs_compiled());
        // Both still map, the second through jaq.
        let input = json!({"id": "E-1"});
        assert_eq!(
            plain.program.run_json(input.clone()),
            labelled.program.run_json(input)
        );
    }

    #[test]
    fn mappings_are_shareable_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Mapping>();
        shareable::<Catalog>();
    }

    #[test]
    fn output_documents_follow_the_file_name() {
        assert_eq!(output_document("amazon", "order"), Some("order"));
        assert_eq!(
            output_document("amazon", "order_change"),
            Some("order_change")
        );
        assert_eq!(output_document("erp", "ack"), Some("answer"));
        assert_eq!(output_document("erp", "error"), Some("problem"));
        assert_eq!(output_document("amazon", "answer"), None);
        assert_eq!(output_document("amazon", "orders"), None);
        assert_eq!(output_document("amazon", "order.v1"), Some("order"));
        assert_eq!(output_document("amazon", "order."), None);
        assert_eq!(output_document("amazon", "order.v1.x"), None);
        assert_eq!(output_document("amazon", "orders.v1"), None);
        assert_eq!(output_document("erp", "ack.v1"), None);
    }

    #[test]
    fn an_invalid_output_is_a_mapping_error_never_a_document() {
        let mapping = compile(
            "shipment",
            r#"{id: "x", document_type: "shipment", model_version: "v1", channel: "test",
                channel_ids: {order_id: .o}, order_id: "test:\(.o)",
                shipped_at: .t, status: "shipped", lines: [{line_id: "1", quantity: 0}]}"#,
        );
        let err = mapping
            .apply(json!({"o": "1", "t": "2024-01-01 10:00"}))
            .expect_err("invalid output");
        assert!(!err.is_rejection());
        let TransformError::InvalidOutput {
            mapping,
            document,
            violations,
        } = &err
        else {
            panic!("expected InvalidOutput, got {err:?}");
        };
        assert_eq!((mapping.as_str(), *document), ("test/shipment", "shipment"));
        let pointers: Vec<&str> = violations
            .violations
            .iter()
            .map(|v| v.pointer.as_str())
            .collect();
        assert!(pointers.contains(&"/shipped_at"), "{pointers:?}");
        assert!(pointers.contains(&"/lines/0/quantity"), "{pointers:?}");
        assert!(
            err.to_string().contains("invalid canonical shipment"),
            "{err}"
        );
    }

    #[test]
    fn run_errors_name_the_mapping() {
        let mapping = compile("order", "if .bad then reject(\"bad order\") else .x[] end");
        let rejected = mapping.apply(json!({"bad": true})).expect_err("rejected");
        assert!(rejected.is_rejection());
        assert_eq!(rejected.mapping(), "test/order");
        assert!(matches!(
            mapping.apply(json!({"x": []})),
            Err(TransformError::NoOutput { .. })
        ));
        assert!(matches!(
            mapping.apply(json!({"x": [1, 2]})),
            Err(TransformError::SeveralOutputs { .. })
        ));
        assert!(matches!(
            mapping.apply(json!({"x": 5})),
            Err(TransformError::Failed { .. })
        ));
        let nan = compile("order", "nan");
        assert!(matches!(
            nan.apply(json!(null)),
            Err(TransformError::NotJson { .. })
        ));
    }

    #[test]
    fn unknown_documents_and_syntax_errors_are_load_errors() {
        let err = Mapping::compile("amazon", "orders", ".", Path::new("amazon/orders.jq"))
            .expect_err("unknown document");
        assert!(
            err[0].to_string().starts_with("amazon/orders.jq: "),
            "{}",
            err[0]
        );
        let err = Mapping::compile("amazon", "order", "{\n a: (1 +\n}", Path::new("a.jq"))
            .expect_err("syntax error");
        assert!(
            err.iter().any(|e| e.to_string().starts_with("a.jq:3:")),
            "{err:?}"
        );
    }

    #[test]
    fn a_missing_root_is_one_error() {
        let err = Catalog::load(Path::new("/nonexistent/mappings")).expect_err("missing");
        assert_eq!(err.len(), 1);
        assert!(err[0].to_string().contains("/nonexistent/mappings"));
    }
}
