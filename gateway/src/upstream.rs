//! Upstream pools: each cluster's endpoints resolved to Pingora peers with their timeouts,
//! chosen round robin. Connections are pooled by Pingora per peer, so they outlive reloads.

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use pingora::upstreams::peer::{HttpPeer, Peer};
use policies::model::Upstream;

/// One upstream cluster, ready to pick peers from.
#[derive(Debug)]
pub struct UpstreamPool {
    /// The compiled upstream.
    pub upstream: Arc<Upstream>,
    peers: Vec<HttpPeer>,
    /// Each peer's address as logged, made once rather than per request.
    labels: Vec<Arc<str>>,
    next: AtomicUsize,
}

/// An endpoint that could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error("upstream {upstream:?}: cannot resolve endpoint {endpoint}: {reason}")]
pub struct ResolveError {
    upstream: String,
    endpoint: String,
    reason: String,
}

impl UpstreamPool {
    /// Resolves every endpoint (each address a host name resolves to becomes a peer).
    pub fn build(upstream: Arc<Upstream>) -> Result<Self, ResolveError> {
        let mut peers = Vec::with_capacity(upstream.endpoints.len());
        for ep in &upstream.endpoints {
            let addrs =
                (ep.host.as_str(), ep.port)
                    .to_socket_addrs()
                    .map_err(|e| ResolveError {
                        upstream: upstream.name.to_string(),
                        endpoint: ep.to_string(),
                        reason: e.to_string(),
                    })?;
            let sni = upstream.sni.clone().unwrap_or_else(|| ep.host.clone());
            let mut any = false;
            for addr in addrs {
                any = true;
                let mut peer = HttpPeer::new(addr, upstream.tls, sni.clone());
                let o = &mut peer.options;
                o.connection_timeout = Some(upstream.connect_timeout);
                o.total_connection_timeout = Some(upstream.connect_timeout);
                o.read_timeout = Some(upstream.read_timeout);
                o.write_timeout = Some(upstream.read_timeout);
                o.idle_timeout = Some(upstream.idle_timeout);
                peers.push(peer);
            }
            if !any {
                return Err(ResolveError {
                    upstream: upstream.name.to_string(),
                    endpoint: ep.to_string(),
                    reason: "no addresses".into(),
                });
            }
        }
        let labels = peers
            .iter()
            .map(|p| Arc::from(p.address().to_string()))
            .collect();
        Ok(UpstreamPool {
            upstream,
            peers,
            labels,
            next: AtomicUsize::new(0),
        })
    }

    /// The peer for a request's `attempt`-th try (0 first): round robin across requests, and
    /// the next endpoint on each retry of the same request.
    pub fn pick(&self, start: &mut Option<usize>, attempt: usize) -> Option<&HttpPeer> {
        self.pick_labelled(start, attempt).map(|(peer, _)| peer)
    }

    /// [`pick`](Self::pick), with the peer's address as logged.
    pub fn pick_labelled(
        &self,
        start: &mut Option<usize>,
        attempt: usize,
    ) -> Option<(&HttpPeer, &Arc<str>)> {
        if self.peers.is_empty() {
            return None;
        }
        let first = *start.get_or_insert_with(|| self.next.fetch_add(1, Ordering::Relaxed));
        let i = first.wrapping_add(attempt) % self.peers.len();
        Some((self.peers.get(i)?, self.labels.get(i)?))
    }

    /// How many peers the pool has (the most attempts worth making).
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}
