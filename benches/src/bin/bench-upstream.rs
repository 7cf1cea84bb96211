//! The upstream of every load scenario: a minimal HTTP/1.1 keep-alive server (hyper, one
//! thread) that reads each request's whole body and answers a fixed ~200-byte JSON document
//! shaped like the ERP's acknowledgement (201 to a POST, 200 otherwise), so that the ceiling
//! (S0) measures the network path and not an application.
//!
//! `bench-upstream --listen 127.0.0.1:PORT`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const ACK: &[u8] = br#"{"documentId":"SO-000001","documentType":"order","status":"ACCEPTED","receivedAt":"2026-11-27T14:05:41.123Z","reference":"902-1845936-5435065","requestId":"01936b4e-0000-7000-8000-000000000000"}"#;

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let post = req.method() == Method::POST;
    // read the whole body, as the ERP would, before answering
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::from_static(ACK)));
    if post {
        *resp.status_mut() = StatusCode::CREATED;
    }
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = "127.0.0.1:9400".parse()?;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--listen needs ip:port"))?
                    .parse()?
            }
            other => anyhow::bail!("unknown argument {other:?} (usage: --listen ip:port)"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("bench-upstream listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    })
}
