//! OpenTelemetry traces end to end, exported over OTLP/HTTP to a real receiver that decodes the
//! protobuf: the caller's `traceparent` is the parent of the request span, each policy phase and
//! upstream attempt is a child span, the upstream gets the attempt's span as its parent, the
//! trace id is in problem+json; a queued document's delivery attempts are spans in the same
//! trace, children of and linked to the accepting request, the delivered one carrying the ERP's
//! acknowledgement; the caller's unsampled flag is followed; a dead collector costs at most the
//! queue bound, the rest dropped and counted.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::time::Duration;

use erp_sim::ErpSim;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use serde_json::{Value, json};
use tests::otlp::{OtlpReceiver, int_attr, str_attr};
use tests::{Gateway, TempDir, client, eventually, policy_file};

fn file(sim: &ErpSim, tracing: &str, dir: &std::path::Path) -> String {
    policy_file(
        sim.addr(),
        "    connect_timeout: 200ms\n    read_timeout: 3s\n    total_timeout: 4s\n",
        &format!(
            "\
{tracing}
queues:
  q:
    path: {}/deliveries.redb
    workers: 2
    poll_interval: 20ms
    retry: {{initial_backoff: 20ms, max_backoff: 50ms, max_attempts: 1000, max_age: 1h}}
policies:
  json: {{kind: json_body}}
  limit:
    kind: rate_limit
    key: [route]
    limits: [{{name: per_second, rate: 1000, per: 1s, burst: 1000}}]
routes:
  - name: orders
    methods: [POST]
    path: /orders
    upstream: erp
    upstream_path: /erp/v1/orders
    policies: [limit, json]
  - name: queued-orders
    methods: [POST]
    path: /queued/orders
    upstream: erp
    upstream_path: /erp/v1/orders
    policies: [json]
    delivery: {{mode: queued, queue: q}}
  - name: plain
    methods: [GET]
    path: /plain
    upstream: erp
    upstream_path: /erp/v1/health
",
            dir.display()
        ),
    )
}

fn tracing_section(endpoint: &str, extra: &str) -> String {
    format!(
        "tracing:\n  endpoint: {endpoint}\n  service_name: gw-under-test\n  batch_delay: 10ms\n{extra}"
    )
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn of_trace<'a>(spans: &'a [Span], trace_id: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect()
}

/// Parses `00-<trace>-<parent>-<flags>`.
fn traceparent_parts(tp: &str) -> (String, String, String) {
    let parts: Vec<_> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    (
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_is_one_span_tree_under_the_callers_span_and_its_problems_name_the_trace() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let otlp = OtlpReceiver::start().await.unwrap();
    let dir = TempDir::new("traces-tree").unwrap();
    let gw = Gateway::start(&file(
        &sim,
        &tracing_section(&otlp.endpoint(), ""),
        dir.path(),
    ))
    .unwrap();
    let c = client().unwrap();

    // an unsampled caller first: followed (parent-based), so no span of its trace is recorded
    let quiet = "0af7651916cd43dd8448eb211c80319c";
    let r = c
        .post(gw.url("/orders"))
        .header("traceparent", format!("00-{quiet}-b7ad6b7169203331-00"))
        .json(&json!({"ref": "o-quiet"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let r = c
        .post(gw.url("/orders"))
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .json(&json!({"ref": "o-1"}))
        .send()
        .await
        .unwrap();
    let ok_status = r.status().as_u16();
    assert!(r.status().is_success(), "{ok_status}");

    // a policy refusal: its problem names the trace
    let refused = "5bf92f3577b34da6a3ce929d0e0e4737";
    let r = c
        .post(gw.url("/orders"))
        .header("traceparent", format!("00-{refused}-{caller_span}-01"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["trace_id"], refused, "{problem}");

    // an unmatched route: refused at the edge, with the trace id too (a trace we started)
    let r = c.get(gw.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(
        problem["trace_id"].as_str().map(str::len),
        Some(32),
        "{problem}"
    );

    eventually("the spans of both traces", Duration::from_secs(20), || {
        let spans = otlp.spans();
        of_trace(&spans, trace).len() >= 5 && of_trace(&spans, refused).len() >= 2
    })
    .await
    .unwrap_or_else(|e| {
        let text = gw.metrics().unwrap();
        let trace_lines: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("gateway_trace"))
            .collect();
        panic!("{e}: {trace_lines:?}\n{:#?}\n{}", otlp.spans(), gw.output())
    });
    let spans = otlp.spans();
    assert!(otlp.services().iter().all(|s| s == "gw-under-test"));
    // the unsampled trace was exported before these (one exporter, in completion order)
    assert!(
        of_trace(&spans, quiet).is_empty(),
        "an unsampled trace was recorded"
    );
    let up = sim
        .requests()
        .into_iter()
        .find(|r| r.header("traceparent").is_some_and(|t| t.contains(quiet)))
        .unwrap();
    assert!(
        up.header("traceparent").unwrap().ends_with("-00"),
        "the upstream must see the unsampled decision"
    );

    // the accepted request: request span under the caller's, policies and the attempt under it
    let tree = of_trace(&spans, trace);
    let server: Vec<_> = tree
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(server.len(), 1, "{tree:#?}");
    let root = server[0];
    assert_eq!(hex(&root.parent_span_id), caller_span);
    assert_eq!(root.name, "POST orders");
    assert_eq!(str_attr(root, "gateway.route"), Some("orders"));
    assert_eq!(str_attr(root, "gateway.outcome"), Some("forwarded"));
    assert_eq!(
        int_attr(root, "http.response.status_code"),
        Some(i64::from(ok_status))
    );
    assert!(root.end_time_unix_nano >= root.start_time_unix_nano);
    let children: Vec<_> = tree
        .iter()
        .filter(|s| s.parent_span_id == root.span_id)
        .collect();
    assert_eq!(
        children.len(),
        tree.len() - 1,
        "every other span is a child"
    );
    let mut policies: Vec<_> = children
        .iter()
        .filter(|s| s.kind == SpanKind::Internal as i32)
        .map(|s| {
            (
                s.name.clone(),
                str_attr(s, "gateway.policy.kind").unwrap().to_owned(),
                str_attr(s, "gateway.policy.phase").unwrap().to_owned(),
                str_attr(s, "gateway.policy.outcome").unwrap().to_owned(),
            )
        })
        .collect();
    policies.sort();
    let owned = |a: &str, b: &str, c: &str| {
        (
            a.to_owned(),
            b.to_owned(),
            c.to_owned(),
            "passed".to_owned(),
        )
    };
    assert_eq!(
        policies,
        vec![
            owned("policy json", "json_body", "request"),
            owned("policy json", "json_body", "request_body"),
            owned("policy limit", "rate_limit", "request"),
        ],
        "one span per phase each policy implements"
    );
    let attempts: Vec<_> = children
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    assert_eq!(attempts.len(), 1);
    let attempt = attempts[0];
    assert_eq!(
        str_attr(attempt, "server.address"),
        Some(sim.addr().to_string().as_str())
    );
    assert_eq!(
        int_attr(attempt, "http.response.status_code"),
        Some(i64::from(ok_status))
    );
    // the ERP got the attempt's span as its parent, in the caller's trace
    let up = sim
        .requests()
        .into_iter()
        .find(|r| r.header("traceparent").is_some_and(|t| t.contains(trace)))
        .unwrap();
    let (t, parent, flags) = traceparent_parts(up.header("traceparent").unwrap());
    assert_eq!((t.as_str(), flags.as_str()), (trace, "01"));
    assert_eq!(parent, hex(&attempt.span_id));

    // the refused request: its policy span says refused, nothing went upstream
    let tree = of_trace(&spans, refused);
    let root = tree
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert_eq!(str_attr(root, "gateway.outcome"), Some("policy"));
    assert_eq!(int_attr(root, "http.response.status_code"), Some(400));
    let json_body = tree
        .iter()
        .find(|s| str_attr(s, "gateway.policy.outcome") == Some("refused"))
        .unwrap();
    assert_eq!(json_body.name, "policy json");
    assert_eq!(json_body.parent_span_id, root.span_id);
    assert!(
        tree.iter().all(|s| s.kind != SpanKind::Client as i32),
        "a refused request has no upstream attempt"
    );
    assert_eq!(
        gw.metric("gateway_trace_spans_dropped_total{reason=\"queue_full\"}")
            .unwrap(),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queued_documents_attempts_are_spans_linked_to_the_request_that_accepted_it() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    sim.set_down(true).await.unwrap();
    let otlp = OtlpReceiver::start().await.unwrap();
    let dir = TempDir::new("traces-queued").unwrap();
    let gw = Gateway::start(&file(
        &sim,
        &tracing_section(&otlp.endpoint(), ""),
        dir.path(),
    ))
    .unwrap();
    let c = client().unwrap();
    let trace = "6bf92f3577b34da6a3ce929d0e0e4738";
    let r = c
        .post(gw.url("/queued/orders"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"ref": "o-queued"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);

    // one failed attempt while the ERP is down, then the ERP is back and takes it
    eventually("a failed delivery attempt", Duration::from_secs(20), || {
        gw.metric("gateway_delivery_attempts_total{queue=\"q\",result=\"retryable\"}")
            .unwrap()
            >= 1.0
    })
    .await
    .unwrap();
    sim.set_down(false).await.unwrap();
    eventually("the delivery", Duration::from_secs(20), || {
        gw.metric("gateway_deliveries_total{channel=\"none\",outcome=\"delivered\",queue=\"q\"}")
            .unwrap()
            >= 1.0
    })
    .await
    .unwrap_or_else(|e| {
        let text = gw.metrics().unwrap();
        let lines: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("gateway_deliver") && !l.contains("_bucket"))
            .collect();
        panic!("{e}: {lines:#?}")
    });
    eventually(
        "the acknowledged delivery's span",
        Duration::from_secs(20),
        || {
            otlp.spans().iter().any(|s| {
                hex(&s.trace_id) == trace && s.events.iter().any(|e| e.name == "erp.acknowledged")
            })
        },
    )
    .await
    .unwrap();

    let spans = otlp.spans();
    let tree = of_trace(&spans, trace);
    let accept = tree
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert_eq!(str_attr(accept, "gateway.outcome"), Some("queued"));
    assert_eq!(int_attr(accept, "http.response.status_code"), Some(202));
    let deliveries: Vec<_> = tree
        .iter()
        .filter(|s| s.kind == SpanKind::Consumer as i32)
        .collect();
    assert!(deliveries.len() >= 2, "{deliveries:#?}");
    for d in &deliveries {
        assert_eq!(d.name, "deliver q");
        assert_eq!(
            d.parent_span_id, accept.span_id,
            "a child of the accepting request"
        );
        assert_eq!(d.links.len(), 1);
        assert_eq!(
            d.links[0].span_id, accept.span_id,
            "linked to the accepting request"
        );
        assert_eq!(hex(&d.links[0].trace_id), trace);
        // each attempt's upstream exchange is a child of its delivery span
        let upstream: Vec<_> = tree
            .iter()
            .filter(|s| s.parent_span_id == d.span_id)
            .collect();
        assert_eq!(upstream.len(), 1, "{upstream:#?}");
        assert_eq!(upstream[0].kind, SpanKind::Client as i32);
    }
    let results: Vec<_> = deliveries
        .iter()
        .map(|d| {
            (
                int_attr(d, "gateway.delivery.attempt").unwrap(),
                str_attr(d, "gateway.delivery.result").unwrap(),
            )
        })
        .collect();
    assert!(results.contains(&(1, "retried")), "{results:?}");
    let delivered: Vec<_> = deliveries
        .iter()
        .filter(|d| str_attr(d, "gateway.delivery.result") == Some("delivered"))
        .collect();
    assert_eq!(delivered.len(), 1, "{results:?}");
    assert!(
        delivered[0]
            .events
            .iter()
            .any(|e| e.name == "erp.acknowledged")
    );
    assert!(
        deliveries
            .iter()
            .filter(|d| str_attr(d, "gateway.delivery.result") == Some("retried"))
            .all(|d| d.events.is_empty() && d.status.as_ref().is_some_and(|s| s.code == 2)),
        "a failed attempt carries no acknowledgement and an error status"
    );
    // the ERP saw the delivered attempt's upstream span as its parent
    let attempt = tree
        .iter()
        .find(|s| s.parent_span_id == delivered[0].span_id)
        .unwrap();
    let seen: Vec<_> = sim
        .requests()
        .into_iter()
        .filter_map(|r| r.header("traceparent").map(traceparent_parts))
        .filter(|(t, _, _)| t == trace)
        .collect();
    assert!(
        seen.iter().any(|(_, p, _)| *p == hex(&attempt.span_id)),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_collector_costs_at_most_the_queue_bound_and_the_rest_is_dropped_and_counted() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dead = OtlpReceiver::start_silent().await.unwrap();
    let dir = TempDir::new("traces-dead").unwrap();
    let section = tracing_section(
        &dead.endpoint(),
        "  max_queue_spans: 5\n  export_timeout: 1h\n",
    );
    let gw = Gateway::start(&file(&sim, &section, dir.path())).unwrap();
    let c = client().unwrap();
    // a route without policies: two spans per request (the request and its upstream attempt)
    for _ in 0..4 {
        let r = c.get(gw.url("/plain")).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let held = "gateway_trace_queue_spans";
    let full = "gateway_trace_spans_dropped_total{reason=\"queue_full\"}";
    eventually(
        "all 8 spans held or dropped",
        Duration::from_secs(20),
        || gw.metric(held).unwrap() + gw.metric(full).unwrap() == 8.0,
    )
    .await
    .unwrap();
    assert_eq!(
        gw.metric(held).unwrap(),
        5.0,
        "the bound is held, the batch on its way included"
    );
    assert_eq!(gw.metric(full).unwrap(), 3.0);
    assert_eq!(
        gw.metric("gateway_trace_spans_exported_total").unwrap(),
        0.0
    );
    assert!(dead.spans().is_empty());
}
