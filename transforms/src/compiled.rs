//! Mappings compiled to Rust: the part of jq the shipped mappings use, lowered once to a tree
//! of operations that run directly on `serde_json::Value`, borrowing the input document.
//!
//! Placeholder: nothing compiles yet, so every mapping runs on jaq.

pub(crate) struct Program;

impl Program {
    pub(crate) fn compile(_code: &str, _prelude: &str) -> Option<Program> {
        None
    }

    pub(crate) fn run(&self, _input: &serde_json::Value) -> Option<serde_json::Value> {
        None
    }
}
