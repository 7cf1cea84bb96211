//! The `erp-sim` binary: serves the ERP simulator on a fixed address until Ctrl-C, optionally
//! over TLS (and mutual TLS), with HTTP/2, and misbehaving from the start (`--behaviour`,
//! `--script`) so a demo can stage a brownout.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use erp_sim::{Behaviour, ErpSim, Script, SimOptions, SimTls};

/// An ERP simulator speaking the canonical retail API, recording what it receives.
#[derive(Debug, Parser)]
#[command(name = "erp-sim", version)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// How many request records to keep (the most recent ones).
    #[arg(long, default_value_t = SimOptions::default().record_limit)]
    record_limit: usize,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = SimOptions::default().max_body_bytes)]
    max_body_bytes: usize,
    /// How many documents to keep per document kind (the most recent ones).
    #[arg(long, default_value_t = SimOptions::default().document_limit)]
    document_limit: usize,
    /// Answer a repeated Idempotency-Key on a write with the first answer (and 409 while the
    /// first is processed) instead of processing it again (`false` processes every write).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    honour_idempotency_keys: bool,
    /// How many answered Idempotency-Keys to remember (the most recent ones).
    #[arg(long, default_value_t = SimOptions::default().idempotency_key_limit)]
    idempotency_key_limit: usize,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates issued by this CA (PEM): mutual TLS. Needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Serve HTTP/2 too (ALPN h2 under TLS, prior-knowledge h2c without).
    #[arg(long)]
    http2: bool,
    /// The behaviour from the start, as the JSON `PUT /_sim/behaviour` takes, e.g.
    /// '{"fail_status":503,"fail_every":2}'.
    #[arg(long, conflicts_with = "script")]
    behaviour: Option<String>,
    /// A script to run from the start: a JSON file as `PUT /_sim/script` takes, e.g.
    /// {"phases":[{"duration_ms":10000},{"duration_ms":30000,"behaviour":{...}}]}.
    #[arg(long)]
    script: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let behaviour = match &args.behaviour {
        Some(json) => {
            let behaviour: Behaviour = serde_json::from_str(json).context("--behaviour")?;
            behaviour.validate().context("--behaviour")?;
            Some(behaviour)
        }
        None => None,
    };
    let script = match &args.script {
        Some(path) => {
            let context = || format!("--script {}", path.display());
            let text = std::fs::read_to_string(path).with_context(context)?;
            let script: Script = serde_json::from_str(&text).with_context(context)?;
            script.validate().with_context(context)?;
            Some(script)
        }
        None => None,
    };
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(SimTls {
            cert,
            key,
            client_ca: args.client_ca,
        }),
        _ => None,
    };
    let options = SimOptions {
        record_limit: args.record_limit,
        max_body_bytes: args.max_body_bytes,
        document_limit: args.document_limit,
        honour_idempotency_keys: args.honour_idempotency_keys,
        idempotency_key_limit: args.idempotency_key_limit,
        tls,
        http2: args.http2,
    };
    let sim = ErpSim::start_with(args.listen, options)
        .await
        .with_context(|| format!("starting on {}", args.listen))?;
    if let Some(behaviour) = behaviour {
        sim.set_behaviour(behaviour);
    }
    if let Some(script) = script {
        // stderr: stdout is the one line scripts and tests wait for (they may stop reading).
        eprintln!("erp-sim running a script: {script}");
        sim.set_script(script);
    }
    println!("erp-sim listening on {}", sim.base_url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
