//! The outbound mappings' golden envelopes (transforms/mappings/<channel>/outbound/cases/) are
//! what the simulator accepts: every expected `{method, path, body}` sent with a valid token
//! is accepted and recorded under the channel and operation of its folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use marketplace_sim::{Channel, MarketOptions, MarketplaceSim, Operation};
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

fn cases(root: &Path) -> anyhow::Result<Vec<(Channel, Operation, PathBuf)>> {
    let mut found = Vec::new();
    for channel in Channel::ALL {
        for operation in Operation::ALL {
            let dir = root
                .join(channel.as_str())
                .join("outbound/cases")
                .join(operation.as_str());
            let entries = std::fs::read_dir(&dir).with_context(|| dir.display().to_string())?;
            for entry in entries {
                let path = entry?.path();
                if path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".expected.json"))
                {
                    found.push((channel, operation, path));
                }
            }
        }
    }
    found.sort_by(|a, b| a.2.cmp(&b.2));
    Ok(found)
}

async fn token(sim: &MarketplaceSim, client: &Client, channel: Channel) -> anyhow::Result<String> {
    let o = sim.options().channel(channel).clone();
    let base = sim.base_url();
    let request = match channel {
        Channel::Amazon => client.post(format!("{base}/auth/o2/token")).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", o.refresh_token.as_str()),
            ("client_id", o.client_id.as_str()),
            ("client_secret", o.client_secret.as_str()),
        ]),
        Channel::Walmart => client
            .post(format!("{base}/v3/token"))
            .basic_auth(&o.client_id, Some(&o.client_secret))
            .header("WM_QOS.CORRELATION_ID", "golden")
            .header("WM_SVC.NAME", "Walmart Marketplace")
            .form(&[("grant_type", "client_credentials")]),
        Channel::Ebay => client
            .post(format!("{base}/identity/v1/oauth2/token"))
            .basic_auth(&o.client_id, Some(&o.client_secret))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", o.refresh_token.as_str()),
            ]),
        Channel::Shopify => return o.static_token.context("static token"),
    };
    let body: Value = request.send().await?.json().await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("access_token")
}

#[tokio::test]
async fn every_golden_envelope_of_the_outbound_mappings_is_accepted() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../transforms/mappings");
    let cases = cases(&root)?;
    let sim = MarketplaceSim::start("127.0.0.1:0".parse()?, MarketOptions::default()).await?;
    let client = Client::builder().timeout(Duration::from_secs(30)).build()?;
    let mut sent = Vec::new();
    for (channel, operation, file) in &cases {
        let expected: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
        if expected.get("$rejected").is_some() {
            continue;
        }
        let method: Method = expected["method"].as_str().context("method")?.parse()?;
        let path = expected["path"].as_str().context("path")?;
        let token = token(&sim, &client, *channel).await?;
        let mut request = client
            .request(method, format!("{}{path}", sim.base_url()))
            .json(&expected["body"]);
        request = match channel {
            Channel::Amazon => request.header("x-amz-access-token", &token),
            Channel::Walmart => request
                .header("WM_SEC.ACCESS_TOKEN", &token)
                .header("WM_QOS.CORRELATION_ID", "golden")
                .header("WM_SVC.NAME", "Walmart Marketplace"),
            Channel::Ebay => request.bearer_auth(&token),
            Channel::Shopify => request.header("X-Shopify-Access-Token", &token),
        };
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        assert!(
            status.is_success() && status != StatusCode::ACCEPTED,
            "{}: {status} {text}",
            file.display()
        );
        sent.push((*channel, *operation));
    }
    // Every endpoint has at least one golden envelope, and each was recorded as its folder says.
    for channel in Channel::ALL {
        for operation in Operation::ALL {
            assert!(
                sent.contains(&(channel, operation)),
                "no golden envelope for {channel} {operation}"
            );
        }
    }
    let recorded: Vec<(Channel, Operation)> = sim
        .records()
        .iter()
        .map(|r| (r.channel, r.operation))
        .collect();
    assert_eq!(recorded, sent);
    sim.shutdown().await;
    Ok(())
}
