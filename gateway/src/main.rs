//! The `gateway` command: run, check, demo, schema.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gateway::demo::{self, DemoOptions};
use gateway::server::{self, RunOptions};
use gateway::snapshot::Overrides;
use policies::compile::{CompileEnv, compile_file};

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
        /// Worker threads (default: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Take over the listening sockets of a running gateway (graceful upgrade).
        #[arg(long)]
        upgrade: bool,
        /// Seconds to keep accepting after SIGTERM (for load balancers to notice /readyz).
        #[arg(long, default_value_t = 5)]
        grace_period: u64,
        /// Seconds to let in-flight requests finish when shutting down.
        #[arg(long, default_value_t = 30)]
        shutdown_timeout: u64,
    },
    /// Compile a policy file offline: exit 0 with a summary, or 1 listing every error.
    Check {
        /// The policy file.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Start the example policy set in front of the ERP simulator, and print a request to try.
    Demo {
        /// Policy file (default: policies/files/gateway.yaml).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// Address of the ERP simulator.
        #[arg(long, default_value = "127.0.0.1:9400")]
        erp: String,
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
    /// Print the JSON Schema of the policy-file format.
    Schema,
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
        Command::Check { config } => match compile_file(&config, &CompileEnv::default(), None) {
            Ok(set) => {
                println!("{}: ok: {}", config.display(), set.summary());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for e in &errors.0 {
                    println!("{e}");
                }
                eprintln!("{}: {} error(s)", config.display(), errors.0.len());
                ExitCode::FAILURE
            }
        },
        Command::Schema => {
            print!("{}", policies::schema::policy_file_schema_text());
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
            threads,
            upgrade,
            grace_period,
            shutdown_timeout,
        } => {
            server::init_logging();
            let opts = RunOptions {
                config,
                http,
                https,
                admin,
                threads,
                upgrade,
                grace_period_secs: grace_period,
                shutdown_timeout_secs: shutdown_timeout,
                overrides: Overrides::default(),
            };
            report(server::run(opts, |_| {}))
        }
        Command::Demo {
            config,
            erp,
            http,
            https,
            admin,
        } => {
            server::init_logging();
            report(demo::run(DemoOptions {
                config,
                erp,
                http,
                https,
                admin,
            }))
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
