//! The `gateway` command: run, check, demo, schema.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
#[cfg(feature = "demo")]
use gateway::demo::{self, DemoOptions};
use gateway::server::{self, RunOptions};
use gateway::snapshot::Overrides;
use policies::compile::compile_file;
use policies::env::CompileEnv;

/// mimalloc: measured faster than the system allocator on the proxy path and on the jq
/// transforms (benches/README.md, "Allocator"), called as the `allocator` crate says why.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: allocator::Mimalloc = allocator::Mimalloc;

/// A retail API gateway on Pingora, driven by policy files.
#[derive(Parser)]
#[command(name = "gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic with a policy file (SIGHUP reloads it).
    Run {
        /// The policy file.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Plain-HTTP listener, overriding the file (ip:port; port 0 picks one).
        #[arg(long)]
        http: Option<String>,
        /// TLS listener address, overriding the file.
        #[arg(long)]
        https: Option<String>,
        /// Admin listener, overriding the file.
        #[arg(long)]
        admin: Option<String>,
        /// File holding the admin API token, overriding `listeners.admin_auth.token`; during a
        /// rotation a second line holds the previous token, accepted too until removed.
        #[arg(long, env = "GATEWAY_ADMIN_TOKEN_FILE")]
        admin_token_file: Option<PathBuf>,
        /// Worker threads (default: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// How workers share connections: `per-thread` (each worker its own scheduler,
        /// connections spread at accept; cheapest with one worker), `work-stealing` (idle
        /// workers take tasks from busy ones; no pooled upstream connection lost between
        /// workers), or `auto`: per-thread with one worker, work-stealing with more.
        #[arg(long, value_enum, default_value = "auto")]
        scheduler: server::Scheduler,
        /// Take over the listening sockets of a running gateway (graceful upgrade).
        #[arg(long)]
        upgrade: bool,
        /// Seconds to keep accepting after SIGTERM (for load balancers to notice /readyz).
        #[arg(long, default_value_t = 5)]
        grace_period: u64,
        /// Seconds to let in-flight requests finish when shutting down.
        #[arg(long, default_value_t = 30)]
        shutdown_timeout: u64,
        /// Folder of the embedded delivery stores the file names by relative paths (default:
        /// next to the policy file).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Leave transparent huge pages as the system sets them. By default the gateway turns
        /// them off for itself: its allocator asks for them, and while its stores grow, the
        /// first touch of each huge page zeroes 2 MiB while a request waits. Without them the
        /// load test's order chain cost 3–6 % less CPU while its store grew and 15 % less
        /// memory, and no measurable CPU either way once the store was full or on the plain
        /// passthrough (benches/README.md, issue 13's nineteenth and twentieth parts).
        #[arg(long)]
        transparent_huge_pages: bool,
    },
    /// Compile a policy file offline: exit 0 with a summary, or 1 listing every error.
    /// `--against OLD` reviews what changes for callers (exit 1 when something breaks);
    /// `--deep` runs documents generated from each channel schema through its mapping.
    Check {
        /// The policy file.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Contract review: the policy file callers use today, to list what `--config` changes
        /// for them (breaking changes exit 1, a file that does not compile 2).
        #[arg(long, value_name = "OLD")]
        against: Option<PathBuf>,
        /// How contract review prints its findings.
        #[arg(long, value_enum, default_value = "text")]
        format: gateway::governance_cli::ReviewFormat,
        /// Also generate documents from each channel's schema and check the route's mapping
        /// turns every one into a valid canonical document.
        #[arg(long)]
        deep: bool,
        /// Seed of the deep check's generator (the same seed, the same documents).
        #[arg(long, default_value_t = 17)]
        seed: u64,
        /// Randomized documents per route and channel in the deep check.
        #[arg(long, default_value_t = 200)]
        samples: u32,
    },
    /// Write the OpenAPI 3.1 document of a policy file's public surface.
    Openapi {
        /// The policy file.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Write it to this file instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Start the example policy set in front of the ERP simulator, and print a request to try.
    #[cfg(feature = "demo")]
    Demo {
        /// Policy file (default: policies/files/gateway.yaml).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// Address of the ERP simulator.
        #[arg(long, default_value = "127.0.0.1:9400")]
        erp: String,
        /// Address of the marketplace simulator (Amazon, Walmart, eBay, Shopify APIs).
        #[arg(long, default_value = "127.0.0.1:9500")]
        marketplaces: String,
        /// Plain-HTTP listener, overriding the file.
        #[arg(long)]
        http: Option<String>,
        /// TLS listener address, overriding the file.
        #[arg(long)]
        https: Option<String>,
        /// Admin listener, overriding the file.
        #[arg(long)]
        admin: Option<String>,
    },
    /// Operate the store-and-forward queues of a running gateway through its admin API:
    /// list, show, replay, purge deliveries.
    Deliveries {
        #[command(flatten)]
        target: gateway::deliveries_cli::AdminTarget,
        #[command(subcommand)]
        command: gateway::deliveries_cli::DeliveriesCommand,
    },
    /// Print the JSON Schema of the policy-file format.
    Schema,
    /// Run a mapping offline: a channel document (FILE or stdin) to its canonical form on
    /// stdout, with the same validation the gateway applies.
    Transform {
        /// The mapping, `<channel>/<document>` (e.g. `amazon/order`, `erp/ack`), or an outbound
        /// one, `<channel>/outbound/<operation>` (its input is `{document, target, listing}`).
        #[arg(long)]
        mapping: String,
        /// The mapping catalog folder.
        #[arg(long, default_value = "transforms/mappings")]
        mappings: PathBuf,
        /// The input document (default: stdin).
        file: Option<PathBuf>,
    },
    /// Mint a development access token (RS256, signed with certs/dev-jwt-signing.key, which
    /// the example policy set trusts through certs/dev-jwks.json); prints only the token.
    /// Refuses any other key: it never mints production tokens.
    Token {
        /// The channel the token is for (claim `channel`).
        #[arg(long)]
        channel: String,
        /// A scope to grant (repeat for several, or separate them with spaces).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Lifetime, e.g. 15m, 1h, 7d (at most 30 days).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// The development signing key (the only key accepted).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Issuer (`iss`).
        #[arg(long, default_value = gateway::token::DEV_ISSUER)]
        issuer: String,
        /// Audience (`aud`).
        #[arg(long, default_value = gateway::token::DEV_AUDIENCE)]
        audience: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            config,
            against: Some(old),
            format,
            ..
        } => ExitCode::from(gateway::governance_cli::review(&config, &old, format)),
        Command::Check {
            config,
            deep: true,
            seed,
            samples,
            ..
        } => {
            let checked = check(&config);
            if checked != ExitCode::SUCCESS {
                return checked;
            }
            let options = governance::deep::DeepOptions { seed, samples };
            ExitCode::from(gateway::governance_cli::deep(&config, options))
        }
        Command::Openapi { config, output } => {
            report(gateway::governance_cli::openapi(&config, output.as_deref()))
        }
        Command::Check { config, .. } => check(&config),
        Command::Transform {
            mapping,
            mappings,
            file,
        } => transform(&mapping, &mappings, file.as_deref()),
        Command::Deliveries { target, command } => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return report(Err(e.into())),
            };
            report(rt.block_on(gateway::deliveries_cli::run(&target, command)))
        }
        Command::Schema => {
            print!("{}", policies::file_schema::policy_file_schema_text());
            ExitCode::SUCCESS
        }
        Command::Token {
            channel,
            scopes,
            ttl,
            key,
            issuer,
            audience,
        } => {
            let opts = gateway::token::TokenOptions {
                channel,
                scopes: scopes
                    .iter()
                    .flat_map(|s| s.split_ascii_whitespace())
                    .map(str::to_owned)
                    .collect(),
                ttl,
                key: key.unwrap_or_else(gateway::token::dev_key_path),
                issuer,
                audience,
            };
            match gateway::token::mint(&opts, std::time::SystemTime::now()) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => report(Err(e)),
            }
        }
        Command::Run {
            config,
            http,
            https,
            admin,
            admin_token_file,
            threads,
            scheduler,
            upgrade,
            grace_period,
            shutdown_timeout,
            data_dir,
            transparent_huge_pages,
        } => {
            server::init_logging();
            if !transparent_huge_pages {
                disable_transparent_huge_pages();
            }
            let opts = RunOptions {
                config,
                http,
                https,
                admin,
                admin_token_file,
                threads,
                scheduler,
                upgrade,
                grace_period_secs: grace_period,
                shutdown_timeout_secs: shutdown_timeout,
                overrides: Overrides {
                    data_dir,
                    ..Overrides::default()
                },
            };
            report(server::run(opts, |_| {}))
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            config,
            erp,
            marketplaces,
            http,
            https,
            admin,
        } => {
            server::init_logging();
            report(demo::run(DemoOptions {
                config,
                erp,
                marketplaces,
                http,
                https,
                admin,
            }))
        }
    }
}

/// `gateway check -c FILE`: compile, run the golden cases, print a summary or every error.
fn check(config: &Path) -> ExitCode {
    match compile_file(config, &CompileEnv::default(), None) {
        Ok(set) => {
            let (cases, failures) = golden_cases(&set);
            if failures > 0 {
                eprintln!("{}: {failures} golden case(s) failed", config.display());
                return ExitCode::FAILURE;
            }
            // warnings do not fail the check: the file serves as it is
            for w in set.warnings() {
                println!("{}", w.as_warning());
            }
            println!(
                "{}: ok: {}; {cases} golden cases of {} mappings pass",
                config.display(),
                set.summary(),
                set.mappings_in_use().len()
                    + set.outbound.as_ref().map_or(0, |o| o.mappings().len())
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            eprintln!("{}: {} error(s)", config.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

/// Runs the golden cases of every mapping the set uses, printing each failure with its diff.
fn golden_cases(set: &policies::model::PolicySet) -> (usize, usize) {
    let (mut cases, mut failures) = (0, 0);
    let inbound = set.mappings_in_use().into_iter().map(|m| {
        (
            m.path().to_owned(),
            m.name().to_owned(),
            m.run_golden_cases(),
        )
    });
    let outbound = set.outbound.iter().flat_map(|o| o.mappings()).map(|m| {
        (
            m.path().to_owned(),
            m.name().to_owned(),
            m.run_golden_cases(),
        )
    });
    for (path, name, outcomes) in inbound.chain(outbound) {
        for outcome in outcomes {
            cases += 1;
            if !outcome.passed {
                failures += 1;
                println!(
                    "{}: golden case {:?} of {name} failed:\n{}",
                    path.display(),
                    outcome.name,
                    outcome.diff.unwrap_or_default()
                );
            }
        }
    }
    (cases, failures)
}

fn transform(mapping: &str, mappings: &Path, file: Option<&Path>) -> ExitCode {
    let root = if mappings.exists() {
        mappings.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(mappings)
    };
    let catalog = match transforms::Catalog::load(&root) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    // an outbound mapping (`amazon/outbound/shipment`) prints the marketplace call it makes
    let outbound = mapping
        .split_once("/outbound/")
        .and_then(|(channel, operation)| catalog.outbound(channel, operation));
    let inbound = catalog.get(mapping);
    if inbound.is_none() && outbound.is_none() {
        let known: Vec<&str> = catalog
            .names()
            .chain(catalog.outbound_mappings().map(|m| m.name()))
            .collect();
        eprintln!(
            "no mapping {mapping:?} in {} (known: {})",
            root.display(),
            known.join(", ")
        );
        return ExitCode::FAILURE;
    }
    let (name, bytes) = match file {
        Some(f) => (f.display().to_string(), std::fs::read(f)),
        None => {
            let mut buf = Vec::new();
            let r = std::io::stdin().read_to_end(&mut buf).map(|_| buf);
            ("<stdin>".to_owned(), r)
        }
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let input = match transforms::parse_checked(&bytes, &transforms::PrecheckLimits::default()) {
        Ok(v) => v,
        Err(transforms::PrecheckError::NotJson {
            line,
            column,
            message,
        }) => {
            eprintln!("{name}:{line}:{column}: not JSON: {message}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let applied = match (inbound, outbound) {
        (Some(m), _) => m.apply(input),
        (None, Some(m)) => m.apply(input).map(|request| request.to_value()),
        (None, None) => return ExitCode::FAILURE,
    };
    match applied {
        Ok(doc) => {
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process, for the memory it touches from now on
/// (`PR_SET_THP_DISABLE`; the `--transparent-huge-pages` flag of `run` leaves them on).
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    if let Err(err) = nix::sys::prctl::set_thp_disable(true) {
        tracing::warn!(error = %err, "could not turn transparent huge pages off");
    }
}

#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() {}
