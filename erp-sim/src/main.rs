//! The `erp-sim` binary: serves the ERP simulator on a fixed address until Ctrl-C.

use std::net::SocketAddr;

use clap::Parser;
use erp_sim::{ErpSim, SimOptions};

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
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let options = SimOptions {
        record_limit: args.record_limit,
        max_body_bytes: args.max_body_bytes,
        document_limit: args.document_limit,
    };
    let sim = ErpSim::start_with(args.listen, options).await?;
    println!("erp-sim listening on http://{}", sim.addr());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
