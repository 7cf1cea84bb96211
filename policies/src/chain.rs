//! The precomputed chain a route runs: its named policies in order, each phase run across them
//! (request phases in route order, response phases in reverse), stopping at the first reply.

use std::sync::Arc;

use bytes::Bytes;

use crate::kinds::Policy;
use crate::pipeline::{Completion, ExchangeState, Flow, RequestView, ResponseView};

/// A named policy instance, shared by every route that lists it. A reload builds it anew; its
/// kind hands state over from the instance it replaces when its settings did not change.
#[derive(Debug)]
pub struct NamedPolicy {
    /// The name in the policy file.
    pub name: Arc<str>,
    /// The runtime policy.
    pub policy: Policy,
}

/// The policies of one route, in order.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    policies: Vec<Arc<NamedPolicy>>,
    needs_body: bool,
    repeat_safe: bool,
}

fn tag(flow: Flow, name: &Arc<str>) -> Flow {
    match flow {
        Flow::Continue(()) => Flow::Continue(()),
        Flow::Break(mut reply) => {
            reply.policy.get_or_insert_with(|| name.clone());
            Flow::Break(reply)
        }
    }
}

impl Chain {
    /// A chain of these policies.
    pub fn new(policies: Vec<Arc<NamedPolicy>>) -> Self {
        let needs_body = policies.iter().any(|p| p.policy.needs_body());
        let repeat_safe = policies.iter().any(|p| p.policy.makes_repeats_safe());
        Chain {
            policies,
            needs_body,
            repeat_safe,
        }
    }

    /// Whether a policy makes the route's requests safe to send upstream more than once.
    pub fn repeat_safe(&self) -> bool {
        self.repeat_safe
    }

    /// Whether any policy needs a body phase.
    pub fn needs_body(&self) -> bool {
        self.needs_body
    }

    /// Whether the chain is empty.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The policies, in order.
    pub fn policies(&self) -> &[Arc<NamedPolicy>] {
        &self.policies
    }

    /// Runs the header phase of every policy, stopping at the first reply.
    pub async fn on_request(&self, req: &RequestView<'_>, state: &mut ExchangeState) -> Flow {
        for p in &self.policies {
            tag(p.policy.on_request(req, state).await, &p.name)?;
        }
        Flow::Continue(())
    }

    /// Runs the request body phase.
    pub async fn on_request_body(
        &self,
        req: &RequestView<'_>,
        state: &mut ExchangeState,
        body: &mut Bytes,
    ) -> Flow {
        for p in &self.policies {
            tag(p.policy.on_request_body(req, state, body).await, &p.name)?;
        }
        Flow::Continue(())
    }

    /// Runs the response header phase, last policy first (the response travels back out).
    pub async fn on_response(
        &self,
        resp: &mut ResponseView<'_>,
        state: &mut ExchangeState,
    ) -> Flow {
        for p in self.policies.iter().rev() {
            tag(p.policy.on_response(resp, state).await, &p.name)?;
        }
        Flow::Continue(())
    }

    /// Runs the response body phase, last policy first.
    pub async fn on_response_body(
        &self,
        resp: &mut ResponseView<'_>,
        state: &mut ExchangeState,
        body: &mut Bytes,
    ) -> Flow {
        for p in self.policies.iter().rev() {
            tag(p.policy.on_response_body(resp, state, body).await, &p.name)?;
        }
        Flow::Continue(())
    }

    /// Runs every policy's completion phase.
    pub async fn on_complete(&self, done: &Completion<'_>, state: &mut ExchangeState) {
        for p in &self.policies {
            p.policy.on_complete(done, state).await;
        }
    }
}
