//! The Grafana dashboard in docs/grafana against the real gateway: every query of every panel
//! (and the `channel` variable's) parses as PromQL, every metric it names is in the admin
//! `/metrics` of a gateway driven into a 429, a dead letter and an open circuit, every panel
//! uses the provisioned datasource's uid, the dashboard provider loads the dashboard's folder,
//! and the dashboard has its six rows. A renamed or removed metric fails here, not on a wall
//! screen.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, ensure};
use erp_sim::{Behaviour, ErpSim};
use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::{Value, json};
use tests::{Gateway, TempDir, workspace_root};

/// Where docs/grafana/README.md mounts `docs/grafana/provisioning` in Grafana.
const MOUNT: &str = "/etc/grafana/provisioning";

/// The rows the dashboard has, in order: one per concern.
const ROWS: [&str; 6] = [
    "Channel flow",
    "Errors by cause",
    "Latency",
    "ERP health and breakers",
    "Queues and dead letters",
    "Limits",
];

/// Grafana's variables, replaced as Grafana would before sending a query: the built-in
/// intervals by durations and `channel` by one channel name (longest names first, so that
/// `$__rate_interval` is not read as `$__rate` + `_interval`).
const VARIABLES: [(&str, &str); 9] = [
    ("$__rate_interval", "1m"),
    ("${__rate_interval}", "1m"),
    ("$__interval", "1m"),
    ("${__interval}", "1m"),
    ("$__range", "1h"),
    ("${__range}", "1h"),
    ("${channel:regex}", "amazon"),
    ("${channel}", "amazon"),
    ("$channel", "amazon"),
];

fn provisioning() -> PathBuf {
    workspace_root().join("docs/grafana/provisioning")
}

fn read_yaml(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_saphyr::from_str(&text).with_context(|| path.display().to_string())
}

/// The uid of the provisioned Prometheus datasource.
fn datasource_uid() -> Result<String> {
    let doc = read_yaml(&provisioning().join("datasources/prometheus.yaml"))?;
    let sources = doc["datasources"]
        .as_array()
        .ok_or_else(|| anyhow!("no datasources list"))?;
    let prometheus: Vec<&Value> = sources
        .iter()
        .filter(|d| d["type"] == "prometheus")
        .collect();
    ensure!(
        prometheus.len() == 1,
        "one Prometheus datasource: {sources:?}"
    );
    prometheus[0]["uid"]
        .as_str()
        .filter(|uid| !uid.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the datasource has no fixed uid: {:?}", prometheus[0]))
}

/// The dashboard files each dashboard provider loads: its `options.path`, a path inside the
/// mount, taken back to the repository folder.
fn provided_dashboards() -> Result<Vec<PathBuf>> {
    let dir = provisioning().join("dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if !path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            continue;
        }
        let doc = read_yaml(&path)?;
        for provider in doc["providers"]
            .as_array()
            .ok_or_else(|| anyhow!("{}: no providers", path.display()))?
        {
            ensure!(provider["type"] == "file", "{provider:?}");
            let at = provider["options"]["path"]
                .as_str()
                .ok_or_else(|| anyhow!("{}: a provider without a path", path.display()))?;
            let inside = at
                .strip_prefix(MOUNT)
                .ok_or_else(|| anyhow!("{at} is not inside the mount {MOUNT}"))?
                .trim_start_matches('/');
            let folder = provisioning().join(inside);
            ensure!(folder.is_dir(), "{at} is no folder of the repository");
            for file in std::fs::read_dir(&folder)? {
                let file = file?.path();
                if file.extension().is_some_and(|e| e == "json") {
                    out.push(file);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The one dashboard, as JSON.
fn dashboard() -> Result<Value> {
    let files = provided_dashboards()?;
    let file = workspace_root()
        .join("docs/grafana/provisioning/dashboards/gateway/gateway-dashboard.json");
    ensure!(
        files == vec![file.clone()],
        "the provider loads {files:?}, not the gateway dashboard alone"
    );
    let text = std::fs::read_to_string(&file)?;
    Ok(serde_json::from_str(&text)?)
}

/// Every panel but rows, each with the title of the row it sits in (rows either hold their
/// panels, collapsed, or are followed by them).
fn panels_by_row(dash: &Value) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    let mut row = String::new();
    for p in dash["panels"]
        .as_array()
        .ok_or_else(|| anyhow!("no panels"))?
    {
        if p["type"] == "row" {
            row = p["title"].as_str().unwrap_or_default().to_owned();
            for inner in p["panels"].as_array().into_iter().flatten() {
                out.push((row.clone(), inner.clone()));
            }
        } else {
            out.push((row.clone(), p.clone()));
        }
    }
    Ok(out)
}

/// `expr` with Grafana's variables replaced.
fn substitute(expr: &str) -> Result<String> {
    let mut out = expr.to_owned();
    for (var, value) in VARIABLES {
        out = out.replace(var, value);
    }
    ensure!(!out.contains('$'), "an unknown variable in {expr:?}");
    Ok(out)
}

/// The metric names a vector selector names (`name{...}` or `{__name__="name"}`).
struct MetricNames(BTreeSet<String>);

impl MetricNames {
    fn selector(&mut self, vs: &VectorSelector) -> Result<(), String> {
        if let Some(name) = &vs.name {
            self.0.insert(name.clone());
            return Ok(());
        }
        let named: Vec<&str> = vs
            .matchers
            .matchers
            .iter()
            .filter(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.as_str())
            .collect();
        if named.is_empty() {
            // a selector without one exact name cannot be checked against a scrape
            return Err(format!("a selector without a metric name: {vs}"));
        }
        self.0.extend(named.into_iter().map(str::to_owned));
        Ok(())
    }
}

impl ExprVisitor for MetricNames {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        match expr {
            Expr::VectorSelector(vs) => self.selector(vs)?,
            Expr::MatrixSelector(ms) => self.selector(&ms.vs)?,
            _ => {}
        }
        Ok(true)
    }
}

/// Parses one query (after substitution) and returns the metrics it names.
fn metrics_of(expr: &str) -> Result<BTreeSet<String>> {
    let text = substitute(expr)?;
    let ast = parser::parse(&text).map_err(|e| anyhow!("{text:?} does not parse: {e}"))?;
    let mut names = MetricNames(BTreeSet::new());
    walk_expr(&mut names, &ast).map_err(|e| anyhow!("{text:?}: {e}"))?;
    ensure!(!names.0.is_empty(), "{text:?} names no metric");
    Ok(names.0)
}

/// The PromQL inside a variable's query: the series selector of `label_values(selector,
/// label)` or the query of `query_result(query)`; `label_values(label)` has none.
fn variable_promql(query: &str) -> Option<String> {
    let q = query.trim();
    let inner = |prefix: &str| {
        q.strip_prefix(prefix)
            .and_then(|rest| rest.trim_start().strip_prefix('('))
            .and_then(|rest| rest.trim_end().strip_suffix(')'))
    };
    if let Some(args) = inner("label_values") {
        // the label is the last argument; a selector's own commas sit inside its braces
        let (selector, _label) = args.rsplit_once(',')?;
        return Some(selector.trim().to_owned());
    }
    if let Some(query) = inner("query_result") {
        return Some(query.to_owned());
    }
    if q.starts_with("label_names") || q.starts_with("metrics(") {
        return None;
    }
    Some(q.to_owned())
}

/// Every metric the dashboard names: per query (panel title and refId, or variable name).
fn dashboard_metrics(dash: &Value) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut out = BTreeMap::new();
    for (_, panel) in panels_by_row(dash)? {
        let title = panel["title"].as_str().unwrap_or_default();
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .ok_or_else(|| anyhow!("{title}: a target without expr: {t}"))?;
            let names = metrics_of(expr).with_context(|| title.to_owned())?;
            out.insert(format!("{title} ({})", t["refId"]), names);
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let query = match &v["query"] {
            Value::String(s) => s.clone(),
            q => q["query"].as_str().unwrap_or_default().to_owned(),
        };
        if let Some(promql) = variable_promql(&query) {
            let names = metrics_of(&promql).with_context(|| format!("variable {}", v["name"]))?;
            out.insert(format!("variable {}", v["name"]), names);
        }
    }
    Ok(out)
}

/// The series names of a text exposition (`name` of each sample line).
fn scraped_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_dashboard_uses_the_provisioned_datasource_and_has_a_row_per_concern() {
    let uid = datasource_uid().unwrap();
    let dash = dashboard().unwrap();
    let panels = panels_by_row(&dash).unwrap();
    assert!(panels.len() >= 20, "{} panels", panels.len());

    // the six rows, in order, none empty
    let rows: Vec<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(rows, ROWS);
    for row in ROWS {
        assert!(
            panels.iter().filter(|(r, _)| r == row).count() >= 2,
            "row {row:?} has fewer than two panels"
        );
    }
    assert!(
        panels.iter().all(|(r, _)| !r.is_empty()),
        "a panel above the first row"
    );

    // every panel and every target on the provisioned datasource
    for (_, p) in &panels {
        let title = p["title"].as_str().unwrap();
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(p["datasource"]["uid"], *uid, "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            if !t["datasource"].is_null() {
                assert_eq!(t["datasource"]["uid"], *uid, "{title} {}", t["refId"]);
            }
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            assert_eq!(v["datasource"]["uid"], *uid, "variable {}", v["name"]);
        }
    }

    // the channel variable lists the channels the gateway counts requests of
    let channel = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "channel")
        .expect("a channel variable");
    assert!(
        channel["query"]["query"]
            .as_str()
            .unwrap()
            .starts_with("label_values("),
        "{channel}"
    );

    // every query parses and names metrics of the gateway
    let metrics = dashboard_metrics(&dash).unwrap();
    for (query, names) in &metrics {
        for n in names {
            assert!(n.starts_with("gateway_"), "{query}: {n}");
        }
    }
}

/// The policy file: `erp` (orders, a rate-limited read), `flaky` (a circuit breaker that
/// opens after two failures) and `deliveries` (a queued route whose retry policy gives up
/// after two attempts), over three simulators.
fn policy(erp: &ErpSim, flaky: &ErpSim, deliveries: &ErpSim, dir: &Path) -> String {
    let root = workspace_root();
    format!(
        "version: 1
listeners: {{http: 127.0.0.1:0, admin: 127.0.0.1:0}}
channels: {{amazon: {{}}, shopify: {{}}, walmart: {{}}}}
upstreams:
  erp:
    endpoints: [\"{erp}\"]
  flaky:
    endpoints: [\"{flaky}\"]
    connect_timeout: 300ms
    read_timeout: 1s
    outlier_detection: {{enabled: false}}
    circuit_breaker: {{consecutive_failures: 2, open_for: 60s}}
  deliveries:
    endpoints: [\"{deliveries}\"]
queues:
  q:
    path: {dir}/deliveries.redb
    poll_interval: 20ms
    retry: {{initial_backoff: 10ms, max_backoff: 20ms, max_attempts: 2, max_age: 1h}}
policies:
  json: {{kind: json_body}}
  limit:
    kind: rate_limit
    key: [channel]
    limits: [{{name: hourly, rate: 2, per: 1h}}]
  order-schema:
    kind: schema
    channels:
      amazon: {schemas}/amazon/order.schema.json
  order-transform:
    kind: transform
    mappings: {mappings}
    document: order
    answer: erp/ack
    error: erp/error
routes:
  - name: orders
    methods: [POST]
    path: /channels/{{channel}}/orders
    upstream: erp
    upstream_path: /erp/v1/orders
    policies: [order-schema, order-transform]
  - name: stock
    methods: [GET]
    path: /channels/{{channel}}/stock
    upstream: erp
    upstream_path: /echo/stock
    policies: [limit]
  - name: status
    methods: [GET]
    path: /channels/{{channel}}/status
    upstream: flaky
    upstream_path: /echo/status
  - name: events
    methods: [POST]
    path: /channels/{{channel}}/events
    upstream: deliveries
    upstream_path: /erp/v1/orders
    policies: [json]
    delivery: {{mode: queued, queue: q}}
",
        erp = erp.addr(),
        flaky = flaky.addr(),
        deliveries = deliveries.addr(),
        dir = dir.display(),
        schemas = root.join("policies/files/schemas").display(),
        mappings = root.join("transforms/mappings").display(),
    )
}

/// Drives the gateway into every state the dashboard draws: an accepted order, a 429, an open
/// circuit, a delivered and a dead-lettered queued document.
async fn drive(gw: &Gateway, flaky: &ErpSim, deliveries: &ErpSim) -> Result<()> {
    let c = reqwest::Client::new();

    // an Amazon order, mapped to the canonical model and accepted by the ERP
    let order_path = workspace_root()
        .join("transforms/mappings/amazon/cases/order/sandbox-test-case-200.input.json");
    let order = std::fs::read_to_string(order_path)?;
    let r = c
        .post(gw.url("/channels/amazon/orders"))
        .header("content-type", "application/json")
        .body(order)
        .send()
        .await?;
    ensure!(r.status() == 201, "order: {}", r.text().await?);

    // a path no route takes: refused at the edge
    let r = c.get(gw.url("/nowhere")).send().await?;
    ensure!(r.status() == 404, "nowhere: {}", r.text().await?);

    // two reads within the limit, the third refused
    for expected in [200, 200, 429] {
        let r = c.get(gw.url("/channels/amazon/stock")).send().await?;
        ensure!(
            r.status() == expected,
            "stock: {} {}",
            r.status(),
            r.text().await?
        );
    }

    // the flaky ERP fails until its circuit opens and the gateway answers for it
    flaky.set_behaviour(Behaviour::fail(500, None));
    let mut open = false;
    for _ in 0..10 {
        let r = c.get(gw.url("/channels/walmart/status")).send().await?;
        if r.status() == 503 {
            let p: Value = r.json().await?;
            ensure!(
                p["type"] == "urn:gateway:problem:upstream-circuit-open",
                "{p}"
            );
            open = true;
            break;
        }
    }
    ensure!(open, "the circuit never opened");
    let series = format!(
        "gateway_upstream_circuit_open{{endpoint=\"{}\",upstream=\"flaky\"}}",
        flaky.addr()
    );
    gw.wait_metric(&series, 1.0)?;

    // one queued document delivered, then one the failing ERP turns into a dead letter
    let post_event = |n: u32| {
        c.post(gw.url("/channels/shopify/events"))
            .json(&json!({"ref": format!("e-{n}")}))
            .send()
    };
    let r = post_event(1).await?;
    ensure!(r.status() == 202, "event: {}", r.text().await?);
    gw.wait_metric(
        "gateway_deliveries_total{channel=\"shopify\",outcome=\"delivered\",queue=\"q\"}",
        1.0,
    )?;
    deliveries.set_behaviour(Behaviour::fail(500, None));
    let r = post_event(2).await?;
    ensure!(r.status() == 202, "event: {}", r.text().await?);
    gw.wait_metric(
        "gateway_deliveries_total{channel=\"shopify\",outcome=\"dead\",queue=\"q\"}",
        1.0,
    )?;
    // the queue gauges are refreshed on the dispatcher's own schedule
    gw.wait_metric("gateway_delivery_dead_letters{queue=\"q\"}", 1.0)?;
    let (status, dead) = gw.admin_json("GET", "/deliveries?state=dead")?;
    ensure!(status == 200, "{dead}");
    ensure!(
        dead["deliveries"].as_array().map(Vec::len) == Some(1),
        "{dead}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_names_is_in_the_scrape_of_a_busy_gateway() {
    let dash = dashboard().unwrap();
    let wanted = dashboard_metrics(&dash).unwrap();

    let start = || ErpSim::start("127.0.0.1:0".parse().unwrap());
    let (erp, flaky, deliveries) = (
        start().await.unwrap(),
        start().await.unwrap(),
        start().await.unwrap(),
    );
    let dir = TempDir::new("dashboard").unwrap();
    let gw = Gateway::start(&policy(&erp, &flaky, &deliveries, dir.path())).unwrap();
    drive(&gw, &flaky, &deliveries).await.unwrap();

    let text = gw.metrics().unwrap();
    let scraped = scraped_names(&text);
    let mut missing: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (query, names) in &wanted {
        for n in names {
            if !scraped.contains(n) {
                missing.entry(n).or_default().push(query);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics the dashboard uses are not in the gateway's /metrics:\n{}",
        missing
            .iter()
            .map(|(n, q)| format!("  {n}  (used by {})", q.join(", ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_checks_catch_what_they_name() {
    // a metric the gateway never had is named, so the scrape check would miss it
    let names = metrics_of(
        "histogram_quantile(0.99, sum by (le) (rate(gateway_gone_seconds_bucket{channel=~\"$channel\"}[$__rate_interval])))",
    )
    .unwrap();
    assert_eq!(
        names,
        BTreeSet::from(["gateway_gone_seconds_bucket".to_owned()])
    );
    assert_eq!(
        metrics_of("{__name__=\"gateway_x\"} / on() gateway_y").unwrap(),
        BTreeSet::from(["gateway_x".to_owned(), "gateway_y".to_owned()])
    );
    // broken PromQL and unknown variables are errors
    assert!(metrics_of("sum by (channel (gateway_x)").is_err());
    assert!(metrics_of("rate(gateway_x[$__unknown])").is_err());
    assert!(metrics_of("{job=\"gateway\"}").is_err());
    assert_eq!(
        variable_promql(
            "label_values(gateway_requests_total{channel!=\"none\", route=~\"a,b\"}, channel)"
        ),
        Some("gateway_requests_total{channel!=\"none\", route=~\"a,b\"}".to_owned())
    );
    assert_eq!(variable_promql("label_values(channel)"), None);
    // a histogram's series are named by their own names
    let text = "# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_sum 0\nh_count 0\ng{a=\"b\"} 1\n";
    assert_eq!(
        scraped_names(text),
        BTreeSet::from(["h_bucket", "h_sum", "h_count", "g"].map(str::to_owned))
    );
}
