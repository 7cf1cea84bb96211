//! Reads a YAML policy file into a JSON value and a map from JSON Pointer to file:line:col, so
//! that every later error (schema, reference, compile) can point at the place in the file.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

/// A position in a source file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Line, counting from 1.
    pub line: u64,
    /// Column, counting from 1.
    pub column: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

impl Location {
    fn from_saphyr(l: serde_saphyr::Location) -> Option<Location> {
        (l.line() > 0).then(|| Location {
            line: l.line(),
            column: l.column().max(1),
        })
    }
}

/// Where each value (and each mapping key) of a parsed document sits in its file.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    values: HashMap<String, Location>,
    keys: HashMap<String, Location>,
}

impl SourceMap {
    /// The location of the value at `pointer` (RFC 6901), or of its nearest located ancestor.
    pub fn value(&self, pointer: &str) -> Option<Location> {
        let mut p = pointer;
        loop {
            if let Some(l) = self.values.get(p) {
                return Some(*l);
            }
            p = parent(p)?;
        }
    }

    /// The location of the mapping key whose value is at `pointer`, falling back to the value.
    pub fn key(&self, pointer: &str) -> Option<Location> {
        self.keys
            .get(pointer)
            .copied()
            .or_else(|| self.value(pointer))
    }
}

fn parent(pointer: &str) -> Option<&str> {
    if pointer.is_empty() {
        None
    } else {
        Some(pointer.rfind('/').map_or("", |i| &pointer[..i]))
    }
}

/// Appends one reference token to a JSON Pointer, escaping `~` and `/` (RFC 6901).
pub fn push_token(pointer: &str, token: &str) -> String {
    let mut out = String::with_capacity(pointer.len() + token.len() + 1);
    out.push_str(pointer);
    out.push('/');
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
    out
}

/// A YAML syntax error, with its location when the parser knows it.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub location: Option<Location>,
    /// What it found wrong.
    pub message: String,
}

/// Parses YAML text into a JSON value and its source map.
pub fn parse_yaml(text: &str) -> Result<(Value, SourceMap), SyntaxError> {
    let root: Spanned<Node> = serde_saphyr::from_str(text).map_err(|e| SyntaxError {
        location: e.location().and_then(Location::from_saphyr),
        message: first_line(&e.to_string()),
    })?;
    let mut map = SourceMap::default();
    let value = lower(root, String::new(), &mut map);
    Ok((value, map))
}

fn first_line(message: &str) -> String {
    // serde-saphyr renders a snippet after the first line and prefixes the position, which our
    // own output already carries as file:line:col.
    let line = message.lines().next().unwrap_or(message).trim();
    let line = line.strip_prefix("error:").unwrap_or(line).trim_start();
    match line
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((position, text)) if position.contains("column") => text.to_owned(),
        _ => line.to_owned(),
    }
}

fn lower(node: Spanned<Node>, pointer: String, map: &mut SourceMap) -> Value {
    if let Some(l) = Location::from_saphyr(node.referenced) {
        map.values.insert(pointer.clone(), l);
    }
    match node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Number(n) => Value::Number(n),
        Node::String(s) => Value::String(s),
        Node::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| lower(item, format!("{pointer}/{i}"), map))
                .collect(),
        ),
        Node::Map(entries) => {
            let mut out = Map::with_capacity(entries.len());
            for (key, value) in entries {
                let child = push_token(&pointer, &key.value);
                if let Some(l) = Location::from_saphyr(key.referenced) {
                    map.keys.insert(child.clone(), l);
                }
                let v = lower(value, child, map);
                out.insert(key.value, v);
            }
            Value::Object(out)
        }
    }
}

/// A YAML node as the deserializer sees it, each child keeping its span.
enum Node {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Number::from_f64(v)
            .map(Node::Number)
            .ok_or_else(|| E::custom("non-finite numbers are not allowed"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Node, A::Error> {
        let mut entries = Vec::with_capacity(access.size_hint().unwrap_or(0));
        while let Some(entry) = access.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_keys_are_located() {
        let text = "upstreams:\n  erp:\n    endpoints: [\"127.0.0.1:9000\"]\nroutes:\n  - name: a\n    path: /x\n";
        let (value, map) = parse_yaml(text).unwrap();
        assert_eq!(value["routes"][0]["path"], "/x");
        assert_eq!(
            map.value("/routes/0/path"),
            Some(Location {
                line: 6,
                column: 11
            })
        );
        assert_eq!(
            map.key("/upstreams/erp"),
            Some(Location { line: 2, column: 3 })
        );
        assert_eq!(
            map.value("/upstreams/erp/endpoints/0"),
            Some(Location {
                line: 3,
                column: 17
            })
        );
        // an unknown pointer falls back to its nearest located ancestor
        assert_eq!(map.value("/routes/0/missing"), map.value("/routes/0"));
    }

    #[test]
    fn syntax_errors_carry_a_location() {
        let err = parse_yaml("routes:\n  - name: [unclosed\n").unwrap_err();
        assert!(err.location.is_some(), "{err:?}");
        assert!(!err.message.contains("line "), "position repeated: {err:?}");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let err = parse_yaml("upstreams:\n  erp: {}\n  erp: {}\n").unwrap_err();
        assert!(err.message.to_lowercase().contains("duplicate"), "{err:?}");
        assert_eq!(err.location.map(|l| l.line), Some(3));
    }

    #[test]
    fn pointer_tokens_are_escaped() {
        assert_eq!(push_token("/a", "b/c~d"), "/a/b~1c~0d");
    }
}
