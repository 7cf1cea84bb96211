//! The `marketplace-sim` binary: serves the four simulated marketplaces on one address until
//! Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use marketplace_sim::{Channel, Limit, MarketOptions, MarketplaceSim, Operation};
use serde_json::Value;

/// A simulator of the Amazon, Walmart, eBay and Shopify outbound APIs (tokens, rate limits,
/// body checks), recording every accepted call.
#[derive(Debug, Parser)]
#[command(name = "marketplace-sim", version)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9600")]
    listen: SocketAddr,
    /// A JSON file of options, laid over the defaults (any subset, e.g.
    /// {"walmart":{"client_secret":"s3cret"}}); see --print-options for the shape.
    #[arg(long)]
    options: Option<PathBuf>,
    /// A limit, as CHANNEL.OPERATION=RATE/BURST (e.g. amazon.inventory=0.5/2); repeatable.
    #[arg(long = "limit", value_parser = parse_limit)]
    limits: Vec<(Channel, Operation, Limit)>,
    /// The lifetime of every issued token (e.g. 30s, 15m), overriding the options.
    #[arg(long, value_parser = humantime::parse_duration)]
    token_lifetime: Option<Duration>,
    /// Print the effective options as JSON and exit.
    #[arg(long)]
    print_options: bool,
}

fn parse_limit(text: &str) -> Result<(Channel, Operation, Limit), String> {
    let usage = || format!("expected CHANNEL.OPERATION=RATE/BURST, got {text:?}");
    let (name, figures) = text.split_once('=').ok_or_else(usage)?;
    let (channel, operation) = name.split_once('.').ok_or_else(usage)?;
    let (rate, burst) = figures.split_once('/').ok_or_else(usage)?;
    let limit = Limit::new(
        rate.trim().parse().map_err(|_| usage())?,
        burst.trim().parse().map_err(|_| usage())?,
    );
    limit.validate().map_err(|err| err.to_string())?;
    Ok((
        channel.parse().map_err(|err| format!("{err}"))?,
        operation.parse().map_err(|err| format!("{err}"))?,
        limit,
    ))
}

/// Lays `over` onto `base`, object by object.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

fn options(args: &Args) -> anyhow::Result<MarketOptions> {
    let mut options = MarketOptions::default();
    if let Some(path) = &args.options {
        let context = || format!("--options {}", path.display());
        let text = std::fs::read_to_string(path).with_context(context)?;
        let over: Value = serde_json::from_str(&text).with_context(context)?;
        if !over.is_object() {
            bail!("--options {}: expected a JSON object", path.display());
        }
        let mut merged = serde_json::to_value(&options)?;
        merge(&mut merged, over);
        options = serde_json::from_value(merged).with_context(context)?;
    }
    for (channel, operation, limit) in &args.limits {
        let channel_options = options.channel_mut(*channel);
        match operation {
            Operation::Shipment => channel_options.shipment = *limit,
            Operation::Inventory => channel_options.inventory = *limit,
        }
    }
    if let Some(lifetime) = args.token_lifetime {
        for channel in Channel::ALL {
            options.channel_mut(channel).token_lifetime = lifetime;
        }
    }
    options.validate()?;
    Ok(options)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = options(&args)?;
    if args.print_options {
        println!("{}", serde_json::to_string_pretty(&options)?);
        return Ok(());
    }
    let sim = MarketplaceSim::start(args.listen, options)
        .await
        .with_context(|| format!("starting on {}", args.listen))?;
    // The one stdout line scripts and tests wait for.
    println!("marketplace-sim listening on {}", sim.base_url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
