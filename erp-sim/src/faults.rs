//! Applies behaviours and scripts: decides, request by request, whether the simulator answers,
//! fails, drops or hangs and how long it waits first, and moves a script from phase to phase.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::StatusCode;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::behaviour::{Behaviour, LatencyPoint, Script};
use crate::lock::lock;

/// What to do with one request, decided when its headers arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Answer,
    Fail {
        status: StatusCode,
        retry_after: Option<u64>,
    },
    Drop,
    Hang,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) delay: Option<Duration>,
    pub(crate) action: Action,
}

/// What the listener must do because a behaviour took effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Transition {
    /// Stop listening until then.
    pub(crate) down_until: Option<Instant>,
    /// Call [`Faults::advance`] with this generation at that time.
    pub(crate) next_phase: Option<(Instant, u64)>,
}

/// A behaviour in effect, with what it counts and draws.
struct Active {
    behaviour: Behaviour,
    seed: u64,
    /// Requests planned since this behaviour took effect (for `fail_every`).
    arrivals: u64,
    /// Two streams of one seed, so turning latency on does not change which requests fail.
    fault_rng: ChaCha8Rng,
    latency_rng: ChaCha8Rng,
}

impl Active {
    fn new(behaviour: Behaviour) -> Active {
        let seed = behaviour.seed.unwrap_or_else(rand::random);
        let stream = |n| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(n);
            rng
        };
        Active {
            seed,
            arrivals: 0,
            fault_rng: stream(0),
            latency_rng: stream(1),
            behaviour,
        }
    }

    fn plan(&mut self) -> Plan {
        self.arrivals += 1;
        let behaviour = &mut self.behaviour;
        // Drawn for every request, so the sequence of outcomes depends only on the seed and
        // the order of requests.
        let chosen = match (behaviour.fail_every, behaviour.fail_ratio) {
            (Some(every), _) => self.arrivals.is_multiple_of(every),
            (None, Some(ratio)) => self.fault_rng.random::<f64>() < ratio.get(),
            (None, None) => true,
        };
        let misbehaves =
            behaviour.drop_connection || behaviour.hang || behaviour.fail_status.is_some();
        let fails = misbehaves
            && chosen
            && match behaviour.fail_count.as_mut() {
                None => true,
                Some(0) => false,
                Some(left) => {
                    *left -= 1;
                    true
                }
            };
        let action = if !fails {
            Action::Answer
        } else if behaviour.drop_connection {
            Action::Drop
        } else if behaviour.hang {
            Action::Hang
        } else {
            Action::Fail {
                status: behaviour
                    .fail_status
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                retry_after: behaviour.retry_after,
            }
        };
        let mut delay_ms = behaviour.delay_ms.unwrap_or(0);
        if let Some(jitter) = behaviour.jitter_ms.filter(|&j| j > 0) {
            delay_ms = delay_ms.saturating_add(self.latency_rng.random_range(0..=jitter));
        }
        if let Some(points) = &behaviour.latency_percentiles {
            let at = self.latency_rng.random::<f64>() * 100.0;
            delay_ms = delay_ms.saturating_add(latency_at(points, at));
        }
        Plan {
            delay: (delay_ms > 0).then(|| Duration::from_millis(delay_ms)),
            action,
        }
    }
}

/// The delay at percentile `at` of the distribution the points describe.
fn latency_at(points: &[LatencyPoint], at: f64) -> u64 {
    let mut below: Option<&LatencyPoint> = None;
    for point in points {
        if at <= point.percentile.get() {
            return match below {
                None => point.ms,
                Some(low) => {
                    let span = point.percentile.get() - low.percentile.get();
                    let share = if span > 0.0 {
                        (at - low.percentile.get()) / span
                    } else {
                        1.0
                    };
                    let extra = (point.ms - low.ms) as f64 * share;
                    low.ms + extra.round() as u64
                }
            };
        }
        below = Some(point);
    }
    points.last().map_or(0, |point| point.ms)
}

struct ScriptRun {
    script: Script,
    phase: usize,
    phase_started: Instant,
}

impl ScriptRun {
    fn phase_ends(&self) -> Option<Instant> {
        let is_last = self.phase + 1 == self.script.phases.len();
        if is_last && !self.script.repeat {
            return None;
        }
        let duration = self.script.phases.get(self.phase)?.duration_ms;
        Some(self.phase_started + Duration::from_millis(duration))
    }
}

struct FaultState {
    active: Active,
    script: Option<ScriptRun>,
    /// Bumped whenever a behaviour or script replaces the current one, so a phase timer of an
    /// old script does nothing.
    generation: u64,
}

impl FaultState {
    /// Puts `behaviour` in effect from `started`; a script's phase passes its run.
    fn activate(&mut self, behaviour: Behaviour, started: Instant) -> Transition {
        let down_until = behaviour
            .down_for_ms
            .map(|ms| started + Duration::from_millis(ms));
        self.active = Active::new(behaviour);
        let next_phase = self
            .script
            .as_ref()
            .and_then(ScriptRun::phase_ends)
            .map(|at| (at, self.generation));
        Transition {
            down_until,
            next_phase,
        }
    }
}

/// The behaviour or script in effect.
pub(crate) struct Faults {
    state: Mutex<FaultState>,
}

impl Faults {
    pub(crate) fn new() -> Faults {
        Faults {
            state: Mutex::new(FaultState {
                active: Active::new(Behaviour::default()),
                script: None,
                generation: 0,
            }),
        }
    }

    /// Decides the fate of a request, consuming one of `fail_count` if it fails.
    pub(crate) fn plan(&self) -> Plan {
        lock(&self.state).active.plan()
    }

    /// Replaces the behaviour (ending any script).
    pub(crate) fn set_behaviour(&self, behaviour: Behaviour, now: Instant) -> Transition {
        let mut state = lock(&self.state);
        state.generation += 1;
        state.script = None;
        state.activate(behaviour, now)
    }

    /// Starts `script` at its first phase.
    pub(crate) fn set_script(&self, script: Script, now: Instant) -> Transition {
        let mut state = lock(&self.state);
        state.generation += 1;
        let first = script.phases.first().map(|p| p.behaviour.clone());
        state.script = Some(ScriptRun {
            script,
            phase: 0,
            phase_started: now,
        });
        state.activate(first.unwrap_or_default(), now)
    }

    /// Moves the script of `generation` to its next phase, which starts when the previous one
    /// was due to end (not when this runs), so phases do not drift. `None` when that script
    /// has been replaced or is holding its last phase.
    pub(crate) fn advance(&self, generation: u64) -> Option<Transition> {
        let mut state = lock(&self.state);
        if state.generation != generation {
            return None;
        }
        let run = state.script.as_mut()?;
        let started = run.phase_ends()?;
        run.phase = (run.phase + 1) % run.script.phases.len();
        run.phase_started = started;
        let behaviour = run.script.phases.get(run.phase)?.behaviour.clone();
        Some(state.activate(behaviour, started))
    }

    /// The behaviour in effect, with `fail_count` showing how many failures remain.
    pub(crate) fn behaviour(&self) -> Behaviour {
        lock(&self.state).active.behaviour.clone()
    }

    /// The behaviour in effect plus `seed_in_use` and, under a script, where it stands.
    pub(crate) fn status_json(&self, now: Instant) -> Value {
        let state = lock(&self.state);
        let mut status = serde_json::to_value(&state.active.behaviour).unwrap_or(Value::Null);
        let script = state.script.as_ref().map(|run| {
            json!({
                "phase": run.phase,
                "phases": run.script.phases.len(),
                "repeat": run.script.repeat,
                "phase_ends_in_ms": run.phase_ends().map(|end| {
                    u64::try_from(end.saturating_duration_since(now).as_millis())
                        .unwrap_or(u64::MAX)
                }),
                "script": run.script,
            })
        });
        if let Value::Object(fields) = &mut status {
            fields.insert("seed_in_use".into(), json!(state.active.seed));
            fields.insert("script".into(), script.unwrap_or(Value::Null));
        }
        status
    }

    /// The phase of the running script, if any (`(phase index, phase count)`).
    pub(crate) fn script_phase(&self) -> Option<(usize, usize)> {
        let state = lock(&self.state);
        let run = state.script.as_ref()?;
        Some((run.phase, run.script.phases.len()))
    }

    pub(crate) fn reset(&self) {
        self.set_behaviour(Behaviour::default(), Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::behaviour::{Phase, Ratio};

    fn faults_with(behaviour: Behaviour) -> Faults {
        let faults = Faults::new();
        faults.set_behaviour(behaviour, Instant::now());
        faults
    }

    fn actions(faults: &Faults, n: usize) -> Vec<Action> {
        (0..n).map(|_| faults.plan().action).collect()
    }

    const UNAVAILABLE: Action = Action::Fail {
        status: StatusCode::SERVICE_UNAVAILABLE,
        retry_after: None,
    };

    #[test]
    fn fail_count_counts_down_then_requests_are_answered() {
        let faults = faults_with(Behaviour::fail(503, Some(2)));
        assert_eq!(
            actions(&faults, 3),
            [UNAVAILABLE, UNAVAILABLE, Action::Answer]
        );
        assert_eq!(faults.behaviour().fail_count, Some(0));
    }

    #[test]
    fn without_fail_count_every_request_fails() {
        let faults = faults_with(Behaviour::fail(500, None));
        let fail = Action::Fail {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            retry_after: None,
        };
        assert_eq!(actions(&faults, 5), [fail; 5]);
    }

    #[test]
    fn drop_wins_over_hang_and_fail_status_and_delay_is_kept() {
        let faults = faults_with(Behaviour {
            delay_ms: Some(7),
            fail_status: Some(500),
            fail_count: Some(1),
            drop_connection: true,
            hang: true,
            ..Behaviour::default()
        });
        assert_eq!(
            faults.plan(),
            Plan {
                delay: Some(Duration::from_millis(7)),
                action: Action::Drop
            }
        );
        assert_eq!(faults.plan().action, Action::Answer);
        let faults = faults_with(Behaviour {
            fail_status: Some(500),
            ..Behaviour::hang(None)
        });
        assert_eq!(faults.plan().action, Action::Hang);
    }

    #[test]
    fn fail_every_fails_every_nth_and_fail_count_caps_it() {
        let faults = faults_with(Behaviour::fail_every(503, 2).with_retry_after(3));
        let fail = Action::Fail {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: Some(3),
        };
        let a = Action::Answer;
        assert_eq!(actions(&faults, 6), [a, fail, a, fail, a, fail]);
        let faults = faults_with(Behaviour {
            fail_count: Some(1),
            ..Behaviour::fail_every(503, 3)
        });
        assert_eq!(actions(&faults, 7), [a, a, UNAVAILABLE, a, a, a, a]);
    }

    #[test]
    fn fail_ratio_is_reproducible_for_a_seed_and_near_its_ratio() {
        let ratio = Ratio::new(0.3).unwrap();
        let run = |seed| actions(&faults_with(Behaviour::fail_ratio(503, ratio, seed)), 2000);
        let first = run(42);
        assert_eq!(first, run(42), "same seed, same outcomes");
        assert_ne!(first, run(43), "another seed, other outcomes");
        let failed = first.iter().filter(|a| **a == UNAVAILABLE).count();
        // 600 expected; the binomial standard deviation is about 20.
        assert!((500..700).contains(&failed), "{failed} failures in 2000");
        let none = actions(
            &faults_with(Behaviour::fail_ratio(503, Ratio::new(0.0).unwrap(), 1)),
            100,
        );
        assert!(none.iter().all(|a| *a == Action::Answer));
        let all = actions(
            &faults_with(Behaviour::fail_ratio(503, Ratio::new(1.0).unwrap(), 1)),
            100,
        );
        assert!(all.iter().all(|a| *a == UNAVAILABLE));
    }

    #[test]
    fn latency_does_not_change_which_requests_fail() {
        let ratio = Ratio::new(0.5).unwrap();
        let plain = actions(&faults_with(Behaviour::fail_ratio(503, ratio, 9)), 200);
        let slow = faults_with(Behaviour {
            jitter_ms: Some(5),
            ..Behaviour::fail_ratio(503, ratio, 9)
        });
        assert_eq!(plain, actions(&slow, 200));
    }

    #[test]
    fn jitter_and_percentiles_stay_within_their_bounds() {
        let faults = faults_with(Behaviour {
            delay_ms: Some(10),
            jitter_ms: Some(5),
            seed: Some(1),
            ..Behaviour::default()
        });
        let delays: Vec<u64> = (0..500)
            .map(|_| faults.plan().delay.map_or(0, |d| d.as_millis() as u64))
            .collect();
        assert!(delays.iter().all(|d| (10..=15).contains(d)), "{delays:?}");
        assert!(delays.contains(&10) && delays.contains(&15));
    }

    #[test]
    fn percentile_points_interpolate() {
        let points = [
            LatencyPoint::new(50.0, 10),
            LatencyPoint::new(90.0, 50),
            LatencyPoint::new(100.0, 1000),
        ];
        assert_eq!(latency_at(&points, 0.0), 10);
        assert_eq!(latency_at(&points, 50.0), 10);
        assert_eq!(latency_at(&points, 70.0), 30);
        assert_eq!(latency_at(&points, 90.0), 50);
        assert_eq!(latency_at(&points, 95.0), 525);
        assert_eq!(latency_at(&points, 100.0), 1000);
        let faults = faults_with(Behaviour {
            latency_percentiles: Some(points.to_vec()),
            seed: Some(3),
            ..Behaviour::default()
        });
        let mut delays: Vec<u64> = (0..1000)
            .map(|_| faults.plan().delay.map_or(0, |d| d.as_millis() as u64))
            .collect();
        delays.sort_unstable();
        assert_eq!(delays[0], 10);
        assert!(delays[499] <= 12, "median {}", delays[499]);
        assert!((40..=60).contains(&delays[899]), "p90 {}", delays[899]);
        assert!(delays[999] <= 1000);
    }

    #[test]
    fn a_script_moves_through_its_phases_and_holds_the_last() {
        let faults = Faults::new();
        let start = Instant::now();
        let script = Script::new(vec![
            Phase::new(100, Behaviour::fail(503, None)),
            Phase::new(50, Behaviour::down_for_ms(20)),
            Phase::new(10, Behaviour::default()),
        ]);
        let t = faults.set_script(script, start);
        let first_end = start + Duration::from_millis(100);
        assert_eq!(t.down_until, None);
        let (at, generation) = t.next_phase.unwrap();
        assert_eq!(at, first_end);
        assert_eq!(faults.plan().action, UNAVAILABLE);

        let t = faults.advance(generation).unwrap();
        assert_eq!(t.down_until, Some(first_end + Duration::from_millis(20)));
        assert_eq!(
            t.next_phase,
            Some((first_end + Duration::from_millis(50), generation))
        );
        assert_eq!(faults.script_phase(), Some((1, 3)));
        assert_eq!(faults.plan().action, Action::Answer);

        let t = faults.advance(generation).unwrap();
        assert_eq!(t, Transition::default(), "the last phase is held");
        assert_eq!(faults.script_phase(), Some((2, 3)));
        assert_eq!(faults.advance(generation), None);
        let status = faults.status_json(start);
        assert_eq!(status["script"]["phase"], 2);
        assert_eq!(status["script"]["phase_ends_in_ms"], Value::Null);
    }

    #[test]
    fn a_repeating_script_starts_over_and_a_new_behaviour_ends_it() {
        let faults = Faults::new();
        let start = Instant::now();
        let mut script = Script::new(vec![
            Phase::new(10, Behaviour::fail(503, Some(1))),
            Phase::new(10, Behaviour::default()),
        ]);
        script.repeat = true;
        let (_, generation) = faults.set_script(script, start).next_phase.unwrap();
        assert_eq!(faults.plan().action, UNAVAILABLE);
        assert_eq!(faults.plan().action, Action::Answer);
        faults.advance(generation).unwrap();
        let t = faults.advance(generation).unwrap();
        assert_eq!(faults.script_phase(), Some((0, 2)));
        assert_eq!(
            t.next_phase,
            Some((start + Duration::from_millis(30), generation))
        );
        assert_eq!(
            faults.plan().action,
            UNAVAILABLE,
            "fail_count starts afresh"
        );

        faults.set_behaviour(Behaviour::default(), start);
        assert_eq!(faults.advance(generation), None, "the old timer is stale");
        assert_eq!(faults.script_phase(), None);
    }
}
