//! Several policies run as one filter (the `portcullis` bundle): one wasm VM, one hop, one `Exchange` per
//! request, so host reads are shared by the whole chain. The semantics are those of the same policies as
//! separate filters in the same order:
//! - request callbacks run in order; a local response stops the chain (later policies never see the request);
//! - header edits go through the shared `Exchange`, so later policies see them;
//! - a pause in request headers (e.g. waiting for JWKS) stops the chain at that policy; on resume it continues
//!   from there; a pause in the request body means "buffer more" and re-runs the body callbacks with more data;
//! - response headers run in the order the host runs separate filters' response callbacks (Envoy: reverse;
//!   Kong's engine: chain order, see [`Exchange::response_callbacks_reversed`]), only for policies whose request
//!   callback ran;
//! - `on_log` runs for every policy whose request callback ran;
//! - timers: each policy ticks at its own period; callout answers go back to the policy that made the call.

use crate::config::ConfigError;
use crate::decision::Decision;
use crate::exchange::Exchange;
use crate::host::{CalloutResponse, RootHost};
use crate::policy::Policy;
use crate::store::SharedData;
use std::any::Any;
use std::cell::RefCell;
use std::time::Duration;

/// A policy with its state type erased, so policies of different types can share one chain.
pub trait DynPolicy {
    fn name(&self) -> &'static str;
    fn new_state(&self) -> Box<dyn Any>;
    fn on_request_headers(&self, state: &mut dyn Any, ex: &mut Exchange) -> Decision;
    fn wants_request_body(&self) -> bool;
    fn on_request_body(
        &self,
        state: &mut dyn Any,
        ex: &mut Exchange,
        size: usize,
        end: bool,
    ) -> Decision;
    fn on_response_headers(&self, state: &mut dyn Any, ex: &mut Exchange) -> Decision;
    fn on_log(&self, state: &mut dyn Any, ex: &mut Exchange);
    fn on_resume(&self, state: &mut dyn Any, ex: &mut Exchange, timed_out: bool) -> Decision;
    fn tick_period(&self) -> Option<Duration>;
    fn on_start(&self, root: &mut dyn RootHost);
    fn on_tick(&self, root: &mut dyn RootHost);
    fn on_callout_response(
        &self,
        root: &mut dyn RootHost,
        token: u32,
        response: Option<CalloutResponse>,
    );
    fn max_pause(&self) -> Duration;
}

fn state_of<P: Policy>(state: &mut dyn Any) -> Option<&mut P::State> {
    state.downcast_mut::<P::State>()
}

impl<P: Policy> DynPolicy for P {
    fn name(&self) -> &'static str {
        P::NAME
    }
    fn new_state(&self) -> Box<dyn Any> {
        Box::new(P::State::default())
    }
    fn on_request_headers(&self, state: &mut dyn Any, ex: &mut Exchange) -> Decision {
        state_of::<P>(state).map_or(Decision::Continue, |s| {
            Policy::on_request_headers(self, s, ex)
        })
    }
    fn wants_request_body(&self) -> bool {
        Policy::wants_request_body(self)
    }
    fn on_request_body(
        &self,
        state: &mut dyn Any,
        ex: &mut Exchange,
        size: usize,
        end: bool,
    ) -> Decision {
        state_of::<P>(state).map_or(Decision::Continue, |s| {
            Policy::on_request_body(self, s, ex, size, end)
        })
    }
    fn on_response_headers(&self, state: &mut dyn Any, ex: &mut Exchange) -> Decision {
        state_of::<P>(state).map_or(Decision::Continue, |s| {
            Policy::on_response_headers(self, s, ex)
        })
    }
    fn on_log(&self, state: &mut dyn Any, ex: &mut Exchange) {
        if let Some(s) = state_of::<P>(state) {
            Policy::on_log(self, s, ex);
        }
    }
    fn on_resume(&self, state: &mut dyn Any, ex: &mut Exchange, timed_out: bool) -> Decision {
        state_of::<P>(state).map_or(Decision::Continue, |s| {
            Policy::on_resume(self, s, ex, timed_out)
        })
    }
    fn tick_period(&self) -> Option<Duration> {
        Policy::tick_period(self)
    }
    fn on_start(&self, root: &mut dyn RootHost) {
        Policy::on_start(self, root)
    }
    fn on_tick(&self, root: &mut dyn RootHost) {
        Policy::on_tick(self, root)
    }
    fn on_callout_response(
        &self,
        root: &mut dyn RootHost,
        token: u32,
        response: Option<CalloutResponse>,
    ) {
        Policy::on_callout_response(self, root, token, response)
    }
    fn max_pause(&self) -> Duration {
        Policy::max_pause(self)
    }
}

/// Per-request state of a chain.
#[derive(Default)]
pub struct ChainState {
    states: Vec<Box<dyn Any>>,
    /// How many policies (from the start) have seen the request headers.
    started: usize,
    /// The step whose request-headers callback paused (waiting for a wake-up).
    paused: Option<usize>,
    /// A policy answered locally: no later request callback runs.
    responded: bool,
}

/// One step of a chain: a policy and the JSON path of its config (for messages).
pub struct Step {
    pub policy: Box<dyn DynPolicy>,
    pub path: String,
}

pub struct Chain {
    steps: Vec<Step>,
    /// Per step: when its next tick is due (µs since epoch), for steps with a timer.
    next_tick_us: RefCell<Vec<Option<u64>>>,
    /// Callout token → step index, so an answer reaches the policy that asked.
    callouts: RefCell<Vec<(u32, usize)>>,
}

/// Most callouts in flight the chain remembers; older entries are dropped (their answers are ignored).
const MAX_TRACKED_CALLOUTS: usize = 256;

impl Chain {
    pub fn new(steps: Vec<Step>) -> Result<Chain, ConfigError> {
        if steps.is_empty() {
            return Err(ConfigError::at("chain", "must hold at least one policy"));
        }
        let n = steps.len();
        Ok(Chain {
            steps,
            next_tick_us: RefCell::new(vec![None; n]),
            callouts: RefCell::new(Vec::new()),
        })
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.steps.iter().map(|s| s.policy.name()).collect()
    }

    fn ensure_states(&self, state: &mut ChainState) {
        if state.states.len() != self.steps.len() {
            state.states = self.steps.iter().map(|s| s.policy.new_state()).collect();
        }
    }

    /// Runs request-header callbacks from step `from` on.
    fn run_request_headers(
        &self,
        from: usize,
        state: &mut ChainState,
        ex: &mut Exchange,
    ) -> Decision {
        for i in from..self.steps.len() {
            let decision = self.steps[i]
                .policy
                .on_request_headers(state.states[i].as_mut(), ex);
            state.started = state.started.max(i + 1);
            match decision {
                Decision::Continue => {}
                Decision::Pause => {
                    state.paused = Some(i);
                    return Decision::Pause;
                }
                Decision::Respond(r) => {
                    state.responded = true;
                    return Decision::Respond(r);
                }
            }
        }
        Decision::Continue
    }

    pub fn on_request_headers(&self, state: &mut ChainState, ex: &mut Exchange) -> Decision {
        self.ensure_states(state);
        self.run_request_headers(0, state, ex)
    }

    pub fn wants_request_body(&self) -> bool {
        self.steps.iter().any(|s| s.policy.wants_request_body())
    }

    pub fn on_request_body(
        &self,
        state: &mut ChainState,
        ex: &mut Exchange,
        size: usize,
        end: bool,
    ) -> Decision {
        if state.responded || state.paused.is_some() {
            return Decision::Continue;
        }
        for i in 0..state.started.min(self.steps.len()) {
            let step = &self.steps[i];
            if !step.policy.wants_request_body() {
                continue;
            }
            match step
                .policy
                .on_request_body(state.states[i].as_mut(), ex, size, end)
            {
                Decision::Continue => {}
                Decision::Pause => return Decision::Pause,
                Decision::Respond(r) => {
                    state.responded = true;
                    return Decision::Respond(r);
                }
            }
        }
        Decision::Continue
    }

    pub fn on_resume(
        &self,
        state: &mut ChainState,
        ex: &mut Exchange,
        timed_out: bool,
    ) -> Decision {
        let Some(i) = state.paused.take() else {
            return Decision::Continue;
        };
        self.ensure_states(state);
        match self.steps[i]
            .policy
            .on_resume(state.states[i].as_mut(), ex, timed_out)
        {
            Decision::Continue => self.run_request_headers(i + 1, state, ex),
            Decision::Pause => {
                state.paused = Some(i);
                Decision::Pause
            }
            Decision::Respond(r) => {
                state.responded = true;
                Decision::Respond(r)
            }
        }
    }

    pub fn on_response_headers(&self, state: &mut ChainState, ex: &mut Exchange) -> Decision {
        let started = state.started.min(self.steps.len());
        let reversed = ex.response_callbacks_reversed();
        for k in 0..started {
            let i = if reversed { started - 1 - k } else { k };
            if let Decision::Respond(r) = self.steps[i]
                .policy
                .on_response_headers(state.states[i].as_mut(), ex)
            {
                return Decision::Respond(r);
            }
        }
        Decision::Continue
    }

    pub fn on_log(&self, state: &mut ChainState, ex: &mut Exchange) {
        for i in 0..state.started.min(self.steps.len()) {
            self.steps[i].policy.on_log(state.states[i].as_mut(), ex);
        }
    }

    /// The shortest timer period of any step (each step still ticks at its own period).
    pub fn tick_period(&self) -> Option<Duration> {
        self.steps
            .iter()
            .filter_map(|s| s.policy.tick_period())
            .min()
    }

    pub fn max_pause(&self) -> Duration {
        self.steps
            .iter()
            .map(|s| s.policy.max_pause())
            .max()
            .unwrap_or_default()
    }

    pub fn on_start(&self, root: &mut dyn RootHost) {
        for (i, step) in self.steps.iter().enumerate() {
            let mut tracked = TrackingRoot {
                inner: root,
                step: i,
                chain: self,
            };
            step.policy.on_start(&mut tracked);
        }
    }

    pub fn on_tick(&self, root: &mut dyn RootHost) {
        let now_us = u64::try_from(root.now().as_micros()).unwrap_or(u64::MAX);
        for (i, step) in self.steps.iter().enumerate() {
            let Some(period) = step.policy.tick_period() else {
                continue;
            };
            let due = self.next_tick_us.borrow().get(i).copied().flatten();
            if due.is_some_and(|d| now_us < d) {
                continue;
            }
            let period_us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
            if let Some(slot) = self.next_tick_us.borrow_mut().get_mut(i) {
                *slot = Some(now_us.saturating_add(period_us));
            }
            let mut tracked = TrackingRoot {
                inner: root,
                step: i,
                chain: self,
            };
            step.policy.on_tick(&mut tracked);
        }
    }

    pub fn on_callout_response(
        &self,
        root: &mut dyn RootHost,
        token: u32,
        response: Option<CalloutResponse>,
    ) {
        let owner = {
            let mut calls = self.callouts.borrow_mut();
            let at = calls.iter().position(|(t, _)| *t == token);
            at.map(|at| calls.remove(at).1)
        };
        if let Some(i) = owner {
            let mut tracked = TrackingRoot {
                inner: root,
                step: i,
                chain: self,
            };
            self.steps[i]
                .policy
                .on_callout_response(&mut tracked, token, response);
        }
    }

    fn remember_callout(&self, token: u32, step: usize) {
        let mut calls = self.callouts.borrow_mut();
        if calls.len() >= MAX_TRACKED_CALLOUTS {
            calls.remove(0);
        }
        calls.push((token, step));
    }
}

/// Passes root calls through, noting which step dispatched each callout.
struct TrackingRoot<'a> {
    inner: &'a mut dyn RootHost,
    step: usize,
    chain: &'a Chain,
}

impl RootHost for TrackingRoot<'_> {
    fn now(&self) -> Duration {
        self.inner.now()
    }
    fn shared_data(&mut self) -> &mut dyn SharedData {
        self.inner.shared_data()
    }
    fn dispatch_http_call(
        &mut self,
        upstream: &str,
        method: &str,
        path: &str,
        authority: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, String> {
        let token = self
            .inner
            .dispatch_http_call(upstream, method, path, authority, headers, body, timeout)?;
        self.chain.remember_callout(token, self.step);
        Ok(token)
    }
    fn wake_paused(&mut self) {
        self.inner.wake_paused();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::LocalResponse;
    use crate::testing::FakeHost;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A policy that records what it saw and does what it is told.
    struct Probe {
        name: &'static str,
        log: Rc<RefCell<Vec<String>>>,
        on_headers: Decision,
        resumes: Cell<usize>,
    }

    #[derive(Default)]
    struct ProbeState;

    impl Policy for Probe {
        const NAME: &'static str = "probe";
        type State = ProbeState;
        fn configure(_: &[u8]) -> Result<Self, ConfigError> {
            Err(ConfigError::at("", "built directly in tests"))
        }
        fn on_request_headers(&self, _: &mut ProbeState, ex: &mut Exchange) -> Decision {
            let seen = ex.request_header("x-trail").unwrap_or("").to_string();
            self.log
                .borrow_mut()
                .push(format!("{} req (trail={seen})", self.name));
            ex.set_request_header("x-trail", Some(&format!("{seen}{}", self.name)));
            self.on_headers.clone()
        }
        fn on_resume(&self, _: &mut ProbeState, _: &mut Exchange, timed_out: bool) -> Decision {
            self.resumes.set(self.resumes.get() + 1);
            self.log
                .borrow_mut()
                .push(format!("{} resume timed_out={timed_out}", self.name));
            Decision::Continue
        }
        fn on_response_headers(&self, _: &mut ProbeState, _: &mut Exchange) -> Decision {
            self.log.borrow_mut().push(format!("{} resp", self.name));
            Decision::Continue
        }
        fn on_log(&self, _: &mut ProbeState, _: &mut Exchange) {
            self.log.borrow_mut().push(format!("{} log", self.name));
        }
    }

    fn chain(specs: &[(&'static str, Decision)]) -> (Chain, Rc<RefCell<Vec<String>>>) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let steps = specs
            .iter()
            .map(|(name, d)| Step {
                policy: Box::new(Probe {
                    name,
                    log: log.clone(),
                    on_headers: d.clone(),
                    resumes: Cell::new(0),
                }),
                path: format!("chain[{name}]"),
            })
            .collect();
        (Chain::new(steps).unwrap(), log)
    }

    fn exchange() -> Exchange {
        Exchange::new(Box::new(FakeHost::request("GET", "/")))
    }

    #[test]
    fn policies_run_in_order_and_see_earlier_edits_responses_in_reverse() {
        let (c, log) = chain(&[("a", Decision::Continue), ("b", Decision::Continue)]);
        let (mut st, mut ex) = (ChainState::default(), exchange());
        assert_eq!(c.on_request_headers(&mut st, &mut ex), Decision::Continue);
        assert_eq!(c.on_response_headers(&mut st, &mut ex), Decision::Continue);
        c.on_log(&mut st, &mut ex);
        assert_eq!(
            *log.borrow(),
            vec![
                "a req (trail=)",
                "b req (trail=a)",
                "b resp",
                "a resp",
                "a log",
                "b log"
            ]
        );
    }

    /// Kong's engine runs separate filters' response callbacks in chain order: so does the chain there.
    #[test]
    fn on_kongs_engine_responses_run_in_chain_order() {
        let (c, log) = chain(&[("a", Decision::Continue), ("b", Decision::Continue)]);
        let mut st = ChainState::default();
        let mut ex = Exchange::new(Box::new(FakeHost::kong_request("GET", "/", "/")));
        assert_eq!(c.on_request_headers(&mut st, &mut ex), Decision::Continue);
        assert_eq!(c.on_response_headers(&mut st, &mut ex), Decision::Continue);
        assert_eq!(
            log.borrow()[2..],
            ["a resp".to_string(), "b resp".to_string()]
        );
    }

    #[test]
    fn a_local_response_stops_the_chain_and_later_policies_never_run() {
        let deny = Decision::Respond(LocalResponse::json_error(403, "no"));
        let (c, log) = chain(&[
            ("a", Decision::Continue),
            ("b", deny.clone()),
            ("c", Decision::Continue),
        ]);
        let (mut st, mut ex) = (ChainState::default(), exchange());
        assert_eq!(c.on_request_headers(&mut st, &mut ex), deny);
        c.on_response_headers(&mut st, &mut ex);
        c.on_log(&mut st, &mut ex);
        let log = log.borrow();
        assert!(!log.iter().any(|l| l.starts_with("c ")), "{log:?}");
        assert!(log.contains(&"b log".to_string()) && log.contains(&"a log".to_string()));
    }

    #[test]
    fn a_pause_resumes_where_it_stopped() {
        let (c, log) = chain(&[
            ("a", Decision::Continue),
            ("b", Decision::Pause),
            ("c", Decision::Continue),
        ]);
        let (mut st, mut ex) = (ChainState::default(), exchange());
        assert_eq!(c.on_request_headers(&mut st, &mut ex), Decision::Pause);
        assert_eq!(c.on_resume(&mut st, &mut ex, false), Decision::Continue);
        assert_eq!(
            *log.borrow(),
            vec![
                "a req (trail=)",
                "b req (trail=a)",
                "b resume timed_out=false",
                "c req (trail=ab)"
            ]
        );
        // a second resume (spurious wake) does nothing
        assert_eq!(c.on_resume(&mut st, &mut ex, false), Decision::Continue);
        assert_eq!(log.borrow().len(), 4);
    }

    #[test]
    fn an_empty_chain_is_refused() {
        assert_eq!(
            Chain::new(Vec::new()).err().map(|e| e.path),
            Some("chain".to_string())
        );
    }
}
