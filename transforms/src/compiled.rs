//! Mappings compiled to Rust: the part of jq the shipped mappings use, lowered once to a tree
//! of operations ([`op`]) that runs directly on `serde_json::Value`, borrowing the input
//! document instead of converting it to jaq's values and back, with the definitions of the
//! mapping and the prelude inlined instead of interpreted on every run.
//!
//! The compiled form is a fast path, not a second meaning of jq: a run that ends in anything
//! but exactly one output (an error, a rejection, no output), or that meets something it does
//! not reproduce exactly (floating point, the order of a built object's members), answers
//! nothing, and the engine runs jaq instead. A mapping using jq the lowering does not know
//! (destructuring, `label`, `=`, `..`, slices, recursion, ...) is not compiled at all.

mod builtins;
mod eval;
mod lower;
mod op;
mod value;

use serde_json::Value;

/// A mapping lowered to operations.
pub(crate) struct Program(lower::Lowered);

impl Program {
    /// Lowers `code` with the prelude's definitions; `None` when it uses jq the compiled form
    /// does not know (or does not parse, which jaq then reports).
    pub(crate) fn compile(code: &str, prelude: &str) -> Option<Program> {
        lower::lower(code, prelude).map(Program)
    }

    /// The one output of the program on `input`, or `None` when jaq must answer.
    pub(crate) fn run(&self, input: &Value) -> Option<Value> {
        let arena = typed_arena::Arena::new();
        let mut runner = eval::Runner::new(self.0.slots, &arena);
        let mut output = None;
        let mut count = 0usize;
        let result = runner.each(
            &self.0.main,
            std::borrow::Cow::Borrowed(input),
            &mut |_, v| {
                count += 1;
                output = Some(v);
                Ok(())
            },
        );
        match (result, count) {
            (Ok(()), 1) => output.map(value::owned),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped mapping lowers: one that stopped would silently go back to jaq's cost.
    #[test]
    fn every_shipped_mapping_compiles() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let prelude = include_str!("prelude.jq");
        let mut missing = Vec::new();
        let mut seen = 0;
        for channel in std::fs::read_dir(&root).expect("mappings folder") {
            let channel = channel.expect("entry").path();
            for dir in [channel.join("outbound"), channel] {
                let Ok(files) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for file in files {
                    let path = file.expect("entry").path();
                    if path.extension().is_some_and(|e| e == "jq") {
                        seen += 1;
                        let code = std::fs::read_to_string(&path).expect("readable");
                        if Program::compile(&code, prelude).is_none() {
                            missing.push(path.display().to_string());
                        }
                    }
                }
            }
        }
        assert!(seen > 20, "found {seen} mappings");
        assert!(missing.is_empty(), "not compiled: {missing:#?}");
    }
}
