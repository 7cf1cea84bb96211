//! Compiling a jq program once and running it on one JSON value: the jaq embedding, its
//! error positions and its exceptions, behind a small surface.

use std::sync::LazyLock;

use jaq_core::load::{self, Arena, File, Loader, parse::Def};
use jaq_core::{Compiler, Ctx, Vars};
use jaq_json::Val;

use crate::compiled;
use crate::natives::{self, Data};
use crate::objects;
use crate::value::{self, NotJson};

/// The helpers written in jq that every mapping sees (see `prelude.jq`).
const PRELUDE: &str = include_str!("prelude.jq");

/// The jq definitions of the standard library and ours, parsed once per process.
/// Standard definitions that `natives` implements natively are left out, so the native is
/// the one names resolve to.
static DEFS: LazyLock<Vec<Def<&'static str>>> = LazyLock::new(|| {
    let ours = load::parse(PRELUDE, |p| p.defs()).unwrap_or_default();
    jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs())
        .filter(|def| !natives::NATIVE_OVERRIDES.contains(&(def.name, def.args.len())))
        .chain(ours)
        .collect()
});

/// The definition holding a rewritten mapping, and the whole main filter calling it.
const MAIN: &str = "__mapping";

/// A problem in a jq source file, with the 1-based line and column jaq points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

/// A compiled jq program, ready to run any number of times from any thread.
///
/// Two forms of the same program: jaq's, which runs any jq, and, when the mapping keeps to
/// the part of jq `compiled` knows, a tree of Rust closures over `serde_json::Value` that runs
/// it without converting the document or interpreting jq's definitions on every request. The
/// compiled form answers only what it is sure of (one output, no error); anything else is run
/// again by jaq, so errors and their messages are always jaq's.
pub struct Program {
    filter: jaq_core::Filter<Data>,
    compiled: Option<compiled::Program>,
}

/// How one run of a program failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The program called `reject(msg)`: the input is not acceptable.
    Rejected(String),
    /// Any other jq error (`error(...)`, a type error, a failing native).
    Failed(String),
    /// The program produced no output.
    NoOutput,
    /// The program produced more than one output.
    SeveralOutputs,
    /// The output has no JSON form.
    NotJson(NotJson),
}

impl Program {
    /// Parses and compiles `code`; every problem found is returned.
    pub fn compile(code: &str) -> Result<Program, Vec<SourceError>> {
        let mut program = match Self::compile_rewritten(code) {
            Some(program) => program,
            // Whatever did not compile that way (a syntax error, an undefined name, a module
            // import) is compiled as written, whose errors point at the mapping's own text.
            None => Self::compile_as_written(code)?,
        };
        program.compiled = compiled::Program::compile(code, PRELUDE);
        Ok(program)
    }

    /// Whether runs take the compiled form (see [`Program`]).
    pub fn is_compiled(&self) -> bool {
        self.compiled.is_some()
    }

    /// The compiled form's answer alone: `None` when there is no compiled form or it leaves
    /// the run to jaq.
    #[cfg(test)]
    pub(crate) fn run_compiled(&self, input: &serde_json::Value) -> Option<serde_json::Value> {
        self.compiled.as_ref()?.run(input)
    }

    /// Runs the program on one JSON document: the compiled form when there is one and it is
    /// sure of its answer, else jaq.
    pub fn run_json(&self, input: serde_json::Value) -> Result<serde_json::Value, RunError> {
        if let Some(compiled) = &self.compiled
            && let Some(output) = compiled.run(&input)
        {
            return Ok(output);
        }
        self.run(value::to_jaq(input))
    }

    /// Compiles `code` with its object constructions rewritten (see `objects`). The mapping
    /// is parsed as one term and compiled as the body of a definition the main filter calls,
    /// because jaq's loader takes source text, not terms; its slices still point into `code`.
    fn compile_rewritten(code: &str) -> Option<Program> {
        let mut body = load::parse(code, |p| p.term())?;
        objects::rewrite(&mut body);
        let main = Def {
            name: MAIN,
            args: Vec::new(),
            body,
        };
        let arena = Arena::default();
        let loader = Loader::new(DEFS.iter().cloned().chain([main]));
        let modules = loader
            .load(
                &arena,
                File {
                    code: MAIN,
                    path: (),
                },
            )
            .ok()?;
        let filter = Compiler::default()
            .with_funs(all_natives())
            .compile(modules)
            .ok()?;
        Some(Program {
            filter,
            compiled: None,
        })
    }

    fn compile_as_written(code: &str) -> Result<Program, Vec<SourceError>> {
        let arena = Arena::default();
        let loader = Loader::new(DEFS.iter().cloned());
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errors| {
                errors
                    .into_iter()
                    .flat_map(|(_file, error)| load_errors(code, error))
                    .collect::<Vec<_>>()
            })?;
        let filter = Compiler::default()
            .with_funs(all_natives())
            .compile(modules)
            .map_err(|errors| {
                errors
                    .into_iter()
                    .flat_map(|(_file, errors)| errors)
                    .map(|(name, undefined)| {
                        let (line, column) = position(code, name);
                        SourceError {
                            line,
                            column,
                            message: format!("undefined {} `{name}`", undefined.as_str()),
                        }
                    })
                    .collect::<Vec<_>>()
            })?;
        Ok(Program {
            filter,
            compiled: None,
        })
    }

    /// Runs the program's jaq form on one input; exactly one output is expected.
    pub fn run(&self, input: Val) -> Result<serde_json::Value, RunError> {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = self.filter.id.run((ctx, input));
        let first = match outputs.next() {
            None => return Err(RunError::NoOutput),
            Some(result) => result.map_err(exception)?,
        };
        if outputs.next().is_some() {
            return Err(RunError::SeveralOutputs);
        }
        value::from_jaq(first).map_err(RunError::NotJson)
    }
}

/// Sorts a jq exception into a rejection or a failure, without ever letting `halt` end the
/// process (jaq's own `unwrap_valr` would).
fn exception(exn: jaq_core::Exn<'_, Val>) -> RunError {
    match exn.get_err() {
        Ok(error) => {
            let val = error.into_val();
            if let Val::Obj(map) = &val
                && let Some(message) = map.get(&Val::utf8_str("rejected"))
            {
                return RunError::Rejected(text_of(message));
            }
            RunError::Failed(text_of(&val))
        }
        Err(other) => RunError::Failed(match other.get_halt() {
            Ok(code) => format!("the mapping halted with exit code {code}"),
            Err(_) => "the mapping ended with an unexpected control-flow exception".to_owned(),
        }),
    }
}

/// A string's own text, anything else as compact JSON.
fn text_of(val: &Val) -> String {
    match value::as_str(val) {
        Some(text) => text.to_owned(),
        None => val.to_string(),
    }
}

fn load_errors(code: &str, error: load::Error<&str>) -> Vec<SourceError> {
    let at = |slice: &str, message: String| {
        let (line, column) = position(code, slice);
        SourceError {
            line,
            column,
            message,
        }
    };
    match error {
        load::Error::Io(errors) => errors
            .into_iter()
            .map(|(path, message)| at(path, format!("cannot load module {path:?}: {message}")))
            .collect(),
        load::Error::Lex(errors) => errors
            .into_iter()
            .map(|(expect, found)| {
                at(
                    found,
                    format!("expected {} but found {}", expect.as_str(), snippet(found)),
                )
            })
            .collect(),
        load::Error::Parse(errors) => errors
            .into_iter()
            .map(|(expect, found)| {
                at(
                    found,
                    format!("expected {} but found {}", expect.as_str(), snippet(found)),
                )
            })
            .collect(),
    }
}

/// What jaq found, shortened to its first line.
fn snippet(found: &str) -> String {
    let line = found.lines().next().unwrap_or_default();
    if line.is_empty() {
        "end of input".to_owned()
    } else if line.chars().count() > 30 {
        format!("`{}...`", line.chars().take(30).collect::<String>())
    } else {
        format!("`{line}`")
    }
}

/// The 1-based line and column of `part` inside `whole`, when `part` is a slice of it (jaq
/// reports positions as slices of the source; slices of the standard library are not ours).
fn position(whole: &str, part: &str) -> (Option<usize>, Option<usize>) {
    let start = whole.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    if at < start || at > start + whole.len() {
        return (None, None);
    }
    let offset = at - start;
    let before = whole.get(..offset).unwrap_or(whole);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (Some(line), Some(column))
}

/// Every native a program can call: the standard ones (some disarmed), ours, and the one-step
/// object and string builders that rewritten mappings call.
fn all_natives() -> Vec<jaq_core::native::Fun<Data>> {
    let mut funs = natives::all();
    funs.extend(objects::funs());
    funs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(code: &str, input: serde_json::Value) -> Result<serde_json::Value, RunError> {
        Program::compile(code)
            .expect("test program compiles")
            .run(value::to_jaq(input))
    }

    #[test]
    fn the_prelude_parses() {
        assert!(load::parse(PRELUDE, |p| p.defs()).is_some_and(|defs| !defs.is_empty()));
    }

    #[test]
    fn programs_run_with_natives() {
        assert_eq!(
            run("decimal_add(.a; .b)", json!({"a": "0.10", "b": "0.20"})),
            Ok(json!("0.30"))
        );
        assert_eq!(
            run("decimal_sub(.a; .b)", json!({"a": "1.00", "b": "0.25"})),
            Ok(json!("0.75"))
        );
    }

    #[test]
    fn native_overrides_keep_jq_semantics() {
        let types = run("[.[] | type]", json!([null, true, 1, "s", [], {}]));
        assert_eq!(
            types,
            Ok(json!([
                "null", "boolean", "number", "string", "array", "object"
            ]))
        );
        assert_eq!(
            run("[.[] | values]", json!([null, false, 0, ""])),
            Ok(json!([false, 0, ""]))
        );
        assert_eq!(
            run("[.[] | not]", json!([null, false, 0, ""])),
            Ok(json!([true, true, false, false]))
        );
        assert_eq!(
            run("[null, true, false, empty]", json!(1)),
            Ok(json!([null, true, false]))
        );
        assert_eq!(
            run(
                "[.[] | select(. > 1)] | map(tostring) | join(\",\")",
                json!([1, 2, 3])
            ),
            Ok(json!("2,3"))
        );
        assert_eq!(run("first(empty, 2)", json!(1)), Ok(json!(2)));
        assert_eq!(run("isempty(empty)", json!(1)), Ok(json!(true)));
    }

    /// The rewritten object constructions against jaq's own, output for output.
    #[test]
    fn rewritten_objects_keep_jaq_semantics() {
        let cases = [
            ("{a: 1, b: .x}", json!({"x": [1]})),
            ("{a: 1, a: 2, b: 3, a: 4}", json!(null)),
            ("[{a: (1, 2), b: (3, 4)}]", json!(null)),
            ("[{a: 1, b: empty}]", json!(null)),
            ("[{a: error(\"x\"), b: empty}]", json!(null)),
            (
                "try {a: 1, b: error(\"y\"), c: error(\"z\")} catch .",
                json!(null),
            ),
            (
                "{(.k): 1, \"b\\(.k)\": {c: .k, d: [.k, {e: 1, f: 2}]}}",
                json!({"k": "q"}),
            ),
            ("first({a: 1, b: (2, 3)})", json!(null)),
            ("[limit(3; {a: repeat(1), b: 2})]", json!(null)),
            (". as {a: $x} | {$x, y: $x}", json!({"a": 5})),
            (
                "\"id:\\(.a) \\(.b)\\n\\(.c)!\"",
                json!({"a": "x", "b": [1, "é"], "c": 1.50}),
            ),
            ("[\"\\(1, 2)-\\(3, 4)\"]", json!(null)),
            ("[\"a\\(empty)b\"]", json!(null)),
            (
                "try \"a\\(error(\"p\"))\\(error(\"q\"))\" catch .",
                json!(null),
            ),
            ("@base64 \"x\\(.)y\"", json!("ab")),
            ("{\"k\\(.)\": \"v\\(.)\", b: 1}", json!("z")),
        ];
        for (code, input) in cases {
            let rewritten = Program::compile_rewritten(code)
                .unwrap_or_else(|| panic!("{code} compiles rewritten"))
                .run(value::to_jaq(input.clone()));
            let as_written = Program::compile_as_written(code)
                .expect("compiles as written")
                .run(value::to_jaq(input));
            assert_eq!(rewritten, as_written, "{code}");
        }
    }

    #[test]
    fn every_shipped_mapping_takes_the_rewritten_path() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let mut seen = 0;
        let channels = std::fs::read_dir(&root)
            .expect("mappings dir")
            .map(|channel| channel.expect("entry").path());
        // Each channel folder, and its outbound folder when it has one.
        let dirs = channels.flat_map(|dir| [dir.join("outbound"), dir]);
        for dir in dirs {
            let Ok(files) = std::fs::read_dir(&dir) else {
                continue;
            };
            for file in files {
                let path = file.expect("entry").path();
                if path.extension().is_some_and(|ext| ext == "jq") {
                    let code = std::fs::read_to_string(&path).expect("readable");
                    assert!(
                        Program::compile_rewritten(&code).is_some(),
                        "{} compiles rewritten",
                        path.display()
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen > 5, "found {seen} mappings");
    }

    /// The compiled form against jaq on the jq it knows: each case it must answer, with
    /// jaq's output; each case it must leave to jaq (floats, errors, a built object's order).
    #[test]
    fn the_compiled_form_agrees_with_jaq() {
        let input = json!({
            "a": {"b": [1, 2, 3]}, "n": 2, "xs": [3, 1, 2, 3], "s": "Ab_c d/é",
            "m": {"k": 1}, "words": "x,y,,z", "o": {"z": 1, "a": 2}, "mixed": [1, "a"]
        });
        let answered = [
            ".a.b",
            ".a.b[0]",
            ".a.b[-1]",
            ".a.b[7]",
            ".missing.deeper",
            ".n as $x | [$x, .n]",
            "{x: .n, y: (.nope // \"d\"), z: .a.b[1]}",
            "[.xs[] | . + 1]",
            ".xs | map(. * 2)",
            "[.xs[] | select(. > 1)]",
            "first(.xs[])",
            "[range(3)]",
            "[range(.n)]",
            "\"<\\(.n)|\\(.s)|\\(.nope)|\\(true)>\"",
            "@uri \"q=\\(.s)&n=\\(.n)\"",
            ".s | ascii_downcase",
            ".s | ascii_upcase",
            "reduce .xs[] as $x (0; . + $x)",
            ".m.k |= . + 1",
            ".m[\"k\"] += .n",
            ".m.new |= 5",
            "try error(\"x\") catch .",
            "[.s | .[]?]",
            "[.xs[] | try (. + \"s\")]",
            "[.mixed[] | (. + 1)?]",
            ".s | test(\"^[A-Za-z_ ]+\")",
            ".s | gsub(\"_\"; \"-\")",
            ".xs | unique",
            "def f($x): $x + 1; f(.n)",
            "def g(f): [f, f]; g(.n)",
            ".words / \",\"",
            ".words | split(\",\")",
            "if .n > 1 then \"big\" elif .n == 1 then \"one\" else \"small\" end",
            ".xs | length",
            ".s | length",
            "[.xs[] as $x | $x * 10]",
            "[\"\\(1, 2)-\\(3, 4)\"]",
            "[{a: (1, 2), b: (3, 4)}]",
            "[{a: empty, b: 1}]",
            "[.xs[] | tostring]",
            "any(.xs[]; . > 2)",
            "all(.xs[]; . > 0)",
            ".xs | add",
            ".a | has(\"b\")",
            ".xs | join(\"-\")",
            "[.xs[] | values]",
            ".n == 2 and .s != null",
            "[.xs[] | . >= 2 or . == 1]",
            "-(.n)",
            ".a.b | first",
            "[.xs[] | select(. == 3)] | length",
            "isempty(.xs[])",
        ];
        let deferred = [
            "1.5 + .n",
            ".n / 2",
            "{b: 1, a: 2} | [.[]]",
            "[1, 2] - [2]",
            "error(\"x\")",
            ".xs[]",
            "empty",
            "{b: 1, a: 2} | tojson",
            ".s | gsub(\"x*\"; \"-\")",
            "{a: 1} | .b.c[3] |= 1",
            "[.a[error(\"k\")]?]",
            // jq the compiled form does not know: the whole program stays with jaq.
            ".o | keys",
            "[.[] | type]",
            ".o | [.[]]",
            "[limit(2; .xs[])]",
            "[.a | .. | numbers]",
            ".s | tojson",
        ];
        let mut wrong = Vec::new();
        for (code, must_answer) in answered
            .iter()
            .map(|c| (c, true))
            .chain(deferred.iter().map(|c| (c, false)))
        {
            let program = Program::compile(code).unwrap_or_else(|_| panic!("{code} compiles"));
            let jaq = program.run(value::to_jaq(input.clone()));
            let compiled = program.compiled.as_ref().and_then(|c| c.run(&input));
            match compiled {
                Some(output) if must_answer && Ok(&output) == jaq.as_ref() => {}
                Some(output) => wrong.push(format!("{code}: compiled {output} vs jaq {jaq:?}")),
                None if must_answer => wrong.push(format!("{code}: left to jaq ({jaq:?})")),
                None => {}
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn exactly_one_output_is_required() {
        assert_eq!(run("empty", json!(1)), Err(RunError::NoOutput));
        assert_eq!(run("1, 2", json!(1)), Err(RunError::SeveralOutputs));
    }

    #[test]
    fn rejections_and_failures_are_told_apart() {
        assert_eq!(
            run("reject(\"no lines\")", json!(null)),
            Err(RunError::Rejected("no lines".into()))
        );
        assert_eq!(
            run("error(\"boom\")", json!(null)),
            Err(RunError::Failed("boom".into()))
        );
        assert!(matches!(
            run(".a.b", json!({"a": 1})),
            Err(RunError::Failed(_))
        ));
        assert_eq!(
            run("required(.x; \"the x\")", json!({})),
            Err(RunError::Rejected("missing the x".into()))
        );
    }

    #[test]
    fn nondeterministic_functions_are_cut_off() {
        for code in ["now", "env", "halt", "halt_error", "0 | localtime"] {
            assert!(
                matches!(run(code, json!("x")), Err(RunError::Failed(_))),
                "{code} must fail"
            );
        }
        assert_eq!(run("debug | . + 1", json!(1)), Ok(json!(2)));
    }

    #[test]
    fn syntax_errors_point_at_line_and_column() {
        let errors = Program::compile("{\n  a: 1,\n  b: (.x | ]\n}")
            .err()
            .expect("a syntax error");
        assert!(!errors.is_empty());
        assert!(errors.iter().any(|e| e.line == Some(3)), "{errors:?}");
    }

    #[test]
    fn undefined_names_point_at_their_use() {
        let errors = Program::compile(".a |\n  no_such_function(1)")
            .err()
            .expect("an undefined filter");
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].line, errors[0].column), (Some(2), Some(3)));
        assert!(errors[0].message.contains("no_such_function"), "{errors:?}");
    }
}
