//! Secrets in policy files: never literal, always a reference resolved at compile time, either
//! `${ENV_VAR}` (possibly inside a longer value such as `Bearer ${ERP_TOKEN}`) or
//! `file:/path/to/secret`. Resolved values never appear in logs or errors.

use std::fmt;
use std::path::Path;

/// Where secret references are looked up; tests inject their own.
pub trait SecretSource: Send + Sync {
    /// The value of an environment variable.
    fn env(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Default)]
pub struct ProcessEnv;

impl SecretSource for ProcessEnv {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A resolved secret; its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret read by other means than [`expand`] (e.g. one line of a token file).
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Expands `${VAR}` references inside `text`, or reads `file:<path>` (relative paths against
/// `base_dir`, one trailing newline trimmed). Text without references is returned as is.
pub fn expand(text: &str, base_dir: &Path, source: &dyn SecretSource) -> Result<Secret, String> {
    if let Some(path) = text.strip_prefix("file:") {
        let path = base_dir.join(path.trim());
        let raw = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
        let value = raw.strip_suffix('\n').unwrap_or(&raw);
        let value = value.strip_suffix('\r').unwrap_or(value);
        return Ok(Secret(value.to_owned()));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated ${...} reference".to_owned())?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid environment variable name {name:?}"));
        }
        let value = source
            .env(name)
            .ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Secret(out))
}

/// Whether `text` is a reference (`${...}` or `file:`), not a literal.
pub fn is_reference(text: &str) -> bool {
    text.starts_with("file:") || text.contains("${")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A fixed environment for tests.
    #[derive(Default)]
    pub struct FakeEnv(pub HashMap<String, String>);

    impl SecretSource for FakeEnv {
        fn env(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> FakeEnv {
        FakeEnv(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn env_references_are_expanded_inside_text() {
        let e = env(&[("ERP_TOKEN", "s3cr3t")]);
        let s = expand("Bearer ${ERP_TOKEN}", Path::new("."), &e).unwrap();
        assert_eq!(s.expose(), "Bearer s3cr3t");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn missing_variables_name_the_variable_not_a_value() {
        let err = expand("${NOPE}", Path::new("."), &env(&[])).unwrap_err();
        assert_eq!(err, "environment variable NOPE is not set");
        assert!(expand("${BAD-NAME}", Path::new("."), &env(&[])).is_err());
        assert!(expand("${OPEN", Path::new("."), &env(&[])).is_err());
    }

    #[test]
    fn file_references_are_read_relative_to_the_policy_file() {
        let dir = std::env::temp_dir().join(format!("secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hmac.txt"), "abc123\n").unwrap();
        let s = expand("file:hmac.txt", &dir, &env(&[])).unwrap();
        assert_eq!(s.expose(), "abc123");
        assert!(expand("file:missing.txt", &dir, &env(&[])).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
