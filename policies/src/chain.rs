//! The precomputed chain a route runs: its named policies in order, each phase run across them
//! (request phases in route order, response phases in reverse), stopping at the first reply.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::kinds::Policy;
use crate::pipeline::{
    Completion, ExchangeState, Flow, PolicyRun, RequestView, ResponseView, phase,
};

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
    /// The phases at least one of the policies implements (`phase` bits).
    phases: u8,
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

/// When the request is traced and `p` implements `phase`, the phase's start (else `None`, and
/// nothing is recorded).
fn run_started(state: &ExchangeState, p: &NamedPolicy, phase: u8) -> Option<Instant> {
    (state.policy_runs.is_some() && p.policy.phases() & phase != 0).then(Instant::now)
}

/// Records a phase of `p` that started at `started`, when the request is traced.
fn record(
    state: &mut ExchangeState,
    p: &NamedPolicy,
    phase: &'static str,
    started: Option<Instant>,
    flow: &Flow,
) {
    if let (Some(started), Some(runs)) = (started, state.policy_runs.as_mut()) {
        runs.push(PolicyRun {
            policy: p.name.clone(),
            kind: p.policy.kind(),
            phase,
            started,
            ended: Instant::now(),
            refused: match flow {
                Flow::Break(reply) => Some((reply.status.as_u16(), reply.reason)),
                Flow::Continue(()) => None,
            },
        });
    }
}

impl Chain {
    /// A chain of these policies.
    pub fn new(policies: Vec<Arc<NamedPolicy>>) -> Self {
        let needs_body = policies.iter().any(|p| p.policy.needs_body());
        let repeat_safe = policies.iter().any(|p| p.policy.makes_repeats_safe());
        let phases = policies.iter().fold(0, |all, p| all | p.policy.phases());
        Chain {
            policies,
            needs_body,
            repeat_safe,
            phases,
        }
    }

    /// Whether a policy of the chain implements `phase` (a `pipeline::phase` bit): the proxy
    /// skips a phase nobody implements, and the work around it (the response head's copy for
    /// `on_response`, the completion's future).
    pub fn runs(&self, phase: u8) -> bool {
        self.phases & phase != 0
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
            let started = run_started(state, p, phase::REQUEST);
            let flow = tag(p.policy.on_request(req, state).await, &p.name);
            record(state, p, "request", started, &flow);
            flow?;
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
            let started = run_started(state, p, phase::REQUEST_BODY);
            let flow = tag(p.policy.on_request_body(req, state, body).await, &p.name);
            record(state, p, "request_body", started, &flow);
            flow?;
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
            let started = run_started(state, p, phase::RESPONSE);
            let flow = tag(p.policy.on_response(resp, state).await, &p.name);
            record(state, p, "response", started, &flow);
            flow?;
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
            let started = run_started(state, p, phase::RESPONSE_BODY);
            let flow = tag(p.policy.on_response_body(resp, state, body).await, &p.name);
            record(state, p, "response_body", started, &flow);
            flow?;
        }
        Flow::Continue(())
    }

    /// Runs every policy's completion phase.
    pub async fn on_complete(&self, done: &Completion<'_>, state: &mut ExchangeState) {
        for p in &self.policies {
            let started = run_started(state, p, phase::COMPLETE);
            p.policy.on_complete(done, state).await;
            record(state, p, "complete", started, &Flow::Continue(()));
        }
    }
}
