//! The compiled form of the mappings answers exactly as jaq does: for every shipped mapping
//! and outbound mapping, every golden input and many deterministic mutations of it (members
//! removed, values of other types, numbers and timestamps in other spellings, arrays emptied,
//! duplicated, reordered, values copied from elsewhere in the document, pairs of these, the same
//! field of two list items edited each its own way) go through [`Mapping::apply`] (the compiled form when
//! the mapping has one) and [`Mapping::apply_interpreted`] (jaq alone), and both answers must be
//! equal: outputs as JSON values (numbers by their text, under `arbitrary_precision`), errors by
//! their message, a panic on either side is a difference too.
//!
//! The mutations are drawn from a seeded generator, so a run is reproducible; each golden input
//! gets a share of the work inverse to its size, which keeps the whole sweep within seconds in
//! a debug build. `DIFFERENTIAL_SEED=<n>` draws another sample and `DIFFERENTIAL_SCALE=<n>`
//! runs n times as many mutations (both for longer local hunts). A difference is reported with
//! the mapping, the golden case, the mutation (JSON Pointer and edit), both answers, and the
//! mutated input written under the test's target tmp dir.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use transforms::{Catalog, GoldenCase, Mapping, OutboundMapping, TransformError};

/// Bytes of mutated input each golden case gets to run (both ways), before `DIFFERENTIAL_SCALE`:
/// a 1 KB input gets every single mutation up to this over its size.
const BYTES_PER_CASE: usize = 1_200_000;
/// The fewest single mutations a golden case gets, however large it is.
const MIN_SINGLES: usize = 150;
/// Combinations of two mutations, grafts and parallel edits, each per single mutation run.
const PAIRS_PER_SINGLE: f64 = 0.2;
/// How many differences are described in the failure (all are counted).
const MAX_REPORTED: usize = 12;
/// Of an array, the first items and the last are walked (golden inputs repeat item shapes).
const ITEMS_WALKED: usize = 3;
/// How much of a value set by a mutation its description shows.
const DESCRIBED_CHARS: usize = 120;
/// How much of an answer a report shows.
const MAX_SHOWN_CHARS: usize = 1_500;

fn shipped() -> Catalog {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    match Catalog::load(&root) {
        Ok(catalog) => catalog,
        Err(errors) => {
            let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("the shipped mappings do not load:\n{}", listed.join("\n"));
        }
    }
}

/// An inbound or outbound mapping, run both ways.
enum Subject {
    Inbound(Arc<Mapping>),
    Outbound(Arc<OutboundMapping>),
}

impl Subject {
    fn all(catalog: &Catalog) -> Vec<Subject> {
        let inbound = catalog.mappings().cloned().map(Subject::Inbound);
        let outbound = catalog.outbound_mappings().cloned().map(Subject::Outbound);
        inbound.chain(outbound).collect()
    }

    fn name(&self) -> &str {
        match self {
            Subject::Inbound(m) => m.name(),
            Subject::Outbound(m) => m.name(),
        }
    }

    fn runs_compiled(&self) -> bool {
        match self {
            Subject::Inbound(m) => m.runs_compiled(),
            Subject::Outbound(m) => m.runs_compiled(),
        }
    }

    fn cases(&self) -> &[GoldenCase] {
        match self {
            Subject::Inbound(m) => m.golden_cases(),
            Subject::Outbound(m) => m.golden_cases(),
        }
    }

    /// `apply`: the compiled form when there is one (jaq for the rest).
    fn compiled(&self, input: Value) -> Outcome {
        match self {
            Subject::Inbound(m) => outcome(|| m.apply(input)),
            Subject::Outbound(m) => outcome(|| m.apply(input).map(|r| r.to_value())),
        }
    }

    /// `apply_interpreted`: jaq alone.
    fn interpreted(&self, input: Value) -> Outcome {
        match self {
            Subject::Inbound(m) => outcome(|| m.apply_interpreted(input)),
            Subject::Outbound(m) => outcome(|| m.apply_interpreted(input).map(|r| r.to_value())),
        }
    }
}

/// What one run answered. An outbound request compares as its `{method, path, body}`.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Output(Value),
    /// The error's `Display` text (it names the mapping, the kind and the message).
    Error(String),
    Panic(String),
}

impl Outcome {
    fn shown(&self) -> String {
        let text = match self {
            Outcome::Output(value) => format!("Ok {value}"),
            Outcome::Error(message) => format!("Err {message}"),
            Outcome::Panic(message) => format!("PANIC {message}"),
        };
        shorten(&text)
    }
}

fn outcome(run: impl FnOnce() -> Result<Value, TransformError>) -> Outcome {
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(value)) => Outcome::Output(value),
        Ok(Err(err)) => Outcome::Error(err.to_string()),
        Err(payload) => Outcome::Panic(
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "(a panic without a message)".to_owned()),
        ),
    }
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((at, _)) => format!("{} ... ({} bytes in all)", &text[..at], text.len()),
        None => text.to_owned(),
    }
}

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// RFC 6901 pointer of a path (`""` is the whole document).
fn pointer(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(key) => {
                let _ = write!(out, "/{}", key.replace('~', "~0").replace('/', "~1"));
            }
            Step::Index(i) => {
                let _ = write!(out, "/{i}");
            }
        }
    }
    out
}

/// What a mutation does at its path.
#[derive(Debug, Clone, PartialEq)]
enum Edit {
    /// The object member or array item is removed.
    Remove,
    /// The value is replaced.
    Set(Value),
    /// The array loses every item.
    Empty,
    /// The array's first item appears twice.
    Duplicate,
    /// The array's first and last items trade places.
    Swap,
    /// The object gains a member no mapping knows.
    AddMember,
    /// The value is replaced by a copy of the value at another place of the document (the
    /// pointer): realistic data of the wrong shape.
    Graft(String, Value),
}

#[derive(Debug, Clone, PartialEq)]
struct Mutation {
    at: Vec<Step>,
    edit: Edit,
}

impl Mutation {
    fn new(at: &[Step], edit: Edit) -> Mutation {
        Mutation {
            at: at.to_vec(),
            edit,
        }
    }

    fn describe(&self) -> String {
        let at = pointer(&self.at);
        let at = if at.is_empty() { "(root)" } else { &at };
        match &self.edit {
            Edit::Remove => format!("{at} removed"),
            Edit::Set(value) => {
                let value = value.to_string();
                match value.char_indices().nth(DESCRIBED_CHARS) {
                    Some((cut, _)) => format!("{at} set to {}...", &value[..cut]),
                    None => format!("{at} set to {value}"),
                }
            }
            Edit::Empty => format!("{at} emptied"),
            Edit::Duplicate => format!("{at}: first item duplicated"),
            Edit::Swap => format!("{at}: first and last items swapped"),
            Edit::AddMember => format!("{at}: unknown member added"),
            Edit::Graft(from, _) => format!("{at} set to a copy of {from}"),
        }
    }

    /// Applies the edit; false when the path no longer leads anywhere (after another edit).
    fn apply(&self, document: &mut Value) -> bool {
        if self.edit == Edit::Remove {
            let Some((last, parent)) = self.at.split_last() else {
                return false;
            };
            return match (last, node_mut(document, parent)) {
                (Step::Key(key), Some(Value::Object(members))) => members.remove(key).is_some(),
                (Step::Index(i), Some(Value::Array(items))) if *i < items.len() => {
                    items.remove(*i);
                    true
                }
                _ => false,
            };
        }
        let Some(node) = node_mut(document, &self.at) else {
            return false;
        };
        match (&self.edit, node) {
            (Edit::Set(value) | Edit::Graft(_, value), node) => {
                *node = value.clone();
                true
            }
            (Edit::Empty, Value::Array(items)) => {
                items.clear();
                true
            }
            (Edit::Duplicate, Value::Array(items)) if !items.is_empty() => {
                let first = items[0].clone();
                items.insert(1, first);
                true
            }
            (Edit::Swap, Value::Array(items)) if items.len() >= 2 => {
                let last = items.len() - 1;
                items.swap(0, last);
                true
            }
            (Edit::AddMember, Value::Object(members)) => {
                members.insert("zz_unexpected".to_owned(), json!({"x": [1, "y"]}));
                true
            }
            _ => false,
        }
    }
}

fn node<'a>(document: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    steps
        .iter()
        .try_fold(document, |at, step| match (step, at) {
            (Step::Key(key), Value::Object(members)) => members.get(key),
            (Step::Index(i), Value::Array(items)) => items.get(*i),
            _ => None,
        })
}

fn node_mut<'a>(document: &'a mut Value, steps: &[Step]) -> Option<&'a mut Value> {
    let mut at = document;
    for step in steps {
        at = match (step, at) {
            (Step::Key(key), Value::Object(members)) => members.get_mut(key)?,
            (Step::Index(i), Value::Array(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(at)
}

/// A JSON value from its text, keeping the number's spelling (`arbitrary_precision`).
fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("{text:?} is not JSON: {err}"))
}

/// What any value may be replaced by: every JSON type, and the numbers and strings mappings
/// most often trip on.
fn replacements() -> Vec<Value> {
    vec![
        Value::Null,
        json!(""),
        parsed("0"),
        parsed("-1"),
        parsed("1.5"),
        json!("abc"),
        json!(true),
        json!([]),
        json!({}),
        json!([null]),
    ]
}

/// Other spellings of a number: exponent, trailing zeros, negative zero, beyond 64 bits,
/// past an f64's integers and range, a sum f64 cannot hold exactly.
const NUMBER_TEXTS: [&str; 16] = [
    "0.0",
    "1e2",
    "-0",
    "0.10",
    "12345678901234567890",
    "-12.345",
    "1E-7",
    "1.0",
    "-0.0",
    "100",
    "9007199254740993",
    "1e400",
    "0.30000000000000004",
    "-19.99",
    "0.123456789012345678901234567890",
    "1e-400",
];

/// Strings a decimal amount or number-like id may arrive as.
const NUMBER_LIKE_STRINGS: [&str; 17] = [
    "12",
    "1e2",
    "-0.00",
    "0.1",
    "12345678901234567890.123456789",
    "1,5",
    " 1",
    "NaN",
    "-5",
    "+1",
    ".5",
    "5.",
    "1E+2",
    "1e400",
    "00012",
    "0x1F",
    "Infinity",
];

/// Other strings: case, whitespace, non-ASCII, characters that need escaping in JSON or a URL.
const ODD_STRINGS: [&str; 8] = [
    "ABC def",
    "  padded  ",
    "Ünïcödé ✓ 日本",
    "q\"uote\\ /\n\t",
    "true",
    "null",
    " ",
    // What an id in an outbound path must survive percent-encoded.
    "A/B?c=d&e#f%20+ ~é",
];

fn looks_like_currency(key: Option<&str>, text: &str) -> bool {
    let three_capitals = text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase());
    let currency_key = key.is_some_and(|k| k.to_ascii_lowercase().contains("currency"));
    three_capitals || currency_key
}

fn looks_like_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|b| *b == b'.').count() <= 1
}

/// Other spellings of an RFC 3339 timestamp or date: without its offset, another offset,
/// fractions of a second, a space for the `T`, the date alone, and impossible ones.
fn timestamp_variants(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let is_date = bytes.len() >= 10
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[7] == b'-';
    if !is_date {
        return Vec::new();
    }
    let date = &text[..10];
    let mut out = vec![date.to_owned(), format!("{date}T00:00:00")];
    if bytes.len() >= 19 && matches!(bytes[10], b'T' | b't' | b' ') {
        let len = bytes.len();
        let offset_at = if matches!(bytes[len - 1], b'Z' | b'z') {
            Some(len - 1)
        } else if len >= 25 && matches!(bytes[len - 6], b'+' | b'-') && bytes[len - 3] == b':' {
            Some(len - 6)
        } else {
            None
        };
        let local = &text[..offset_at.unwrap_or(len)];
        let seconds = &text[..19];
        out.extend([
            local.to_owned(),
            format!("{local}+14:00"),
            format!("{local}-03:30"),
            format!("{seconds}.123456789Z"),
            format!("{seconds}.5{}", &text[offset_at.unwrap_or(len)..]),
            format!("{date} {}Z", &text[11..19]),
            format!("{date}T23:59:60Z"),
        ]);
    }
    out.extend(["2024-13-01T00:00:00Z".to_owned(), "2024-02-30".to_owned()]);
    out.retain(|variant| variant != text);
    out
}

/// Every single mutation of a document, in document order (neighbours in the list are
/// neighbours in the document).
fn mutations(document: &Value) -> Vec<Mutation> {
    let mut out = Vec::new();
    walk(document, &mut Vec::new(), None, &mut out);
    out
}

fn walk(value: &Value, at: &mut Vec<Step>, key: Option<&str>, out: &mut Vec<Mutation>) {
    if !at.is_empty() {
        out.push(Mutation::new(at, Edit::Remove));
    }
    let mut set = |replacement: Value| {
        if replacement != *value {
            out.push(Mutation::new(at, Edit::Set(replacement)));
        }
    };
    for replacement in replacements() {
        set(replacement);
    }
    // The value itself one level down: a list where one was expected, or the other way round.
    set(Value::Array(vec![value.clone()]));
    if let Value::Array(items) = value
        && let [only] = items.as_slice()
    {
        set(only.clone());
    }
    match value {
        Value::Null => {}
        Value::Bool(flag) => set(Value::Bool(!flag)),
        Value::Number(number) => {
            for text in NUMBER_TEXTS {
                set(parsed(text));
            }
            // The same number as a string: a type mix-up channels do make.
            set(Value::String(number.to_string()));
        }
        Value::String(text) => {
            let mut strings: Vec<String> = vec!["12".to_owned()];
            if looks_like_currency(key, text) {
                strings.extend(["EUR", "ZZZ", "eur", "EURO"].map(str::to_owned));
            }
            if looks_like_decimal(text) {
                strings.extend(NUMBER_LIKE_STRINGS.map(str::to_owned));
                // The same decimal as a number, when its text is a JSON number (not `007`).
                if let Ok(number @ Value::Number(_)) = serde_json::from_str::<Value>(text) {
                    set(number);
                }
            }
            strings.extend(timestamp_variants(text));
            strings.extend(ODD_STRINGS.map(str::to_owned));
            strings.push(text.to_uppercase());
            for string in strings {
                set(Value::String(string));
            }
        }
        Value::Array(items) => {
            if !items.is_empty() {
                out.push(Mutation::new(at, Edit::Empty));
                out.push(Mutation::new(at, Edit::Duplicate));
            }
            if items.len() >= 2 {
                out.push(Mutation::new(at, Edit::Swap));
            }
            let last = items.len().saturating_sub(1);
            for (i, item) in items.iter().enumerate() {
                if i < ITEMS_WALKED || i == last {
                    at.push(Step::Index(i));
                    walk(item, at, None, out);
                    at.pop();
                }
            }
        }
        Value::Object(members) => {
            out.push(Mutation::new(at, Edit::AddMember));
            for (name, member) in members {
                at.push(Step::Key(name.clone()));
                walk(member, at, Some(name), out);
                at.pop();
            }
        }
    }
}

/// splitmix64: small, seedable, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
}

/// FNV-1a of a name, so each golden case draws its own sequence.
fn seed_of(name: &str, seed: u64) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325 ^ seed, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|err| panic!("{name}={text:?}: not a number: {err}")),
        Err(_) => default,
    }
}

/// The inputs one golden case is run with: the golden input itself, a seeded sample of its
/// single mutations (all of them for small inputs), and combinations of two, half of them of
/// mutations close together in the document (an amount and its currency, a line's fields).
fn sample(case: &GoldenCase, seed: u64, scale: u64) -> Vec<(String, Value)> {
    let mut inputs = vec![("(the golden input)".to_owned(), case.input.clone())];
    let singles = mutations(&case.input);
    if singles.is_empty() {
        return inputs;
    }
    let size = case.input.to_string().len().max(1);
    let budget = usize::try_from(scale)
        .unwrap_or(1)
        .saturating_mul((BYTES_PER_CASE / size).max(MIN_SINGLES));
    let mut rng = Rng(seed);
    let mut order: Vec<usize> = (0..singles.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    for &i in order.iter().take(budget) {
        let mut input = case.input.clone();
        if singles[i].apply(&mut input) {
            inputs.push((singles[i].describe(), input));
        }
    }
    // Small inputs run every single mutation at any scale; the scale still multiplies their
    // combinations.
    let singles_run = (budget / usize::try_from(scale).unwrap_or(1).max(1)).min(singles.len());
    let pairs = (singles_run as f64 * PAIRS_PER_SINGLE * scale as f64) as usize;
    for n in 0..pairs {
        let first = rng.below(singles.len());
        let second = if n % 2 == 0 {
            (first + 1 + rng.below(40)) % singles.len()
        } else {
            rng.below(singles.len())
        };
        let (a, b) = (&singles[first], &singles[second]);
        let mut input = case.input.clone();
        if a.at != b.at && a.apply(&mut input) && b.apply(&mut input) {
            inputs.push((format!("{}, then {}", a.describe(), b.describe()), input));
        }
    }
    // Grafts: one place of the document takes the value of another.
    let mut places: Vec<&[Step]> = singles.iter().map(|m| m.at.as_slice()).collect();
    places.dedup();
    for _ in 0..pairs {
        let (to, from) = (
            places[rng.below(places.len())],
            places[rng.below(places.len())],
        );
        let Some(value) = node(&case.input, from) else {
            continue;
        };
        let graft = Mutation::new(to, Edit::Graft(pointer(from), value.clone()));
        let mut input = case.input.clone();
        if to != from && graft.apply(&mut input) && input != case.input {
            inputs.push((graft.describe(), input));
        }
    }
    // Parallel edits: the same field of two items of a list edited each its own way (two
    // lines' statuses as `100` and `1e2`), for what gathers over items (`unique`, `join`, sums).
    let mut by_shape: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, single) in singles.iter().enumerate() {
        if single.at.iter().any(|step| matches!(step, Step::Index(_))) {
            by_shape.entry(shape(&single.at)).or_default().push(i);
        }
    }
    let shapes: Vec<&Vec<usize>> = by_shape
        .values()
        .filter(|group| group.iter().any(|&i| singles[i].at != singles[group[0]].at))
        .collect();
    if !shapes.is_empty() {
        for _ in 0..pairs {
            let group = shapes[rng.below(shapes.len())];
            let (a, b) = (
                &singles[group[rng.below(group.len())]],
                &singles[group[rng.below(group.len())]],
            );
            let mut input = case.input.clone();
            if a.at != b.at && a.apply(&mut input) && b.apply(&mut input) {
                inputs.push((format!("{}, and {}", a.describe(), b.describe()), input));
            }
        }
    }
    inputs
}

/// A path with its list indices left out (`/lines/*/status`): the same field of any item.
fn shape(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(key) => {
                let _ = write!(out, "/{}", key.replace('~', "~0").replace('/', "~1"));
            }
            Step::Index(_) => out.push_str("/*"),
        }
    }
    out
}

/// Where the mutated input of a difference is written.
fn reproducer_path(mapping: &str, case: &str, n: usize) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("differential")
        .join(format!(
            "{}-{case}-{n}.input.json",
            mapping.replace('/', "_")
        ))
}

/// What the runs of one mapping came to, shown per mapping (`--nocapture`): how many inputs
/// mapped to an output (the rest were errors, which the compiled form leaves to jaq) and the
/// time spent in `apply` and in jaq, which shows whether the compiled form answered at all.
#[derive(Default)]
struct Tally {
    inputs: usize,
    mapped: usize,
    apply: Duration,
    jaq: Duration,
}

/// Runs one input both ways; a description of the difference when they disagree.
fn compare(
    subject: &Subject,
    case: &str,
    mutation: &str,
    input: Value,
    tally: &mut Tally,
) -> Option<String> {
    let runs = (
        |input| subject.compiled(input),
        |input| subject.interpreted(input),
    );
    compare_runs(subject.name(), case, mutation, input, runs, tally)
}

/// [`compare`] with the two runs given (so a test can rig one).
fn compare_runs(
    name: &str,
    case: &str,
    mutation: &str,
    input: Value,
    (compiled, interpreted): (impl Fn(Value) -> Outcome, impl Fn(Value) -> Outcome),
    tally: &mut Tally,
) -> Option<String> {
    let started = Instant::now();
    let compiled = compiled(input.clone());
    tally.apply += started.elapsed();
    let started = Instant::now();
    let interpreted = interpreted(input);
    tally.jaq += started.elapsed();
    tally.inputs += 1;
    if compiled == interpreted {
        tally.mapped += usize::from(matches!(compiled, Outcome::Output(_)));
        return None;
    }
    let mut report = format!(
        "{name} / case {case} / {mutation}\n  compiled: {}\n  jaq:      {}\n",
        compiled.shown(),
        interpreted.shown()
    );
    if let (Outcome::Output(c), Outcome::Output(i)) = (&compiled, &interpreted) {
        let diff = transforms::golden::diff(i, c);
        let _ = writeln!(
            report,
            "  diff (jaq -> compiled):\n    {}",
            diff.join("\n    ")
        );
    }
    Some(report)
}

#[test]
fn the_compiled_form_answers_as_jaq_does() {
    let catalog = shipped();
    let seed = env_number("DIFFERENTIAL_SEED", 0);
    let scale = env_number("DIFFERENTIAL_SCALE", 1).max(1);
    let mut differences: Vec<String> = Vec::new();
    let mut count = 0usize;
    let mut runs = 0usize;
    for subject in Subject::all(&catalog) {
        let mut tally = Tally::default();
        for case in subject.cases() {
            let name = format!("{}/{}", subject.name(), case.name);
            for (mutation, input) in sample(case, seed_of(&name, seed), scale) {
                let Some(mut report) =
                    compare(&subject, &case.name, &mutation, input.clone(), &mut tally)
                else {
                    continue;
                };
                count += 1;
                if differences.len() < MAX_REPORTED {
                    let path = reproducer_path(subject.name(), &case.name, count);
                    let written = path
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| {
                            let text = serde_json::to_string_pretty(&input).unwrap_or_default();
                            std::fs::write(&path, text)
                        });
                    let _ = match written {
                        Ok(()) => writeln!(report, "  input: {}", path.display()),
                        Err(err) => writeln!(report, "  input not written: {err}"),
                    };
                    differences.push(report);
                }
            }
        }
        eprintln!(
            "{:<28} {:<8} {:>2} cases {:>5} inputs {:>5} mapped; apply {:>8.2?}, jaq {:>8.2?}",
            subject.name(),
            if subject.runs_compiled() {
                "compiled"
            } else {
                "jaq only"
            },
            subject.cases().len(),
            tally.inputs,
            tally.mapped,
            tally.apply,
            tally.jaq,
        );
        runs += tally.inputs;
    }
    assert!(runs > 0, "no golden inputs ran");
    assert!(
        differences.is_empty(),
        "the compiled form answered differently from jaq on {count} of {runs} inputs \
         (seed {seed}, scale {scale}); the first {}:\n\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// Every shipped mapping runs compiled (a mapping that fell back to jaq would keep passing the
/// comparison above while costing several times more).
#[test]
fn the_main_mappings_run_compiled() {
    let catalog = shipped();
    let subjects = Subject::all(&catalog);
    let compiled: Vec<&str> = subjects
        .iter()
        .filter(|s| s.runs_compiled())
        .map(Subject::name)
        .collect();
    let interpreted: Vec<&str> = subjects
        .iter()
        .filter(|s| !s.runs_compiled())
        .map(Subject::name)
        .collect();
    eprintln!("compiled: {compiled:?}\njaq only: {interpreted:?}");
    for name in ["amazon/order", "erp/ack"] {
        assert!(
            compiled.contains(&name),
            "{name} does not run compiled; compiled: {compiled:?}"
        );
    }
    assert!(interpreted.is_empty(), "jaq only: {interpreted:?}");
}

/// The comparison bites: a rigged "compiled form" that adds a member to every output, or a
/// word to every error, is caught on every input, and the report names the mapping, the case,
/// the mutation and both answers.
#[test]
fn a_difference_names_the_mapping_the_mutation_and_both_answers() {
    let catalog = shipped();
    let ack = catalog.response_mapping("ack").expect("erp/ack is shipped");
    let case = ack
        .golden_cases()
        .first()
        .expect("erp/ack has a golden case");
    let jaq = |input| outcome(|| ack.apply_interpreted(input));
    let rigged = |input| match jaq(input) {
        Outcome::Output(Value::Object(mut members)) => {
            members.insert("rigged".to_owned(), parsed("1.0"));
            Outcome::Output(Value::Object(members))
        }
        Outcome::Error(message) => Outcome::Error(format!("{message}!")),
        other => other,
    };
    let mut tally = Tally::default();
    let inputs = sample(case, 0, 1);
    let mut reports = Vec::new();
    for (mutation, input) in &inputs {
        let report = compare_runs(
            "erp/ack",
            &case.name,
            mutation,
            input.clone(),
            (rigged, jaq),
            &mut tally,
        );
        reports.push(report.unwrap_or_else(|| panic!("{mutation}: the rigged answer passed")));
    }
    assert_eq!(reports.len(), inputs.len());
    let golden = &reports[0];
    assert!(
        golden.starts_with(&format!(
            "erp/ack / case {} / (the golden input)\n",
            case.name
        )),
        "{golden}"
    );
    assert!(golden.contains("  compiled: Ok {"), "{golden}");
    assert!(golden.contains("  jaq:      Ok {"), "{golden}");
    assert!(golden.contains("/rigged: unexpected 1.0"), "{golden}");
    let error = reports
        .iter()
        .find(|r| r.contains("  jaq:      Err "))
        .expect("some mutation of the ack is an error");
    assert!(error.contains("!\n"), "{error}");
}

#[test]
fn outcomes_compare_numbers_by_their_text_and_errors_by_their_message() {
    // The exactness the gateway promises: 1.0 and 1.00 are different outputs.
    assert_ne!(
        Outcome::Output(parsed(r#"{"a": 1.0}"#)),
        Outcome::Output(parsed(r#"{"a": 1.00}"#))
    );
    assert_eq!(
        Outcome::Output(parsed(r#"{"b": 2, "a": 1.0}"#)),
        Outcome::Output(parsed(r#"{"a": 1.0, "b": 2}"#))
    );
    let rejected = |message: &str| {
        outcome(|| {
            Err(TransformError::Rejected {
                mapping: "x/order".to_owned(),
                message: message.to_owned(),
            })
        })
    };
    assert_eq!(rejected("no lines"), rejected("no lines"));
    assert_ne!(rejected("no lines"), rejected("no items"));
    let panicked = outcome(|| panic!("boom"));
    assert_eq!(panicked, Outcome::Panic("boom".to_owned()));
}

#[test]
fn mutations_cover_the_document_and_are_reproducible() {
    let document = parsed(
        r#"{"Amount": {"CurrencyCode": "USD", "Amount": "19.99"},
            "PurchaseDate": "2024-11-28T12:00:00Z", "Qty": 2, "Gift": false,
            "Items": [{"Id": "a"}, {"Id": "b"}, {"Id": "c"}, {"Id": "d"}, {"Id": "e"}]}"#,
    );
    let all = mutations(&document);
    let described: Vec<String> = all.iter().map(Mutation::describe).collect();
    for expected in [
        "/Amount/CurrencyCode removed",
        "/Amount/CurrencyCode set to \"EUR\"",
        "/Amount/CurrencyCode set to \"ZZZ\"",
        "/Amount/Amount set to \"12\"",
        "/Amount/Amount set to 19.99",
        "/PurchaseDate set to \"2024-11-28T12:00:00\"",
        "/Qty set to null",
        "/Qty set to \"2\"",
        // serde_json keeps a number's digits, but spells its exponent `e+2`.
        "/Qty set to 1e+2",
        "/Gift set to true",
        "/Items emptied",
        "/Items: first item duplicated",
        "/Items: first and last items swapped",
        "/Items/4/Id set to {}",
        "(root): unknown member added",
    ] {
        assert!(
            described.iter().any(|d| d == expected),
            "no mutation {expected:?} among {described:#?}"
        );
    }
    // Items past the first three (but the last) have the same shape and are not walked.
    assert!(!described.iter().any(|d| d.starts_with("/Items/3")));
    for mutation in &all {
        let mut copy = document.clone();
        assert!(mutation.apply(&mut copy), "{} applies", mutation.describe());
        assert_ne!(
            copy,
            document,
            "{} changes the document",
            mutation.describe()
        );
    }
    let case = GoldenCase {
        name: "t".to_owned(),
        input_path: PathBuf::new(),
        expected_path: PathBuf::new(),
        input: document,
        expected: Value::Object(Map::new()),
    };
    let once = sample(&case, 7, 1);
    let again = sample(&case, 7, 1);
    assert_eq!(once, again, "the same seed draws the same inputs");
    assert_ne!(once, sample(&case, 8, 1), "another seed draws others");
    assert!(
        once.len() > all.len(),
        "a small input gets every mutation and pairs"
    );
}
