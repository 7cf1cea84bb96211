//! The files of a mappings folder: sorted listings and names, and [`LoadError`], which locates
//! a problem in one of them. Shared by the loaders of mappings and of golden cases.

use std::fmt;
use std::path::{Path, PathBuf};

/// Something wrong in the mappings folder, located as precisely as the source allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// The file or folder at fault.
    pub path: PathBuf,
    /// 1-based line, when the error has a position (jq syntax, undefined names, JSON).
    pub line: Option<usize>,
    /// 1-based column, with `line`.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl LoadError {
    /// The jq compile errors of the mapping at `path`, each at its line and column.
    pub(crate) fn in_source(
        path: &Path,
        errors: Vec<crate::engine::SourceError>,
    ) -> Vec<LoadError> {
        errors
            .into_iter()
            .map(|e| LoadError {
                path: path.to_owned(),
                line: e.line,
                column: e.column,
                message: e.message,
            })
            .collect()
    }

    pub(crate) fn at(path: &Path, message: impl Into<String>) -> LoadError {
        LoadError {
            path: path.to_owned(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for LoadError {
    /// `file:line:col: message`, as compilers and editors expect.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// The paths in a folder, sorted so that loading (and its errors) is the same on every machine.
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let read = std::fs::read_dir(dir).map_err(|err| format!("cannot read the folder: {err}"))?;
    let mut entries = read
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("cannot read the folder: {err}"))?;
    entries.sort();
    Ok(entries)
}

/// The last component of a path, when it is UTF-8.
pub(crate) fn file_name(path: &Path) -> Option<String> {
    path.file_name().and_then(|n| n.to_str()).map(str::to_owned)
}
