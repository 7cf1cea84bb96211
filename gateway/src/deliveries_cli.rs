//! `gateway deliveries list|show|replay|purge`: the admin API's delivery operations from the
//! command line, against a running gateway's admin listener. The admin token comes from a
//! file or the environment, never from an argument (which `ps` would show).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Args)]
pub struct AdminTarget {
    /// The admin listener's base URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:9090",
        env = "GATEWAY_ADMIN_URL"
    )]
    pub admin: String,
    /// A file holding the admin token (else `GATEWAY_ADMIN_TOKEN`; none for a loopback admin
    /// listener without a token).
    #[arg(long, env = "GATEWAY_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Which deliveries (all optional; bulk operations need at least one).
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// In this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// From this channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// In this state: pending, in_flight, blocked, delivered, dead.
    #[arg(long)]
    pub state: Option<String>,
    /// Accepted at or after: an RFC 3339 time or a duration ago (`2h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Accepted before.
    #[arg(long)]
    pub until: Option<String>,
    /// Delivered at or after (event replay after an ERP restore).
    #[arg(long)]
    pub delivered_since: Option<String>,
    /// Delivered before.
    #[arg(long)]
    pub delivered_until: Option<String>,
}

/// The operations.
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries, oldest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// After this delivery id (paging).
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one delivery whole: bodies, every attempt.
    Show {
        /// The delivery id.
        id: String,
    },
    /// Deliver again: one delivery by id, or every one a filter selects (dead letters unless
    /// a delivery time range selects delivered ones).
    Replay {
        /// The delivery id (or use a filter).
        id: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Map the original body again with the current mapping first.
        #[arg(long)]
        retransform: bool,
    },
    /// Remove deliveries: one by id, or every one a filter selects.
    Purge {
        /// The delivery id (or use a filter).
        id: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query(filter: &FilterArgs, extra: &[(&str, String)]) -> String {
    let pairs = [
        ("queue", &filter.queue),
        ("channel", &filter.channel),
        ("state", &filter.state),
        ("since", &filter.since),
        ("until", &filter.until),
        ("delivered_since", &filter.delivered_since),
        ("delivered_until", &filter.delivered_until),
    ];
    let mut parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    parts.extend(extra.iter().map(|(k, v)| format!("{k}={}", encode(v))));
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn token(target: &AdminTarget) -> anyhow::Result<Option<String>> {
    if let Some(file) = &target.token_file {
        let t = std::fs::read_to_string(file)
            .with_context(|| format!("reading the admin token file {}", file.display()))?;
        return Ok(Some(t.trim().to_owned()));
    }
    Ok(std::env::var("GATEWAY_ADMIN_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned()))
}

async fn call(target: &AdminTarget, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
    let url = format!("{}{path}", target.admin.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let mut req = client.request(method, &url);
    if let Some(t) = token(target)? {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("calling the admin API at {}", target.admin))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let detail = body
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or("no detail");
        bail!("{status}: {detail}");
    }
    Ok(body)
}

fn print_table(list: &[Value]) {
    println!(
        "{:<36}  {:<12} {:<9} {:<10} {:>4}  {:<24}  REASON",
        "ID", "QUEUE", "CHANNEL", "STATE", "TRY", "ACCEPTED"
    );
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
    for d in list {
        println!(
            "{:<36}  {:<12} {:<9} {:<10} {:>4}  {:<24}  {}",
            s(d, "delivery_id"),
            s(d, "queue"),
            s(d, "channel"),
            s(d, "state"),
            d.get("attempts").and_then(Value::as_u64).unwrap_or(0),
            s(d, "accepted_at"),
            d.get("reason").and_then(Value::as_str).unwrap_or(""),
        );
    }
}

/// Runs one operation; the process's exit code follows its result.
pub async fn run(target: &AdminTarget, command: DeliveriesCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let out = match &command {
        DeliveriesCommand::List {
            filter,
            limit,
            after,
        } => {
            let mut extra = vec![("limit", limit.to_string())];
            if let Some(a) = after {
                extra.push(("after", a.clone()));
            }
            let v = call(
                target,
                Method::GET,
                &format!("/deliveries{}", query(filter, &extra)),
            )
            .await?;
            if !target.json {
                let list = v
                    .get("deliveries")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                print_table(&list);
                if let Some(next) = v.get("next_after").and_then(Value::as_str) {
                    println!("(more: --after {next})");
                }
                return Ok(());
            }
            v
        }
        DeliveriesCommand::Show { id } => {
            call(target, Method::GET, &format!("/deliveries/{}", encode(id))).await?
        }
        DeliveriesCommand::Replay {
            id,
            filter,
            retransform,
        } => {
            let extra: Vec<(&str, String)> = if *retransform {
                vec![("retransform", "true".into())]
            } else {
                Vec::new()
            };
            let path = match id {
                Some(id) => format!(
                    "/deliveries/{}/replay{}",
                    encode(id),
                    query(&FilterArgs::default(), &extra)
                ),
                None => format!("/deliveries/replay{}", query(filter, &extra)),
            };
            call(target, Method::POST, &path).await?
        }
        DeliveriesCommand::Purge { id, filter } => {
            let path = match id {
                Some(id) => format!("/deliveries/{}/purge", encode(id)),
                None => format!("/deliveries/purge{}", query(filter, &[])),
            };
            call(target, Method::POST, &path).await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_an_encoded_query() {
        let f = FilterArgs {
            channel: Some("walmart".into()),
            state: Some("dead".into()),
            since: Some("2026-12-01T00:00:00Z".into()),
            ..FilterArgs::default()
        };
        assert_eq!(
            query(&f, &[("retransform", "true".into())]),
            "?channel=walmart&state=dead&since=2026-12-01T00%3A00%3A00Z&retransform=true"
        );
        assert_eq!(query(&FilterArgs::default(), &[]), "");
    }
}
