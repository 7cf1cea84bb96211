//! Configuration errors, each located as `file:line:col: message`.

use std::fmt;
use std::path::PathBuf;

use crate::source::{Location, SourceMap};

/// One error in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Where in it, when known.
    pub location: Option<Location>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// The line `gateway check` prints for it as a warning: `file:line:col: warning: message`.
    pub fn as_warning(&self) -> String {
        match self.location {
            Some(l) => format!(
                "{}:{}:{}: warning: {}",
                self.file.display(),
                l.line,
                l.column,
                self.message
            ),
            None => format!("{}: warning: {}", self.file.display(), self.message),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(l) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                l.line,
                l.column,
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every error found in a policy file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects errors against one file, locating JSON Pointers through its source map.
pub struct ErrorSink<'a> {
    file: PathBuf,
    map: &'a SourceMap,
    errors: Vec<ConfigError>,
}

impl<'a> ErrorSink<'a> {
    /// A sink for `file`.
    pub fn new(file: PathBuf, map: &'a SourceMap) -> Self {
        ErrorSink {
            file,
            map,
            errors: Vec::new(),
        }
    }

    /// An error about the value at `pointer`.
    pub fn at(&mut self, pointer: &str, message: impl Into<String>) {
        let location = self.map.value(pointer);
        self.push(location, message.into());
    }

    /// An error about the key naming the value at `pointer` (unknown or duplicate names).
    pub fn at_key(&mut self, pointer: &str, message: impl Into<String>) {
        let location = self.map.key(pointer);
        self.push(location, message.into());
    }

    /// Where the value at `pointer` sits (for warnings compiled objects report later).
    pub fn locate(&self, pointer: &str) -> Option<Location> {
        self.map.value(pointer)
    }

    /// An error located in another file the policy file names (a SKU file).
    pub fn other_file(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    fn push(&mut self, location: Option<Location>, message: String) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            location,
            message,
        });
    }

    /// How many errors were reported so far (a compile step compares it before and after).
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Whether anything was reported.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors, sorted by position so they read like the file.
    pub fn into_errors(mut self) -> ConfigErrors {
        self.errors.sort_by_key(|e| e.location);
        ConfigErrors(self.errors)
    }

    /// `Ok` if nothing was reported, else every error.
    pub fn finish(self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.into_errors())
        }
    }
}
