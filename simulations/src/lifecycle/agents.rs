//! Simulated agents and clients: the outside world of the controllers, driven by the same
//! seed.
//!
//! An agent mirrors `mlcp agent` (src/agent/runtime.rs): it heartbeats the controller it
//! believes leads (running attempts included), long-polls for assignments, acknowledges a
//! start before executing, executes for some ticks, and reports — retrying the identical
//! report across controllers until one is acknowledged, dropping an attempt the controllers
//! reject as superseded or tell it to abort. It fails over on a redirect or a timeout with
//! jittered exponential backoff. Faults: crash (forgets everything), pause (does nothing,
//! then wakes up as a zombie still holding its old attempts), network loss, clock steps (its
//! timestamps change; the controllers must not care), and a clean stop (SIGTERM: no new
//! polls, running attempts finish within a grace, then a last heartbeat marked `leaving`,
//! then the process is gone until it starts again).
//!
//! A client submits tasks with idempotency keys and retries a submission that timed out or
//! was redirected against another controller with the same key.

use std::collections::BTreeMap;

use mlcp::manifest::command::{RegisterNode, ReportResult};
use mlcp::manifest::{ErrorKind, ManifestError};
use mlcp::proto::{NodeCapacity, RunningAttempt};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::checker::result_for;
use super::world::{Body, Endpoint, Rpc, TICK_MS};

/// Agent tunables (ticks are the simulator's, [`TICK_MS`] ms each).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Task slots.
    pub slots: u32,
    /// A unary call with no answer after this many ticks has failed.
    pub rpc_timeout_ticks: u64,
    /// Long-poll wait asked for, in ticks (the agent gives up after this plus the timeout).
    pub poll_wait_ticks: u64,
    /// First retry delay after a failed call, in ticks (doubles per failure).
    pub backoff_min_ticks: u64,
    /// Longest retry delay, in ticks.
    pub backoff_max_ticks: u64,
    /// Spread retry delays randomly over [d/2, d] (false: every agent retries at d).
    pub jitter: bool,
    /// Shortest execution, in ticks.
    pub run_ticks_min: u64,
    /// Longest execution, in ticks.
    pub run_ticks_max: u64,
    /// Chance in 1000 that an execution fails with a retryable application error.
    pub fail_retryable_per_mille: u32,
    /// Chance in 1000 that an execution fails with a permanent application error.
    pub fail_permanent_per_mille: u32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            slots: 2,
            rpc_timeout_ticks: 30,
            poll_wait_ticks: 200,
            backoff_min_ticks: 2,
            backoff_max_ticks: 40,
            jitter: true,
            run_ticks_min: 10,
            run_ticks_max: 60,
            fail_retryable_per_mille: 80,
            fail_permanent_per_mille: 30,
        }
    }
}

#[derive(Clone, Debug)]
enum HeldState {
    /// Waiting for the start acknowledgement (`req` is the call in flight).
    Acking { req: Option<(u64, u64)> },
    /// Executing until tick `done_at`.
    Running { done_at: u64, outcome: ReportResult },
    /// Reporting `report` until acknowledged.
    Reporting {
        report: ReportResult,
        req: Option<(u64, u64)>,
        next_try: u64,
        failures: u32,
    },
}

/// Outgoing effects of one agent step that the world must record.
#[derive(Debug, Default)]
pub struct AgentEvents {
    /// `(task_id, attempt)` started executing.
    pub executed: Vec<(String, u32)>,
    /// `(task_id, attempt)` whose success report was acknowledged.
    pub success_acked: Vec<(String, u32)>,
}

/// A clean stop in progress ([`Agent::stop`]).
#[derive(Clone, Copy, Debug)]
struct Stopping {
    /// Running attempts may finish until this tick; then the leaving heartbeat goes out.
    grace_until: u64,
    /// The process starts again at this tick.
    restart_at: u64,
    /// The leaving heartbeat was sent.
    told: bool,
}

/// One simulated agent.
#[derive(Debug)]
pub struct Agent {
    /// Node id (`a0`, `a1`, …).
    pub name: String,
    /// Index (its endpoint).
    pub idx: usize,
    /// Configuration.
    pub config: AgentConfig,
    /// Running (false while crashed).
    pub up: bool,
    /// Restart at this tick while crashed.
    pub restart_at: u64,
    /// Paused (SIGSTOP) until this tick.
    pub paused_until: u64,
    /// Network lost until this tick.
    pub net_down_until: u64,
    /// Offset of its wall clock from true time, in ms (clock steps).
    pub clock_offset_ms: i64,
    /// Controller it talks to.
    pub target: u64,
    controllers: Vec<u64>,
    held: BTreeMap<(String, u32), HeldState>,
    inbox: Vec<Rpc>,
    hb: Option<(u64, u64)>,
    hb_to: u64,
    next_hb_at: u64,
    /// Heartbeat interval handed back by the leader, in ms.
    pub interval_ms: u64,
    poll: Option<(u64, u64)>,
    poll_to: u64,
    next_poll_at: u64,
    failures: u32,
    registered: bool,
    next_req: u64,
    /// Calls sent (count), for the reconnect-storm measurement (S12).
    pub sent_at: Vec<u64>,
    /// Attempts the controllers told it to abort or rejected (count).
    pub aborted: u64,
    stopping: Option<Stopping>,
}

impl Agent {
    /// A fresh agent talking first to `controllers[0]`.
    pub fn new(idx: usize, config: AgentConfig, controllers: Vec<u64>) -> Agent {
        Agent {
            name: format!("a{idx}"),
            idx,
            config,
            up: true,
            restart_at: 0,
            paused_until: 0,
            net_down_until: 0,
            clock_offset_ms: 0,
            target: controllers[0],
            controllers,
            held: BTreeMap::new(),
            inbox: Vec::new(),
            hb: None,
            hb_to: 0,
            next_hb_at: 0,
            interval_ms: 1000,
            poll: None,
            poll_to: 0,
            next_poll_at: 0,
            failures: 0,
            registered: false,
            next_req: 1,
            sent_at: Vec::new(),
            aborted: 0,
            stopping: None,
        }
    }

    /// The registration this agent sends with every heartbeat.
    pub fn registration(&self) -> RegisterNode {
        RegisterNode {
            node_id: self.name.clone(),
            address: format!("10.0.0.{}:7000", self.idx),
            cloud_provider: "sim".into(),
            region: "r1".into(),
            capacity: Some(NodeCapacity {
                slots: self.config.slots,
                ..Default::default()
            }),
            labels: Default::default(),
        }
    }

    /// Attempts it holds, as reported in heartbeats.
    pub fn running(&self) -> Vec<RunningAttempt> {
        self.held
            .keys()
            .map(|(t, a)| RunningAttempt {
                task_id: t.clone(),
                attempt: *a,
            })
            .collect()
    }

    /// Whether the agent holds `(task_id, attempt)`.
    pub fn holds(&self, task_id: &str, attempt: u32) -> bool {
        self.held.contains_key(&(task_id.to_string(), attempt))
    }

    /// Crash: everything in memory is lost; back at `restart_at`.
    pub fn crash(&mut self, restart_at: u64) {
        let fresh = Agent::new(self.idx, self.config.clone(), self.controllers.clone());
        let (sent, aborted) = (std::mem::take(&mut self.sent_at), self.aborted);
        *self = fresh;
        self.sent_at = sent;
        self.aborted = aborted;
        self.up = false;
        self.restart_at = restart_at;
    }

    /// Clean stop (SIGTERM) at `now`: no new polls; running attempts may finish for
    /// `grace_ticks`; then a last heartbeat marked `leaving`, and the process is gone until
    /// `restart_at`, as `mlcp agent` does on SIGTERM.
    pub fn stop(&mut self, now: u64, grace_ticks: u64, restart_at: u64) {
        if self.up && self.stopping.is_none() {
            self.stopping = Some(Stopping {
                grace_until: now + grace_ticks,
                restart_at: restart_at.max(now + grace_ticks + 1),
                told: false,
            });
        }
    }

    /// Whether a clean stop is in progress.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// A message arrived for the agent (buffered; handled at its next step).
    pub fn receive(&mut self, rpc: Rpc) {
        if self.up {
            self.inbox.push(rpc);
        }
    }

    fn backoff(&mut self, rng: &mut ChaCha8Rng) -> u64 {
        let exp = self
            .config
            .backoff_min_ticks
            .saturating_mul(1 << self.failures.min(10))
            .min(self.config.backoff_max_ticks)
            .max(1);
        self.failures = self.failures.saturating_add(1);
        if self.config.jitter {
            rng.random_range(exp.div_ceil(2)..=exp)
        } else {
            exp
        }
    }

    fn fail_over(&mut self, hint: Option<u64>) {
        self.target = match hint {
            Some(h) if h != self.target => h,
            _ => {
                let pos = self
                    .controllers
                    .iter()
                    .position(|c| *c == self.target)
                    .unwrap_or(0);
                self.controllers[(pos + 1) % self.controllers.len()]
            }
        };
    }

    fn send(&mut self, now: u64, body: Body, out: &mut Vec<Rpc>) -> (u64, u64) {
        let req = self.next_req;
        self.next_req += 1;
        self.sent_at.push(now);
        out.push(Rpc {
            from: Endpoint::Agent(self.idx),
            to: Endpoint::Controller(self.target),
            req,
            body,
        });
        (req, now)
    }

    /// One tick of the agent at `now`. Calls go to `out`.
    pub fn step(
        &mut self,
        now: u64,
        rng: &mut ChaCha8Rng,
        out: &mut Vec<Rpc>,
        ev: &mut AgentEvents,
    ) {
        if !self.up {
            if now >= self.restart_at {
                self.up = true;
            }
            return;
        }
        if now < self.paused_until {
            return;
        }
        for rpc in std::mem::take(&mut self.inbox) {
            self.handle(now, rpc, rng, ev);
        }
        self.expire_calls(now, rng);
        if let Some(stop) = self.stopping {
            if stop.told && self.hb.is_none() {
                // The leaving heartbeat was answered (or timed out): the process exits.
                self.crash(stop.restart_at);
                return;
            }
            if !stop.told && self.hb.is_none() && (self.held.is_empty() || now >= stop.grace_until)
            {
                self.heartbeat(now, true, out);
                self.stopping = Some(Stopping { told: true, ..stop });
            }
        }
        let told = self.stopping.is_some_and(|s| s.told);
        if self.hb.is_none() && now >= self.next_hb_at && !told {
            self.heartbeat(now, false, out);
        }
        let free = self.held.len() < self.config.slots as usize;
        let polling = self.registered && free && self.stopping.is_none();
        if polling && self.poll.is_none() && now >= self.next_poll_at {
            let body = Body::Poll {
                node_id: self.name.clone(),
                wait_ticks: self.config.poll_wait_ticks,
            };
            self.poll = Some(self.send(now, body, out));
            self.poll_to = self.target;
        }
        self.work(now, rng, out, ev);
    }

    fn heartbeat(&mut self, now: u64, leaving: bool, out: &mut Vec<Rpc>) {
        let body = Body::Heartbeat {
            registration: self.registration(),
            running: self.running(),
            agent_time_ms: crate::lifecycle::world::T0_MS
                + (now * TICK_MS) as i64
                + self.clock_offset_ms,
            leaving,
        };
        self.hb = Some(self.send(now, body, out));
        self.hb_to = self.target;
    }

    fn expire_calls(&mut self, now: u64, rng: &mut ChaCha8Rng) {
        let t = self.config.rpc_timeout_ticks;
        // A call that timed out moves the agent off that controller only if it still talks
        // to it (a long poll left on a dead leader must not undo a later fail-over).
        if self.hb.is_some_and(|(_, at)| now >= at + t) {
            self.hb = None;
            if self.target == self.hb_to {
                self.fail_over(None);
            }
            self.next_hb_at = now + self.backoff(rng);
        }
        if self
            .poll
            .is_some_and(|(_, at)| now >= at + t + self.config.poll_wait_ticks)
        {
            self.poll = None;
            if self.target == self.poll_to {
                self.fail_over(None);
            }
            self.next_poll_at = now + self.backoff(rng);
        }
        for state in self.held.values_mut() {
            match state {
                HeldState::Acking { req } if req.is_some_and(|(_, at)| now >= at + t) => {
                    *req = None;
                }
                HeldState::Reporting {
                    req,
                    next_try,
                    failures,
                    ..
                } if req.is_some_and(|(_, at)| now >= at + t) => {
                    *req = None;
                    *failures += 1;
                    *next_try = now + (2u64 << (*failures).min(4));
                }
                _ => {}
            }
        }
    }

    fn handle(&mut self, now: u64, rpc: Rpc, rng: &mut ChaCha8Rng, ev: &mut AgentEvents) {
        if self.hb.is_some_and(|(r, _)| r == rpc.req) {
            self.hb = None;
            match rpc.body {
                Body::HeartbeatReply { interval_ms, abort } => {
                    self.failures = 0;
                    self.registered = true;
                    self.interval_ms = interval_ms.max(TICK_MS);
                    self.next_hb_at = now + self.interval_ms / TICK_MS;
                    self.abort(&abort);
                }
                Body::NotLeader { hint } => {
                    self.fail_over(hint);
                    self.next_hb_at = now + self.backoff(rng);
                }
                _ => self.next_hb_at = now + self.backoff(rng),
            }
            return;
        }
        if self.poll.is_some_and(|(r, _)| r == rpc.req) {
            self.poll = None;
            match rpc.body {
                Body::PollReply { assignments, abort } => {
                    self.failures = 0;
                    self.abort(&abort);
                    for (task_id, attempt) in assignments {
                        if self.held.len() < self.config.slots as usize {
                            self.held
                                .entry((task_id, attempt))
                                .or_insert(HeldState::Acking { req: None });
                        }
                    }
                    self.next_poll_at = now;
                }
                Body::NotLeader { hint } => {
                    self.fail_over(hint);
                    self.next_poll_at = now + self.backoff(rng);
                }
                _ => self.next_poll_at = now + self.backoff(rng),
            }
            return;
        }
        let key = self
            .held
            .iter()
            .find(|(_, s)| match s {
                HeldState::Acking { req } | HeldState::Reporting { req, .. } => {
                    req.is_some_and(|(r, _)| r == rpc.req)
                }
                HeldState::Running { .. } => false,
            })
            .map(|(k, _)| k.clone());
        let Some(key) = key else { return };
        let hint = match &rpc.body {
            Body::NotLeader { hint } => *hint,
            _ => None,
        };
        let state = self.held.get_mut(&key).expect("found");
        match (state.clone(), rpc.body) {
            (HeldState::Acking { .. }, Body::Outcome(Ok(_))) => {
                ev.executed.push(key.clone());
                let ticks = rng.random_range(self.config.run_ticks_min..=self.config.run_ticks_max);
                let roll = rng.random_range(0..1000);
                let mut outcome = ReportResult {
                    task_id: key.0.clone(),
                    attempt: key.1,
                    node_id: self.name.clone(),
                    ..Default::default()
                };
                if roll < self.config.fail_permanent_per_mille {
                    outcome.error = "application error".into();
                } else if roll
                    < self.config.fail_permanent_per_mille + self.config.fail_retryable_per_mille
                {
                    outcome.error = "transient application error".into();
                    outcome.retryable = true;
                } else {
                    outcome.success = true;
                    outcome.result_data = result_for(&key.0, key.1, &self.name);
                }
                *state = HeldState::Running {
                    done_at: now + ticks,
                    outcome,
                };
            }
            (HeldState::Reporting { report, .. }, Body::Outcome(Ok(_))) => {
                if report.success {
                    ev.success_acked.push(key.clone());
                }
                self.held.remove(&key);
            }
            (_, Body::Outcome(Err(e))) if rejected(&e) => {
                self.aborted += 1;
                self.held.remove(&key);
            }
            (HeldState::Acking { .. }, _) => {
                *state = HeldState::Acking { req: None };
                self.fail_over(hint);
            }
            (
                HeldState::Reporting {
                    report, failures, ..
                },
                _,
            ) => {
                *state = HeldState::Reporting {
                    report,
                    req: None,
                    next_try: now + 2,
                    failures: failures + 1,
                };
                self.fail_over(hint);
            }
            _ => {}
        }
    }

    fn abort(&mut self, abort: &[RunningAttempt]) {
        for a in abort {
            if self.held.remove(&(a.task_id.clone(), a.attempt)).is_some() {
                self.aborted += 1;
            }
        }
    }

    fn work(&mut self, now: u64, _rng: &mut ChaCha8Rng, out: &mut Vec<Rpc>, _ev: &mut AgentEvents) {
        let keys: Vec<(String, u32)> = self.held.keys().cloned().collect();
        for key in keys {
            let state = self.held[&key].clone();
            let next = match state {
                HeldState::Acking { req: None } => {
                    let body = Body::Ack {
                        task_id: key.0.clone(),
                        attempt: key.1,
                        node_id: self.name.clone(),
                    };
                    Some(HeldState::Acking {
                        req: Some(self.send(now, body, out)),
                    })
                }
                HeldState::Running { done_at, outcome } if now >= done_at => {
                    Some(HeldState::Reporting {
                        report: outcome,
                        req: None,
                        next_try: now,
                        failures: 0,
                    })
                }
                HeldState::Reporting {
                    report,
                    req: None,
                    next_try,
                    failures,
                } if now >= next_try => {
                    let r = self.send(now, Body::Report(report.clone()), out);
                    Some(HeldState::Reporting {
                        report,
                        req: Some(r),
                        next_try,
                        failures,
                    })
                }
                _ => None,
            };
            if let Some(n) = next {
                self.held.insert(key, n);
            }
        }
    }

    /// Wakes a paused agent: what it was executing finishes at once (a zombie that carries
    /// on exactly where it stopped).
    pub fn finish_running_now(&mut self, now: u64) {
        for s in self.held.values_mut() {
            if let HeldState::Running { done_at, .. } = s {
                *done_at = (*done_at).min(now);
            }
        }
    }
}

/// A definite answer that the attempt is no longer ours (fencing): drop it without retrying.
fn rejected(e: &ManifestError) -> bool {
    e.requires_abort()
        || matches!(
            e.kind(),
            ErrorKind::NotFound | ErrorKind::FailedPrecondition | ErrorKind::InvalidArgument
        )
}

/// One pending submission of a client.
#[derive(Clone, Debug)]
struct Submission {
    key: String,
    max_attempts: u32,
    run_timeout_ms: u64,
    req: Option<(u64, u64)>,
    next_try: u64,
}

/// A simulated client submitting tasks with idempotency keys.
#[derive(Debug)]
pub struct Client {
    /// Index (its endpoint).
    pub idx: usize,
    /// Submissions left to make.
    pub remaining: u32,
    /// Controller it talks to.
    pub target: u64,
    controllers: Vec<u64>,
    current: Option<Submission>,
    next_n: u32,
    next_req: u64,
    inbox: Vec<Rpc>,
    /// A call with no answer after this many ticks has failed.
    pub timeout_ticks: u64,
    /// Ticks between submissions.
    pub gap_ticks: u64,
    next_at: u64,
    /// Submissions acknowledged: (key, task id).
    pub acked: Vec<(String, String)>,
}

impl Client {
    /// A client that will submit `tasks` tasks.
    pub fn new(idx: usize, tasks: u32, controllers: Vec<u64>) -> Client {
        Client {
            idx,
            remaining: tasks,
            target: controllers[idx % controllers.len()],
            controllers,
            current: None,
            next_n: 0,
            next_req: 1,
            inbox: Vec::new(),
            timeout_ticks: 40,
            gap_ticks: 15,
            next_at: 0,
            acked: Vec::new(),
        }
    }

    /// Whether every submission was acknowledged.
    pub fn done(&self) -> bool {
        self.remaining == 0 && self.current.is_none()
    }

    /// A message arrived for the client.
    pub fn receive(&mut self, rpc: Rpc) {
        self.inbox.push(rpc);
    }

    fn rotate(&mut self, hint: Option<u64>) {
        self.target = match hint {
            Some(h) if h != self.target => h,
            _ => {
                let pos = self
                    .controllers
                    .iter()
                    .position(|c| *c == self.target)
                    .unwrap_or(0);
                self.controllers[(pos + 1) % self.controllers.len()]
            }
        };
    }

    /// One tick; returns acknowledged `(key, task_id)` pairs.
    pub fn step(
        &mut self,
        now: u64,
        rng: &mut ChaCha8Rng,
        out: &mut Vec<Rpc>,
    ) -> Vec<(String, String)> {
        let mut acked = Vec::new();
        for rpc in std::mem::take(&mut self.inbox) {
            let Some(cur) = self.current.as_mut() else {
                continue;
            };
            if cur.req.is_none_or(|(r, _)| r != rpc.req) {
                continue;
            }
            cur.req = None;
            match rpc.body {
                Body::Outcome(Ok(o)) => {
                    if let Some(t) = o.task() {
                        acked.push((cur.key.clone(), t.task_id.clone()));
                        self.acked.push((cur.key.clone(), t.task_id.clone()));
                    }
                    self.current = None;
                    self.next_at = now + self.gap_ticks;
                }
                Body::NotLeader { hint } => {
                    cur.next_try = now + 3;
                    self.rotate(hint);
                }
                _ => {
                    cur.next_try = now + 3;
                    self.rotate(None);
                }
            }
        }
        if let Some(cur) = self.current.as_mut()
            && cur
                .req
                .is_some_and(|(_, at)| now >= at + self.timeout_ticks)
        {
            cur.req = None;
            cur.next_try = now;
            self.rotate(None);
        }
        if self.current.is_none() && self.remaining > 0 && now >= self.next_at {
            self.remaining -= 1;
            let n = self.next_n;
            self.next_n += 1;
            let max_attempts = if rng.random_bool(0.3) { 1 } else { 3 };
            let run_timeout_ms = if rng.random_bool(0.3) { 500 } else { 0 };
            self.current = Some(Submission {
                key: format!("c{}-{n}", self.idx),
                max_attempts,
                run_timeout_ms,
                req: None,
                next_try: now,
            });
        }
        if let Some(cur) = self.current.as_mut()
            && cur.req.is_none()
            && now >= cur.next_try
        {
            let req = self.next_req;
            self.next_req += 1;
            cur.req = Some((req, now));
            out.push(Rpc {
                from: Endpoint::Client(self.idx),
                to: Endpoint::Controller(self.target),
                req,
                body: Body::Submit {
                    key: cur.key.clone(),
                    max_attempts: cur.max_attempts,
                    run_timeout_ms: cur.run_timeout_ms,
                },
            });
        }
        acked
    }
}
