//! The governance commands' glue: `gateway check --against` (contract review), `gateway check
//! --deep` and `gateway openapi`; the work itself is in the `governance` crate.

use std::path::Path;

use governance::deep::DeepOptions;
use governance::surface;

/// How contract review prints its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReviewFormat {
    /// One line per finding, for people.
    Text,
    /// One JSON document, for CI.
    Json,
}

/// Exit status of `gateway check --against`: 0 nothing breaks, 1 something breaks, 2 a file
/// does not compile.
pub fn review(new: &Path, old: &Path, format: ReviewFormat) -> u8 {
    let (new_surface, old_surface) = match (surface::load(new), surface::load(old)) {
        (Ok(n), Ok(o)) => (n, o),
        (n, o) => {
            for e in [n.err(), o.err()].into_iter().flatten() {
                eprintln!("{e}");
            }
            return 2;
        }
    };
    let findings = governance::review::review(&old_surface, &new_surface);
    let breaking = findings
        .iter()
        .filter(|f| f.severity == governance::review::Severity::Breaking)
        .count();
    let text = match format {
        ReviewFormat::Text => format!(
            "{}{} against {}: {breaking} breaking, {} additive change(s)",
            governance::review::render_text(&findings),
            new.display(),
            old.display(),
            findings.len() - breaking
        ),
        ReviewFormat::Json => {
            serde_json::to_string_pretty(&governance::review::render_json(&findings))
                .unwrap_or_default()
        }
    };
    // a closed pipe (`| head`) ends the output quietly instead of a panic in println!; the
    // exit status still tells what the review found
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
    u8::from(breaking > 0)
}

/// Exit status of `gateway check --deep`: 0 every generated document maps, 1 otherwise.
pub fn deep(file: &Path, options: DeepOptions) -> u8 {
    let surface = match surface::load(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    match governance::deep::report(&surface, options) {
        Ok(report) if report.findings.is_empty() => {
            print!("{}", governance::deep::render_summary(&report));
            println!(
                "{}: deep check ok (seed {}, {} samples per route and channel)",
                file.display(),
                options.seed,
                options.samples
            );
            0
        }
        Ok(report) => {
            print!("{}", governance::deep::render_summary(&report));
            print!("{}", governance::deep::render_text(&report.findings));
            eprintln!(
                "{}: deep check: {} way(s) the mappings fail on schema-valid documents",
                file.display(),
                report.findings.len()
            );
            1
        }
        Err(e) => {
            eprintln!("{}: deep check: {e}", file.display());
            1
        }
    }
}

/// `gateway openapi`: the document on stdout, or in `output`.
pub fn openapi(file: &Path, output: Option<&Path>) -> anyhow::Result<()> {
    let surface = surface::load(file)?;
    let text = serde_json::to_string_pretty(&governance::openapi::document(&surface))?;
    match output {
        Some(path) => std::fs::write(path, text + "\n")?,
        // a closed pipe (`| head`) ends the output quietly instead of a panic in println!
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{text}") {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
                _ => {}
            }
        }
    }
    Ok(())
}
