//! The scheduler actor (leader only): turns PENDING tasks into placements (DESIGN.md
//! "Scheduling").
//!
//! It owns only timing and proposing. The placement itself is the pure `crate::scheduler`
//! core, run by the manifest actor over its state ([`PlanAssignments`]) so the manifest is
//! never copied. One `AssignTasks` batch is in flight at a time: the next plan starts only
//! after the previous batch committed (or failed), so a task is never planned twice from a
//! stale view. Each `apply` re-checks every placement anyway and skips the ones that no
//! longer fit.
//!
//! It runs when woken (a submission, a registration, a freed slot — see
//! [`crate::actors::manifest`]) and on a timer (backoff delays end, run and queue timeouts
//! expire without any command to wake it). Backoff and timeouts are timed on this
//! controller's monotonic clock ([`LeaderTimers`]), never on a wall clock.

#![warn(missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::LeadershipChanged;
use crate::actors::manifest::{ManifestActor, PlanAssignments, PlanExpirations};
use crate::actors::proposer::Proposer;
use crate::manifest::command::Kind;
use crate::raft::Term;
use crate::scheduler::timers::LeaderTimers;

/// Mailbox bound of the scheduler (messages).
pub const SCHEDULER_MAILBOX_MESSAGES_MAX: usize = 64;

/// Tunables of the scheduler actor.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Most placements in one `AssignTasks` batch.
    pub batch_assignments_max: usize,
    /// Run at least this often even when nothing woke it.
    pub interval: Duration,
    /// Look for run and queue timeouts at most this often (a full scan of the tasks).
    pub expiry_interval: Duration,
    /// How long past its run timeout an attempt may still report before the leader
    /// requeues it (the agent stops the task at the timeout, then reports).
    pub run_timeout_report_grace: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            batch_assignments_max: 256,
            interval: Duration::from_millis(250),
            expiry_interval: Duration::from_secs(1),
            run_timeout_report_grace: Duration::from_secs(2),
        }
    }
}

/// Anyone → scheduler: there may be work to place. Idempotent.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct WakeScheduler;

/// The scheduler actor. See the module docs.
pub struct SchedulerActor {
    opts: SchedulerOptions,
    manifest: Addr<ManifestActor>,
    proposer: Proposer,
    term: Option<Term>,
    running: bool,
    woken: bool,
    last_expiry: Option<Instant>,
    /// Origin of the monotonic clock backoff and timeouts are measured on (SCENARIOS S8).
    epoch: Instant,
    /// Backoff, queue and run timers; cleared on every leadership change so an inherited
    /// task gets its full wait from leadership start.
    timers: Arc<Mutex<LeaderTimers>>,
}

impl SchedulerActor {
    /// A scheduler planning over `manifest` and proposing through `proposer`.
    pub fn new(opts: SchedulerOptions, manifest: Addr<ManifestActor>, proposer: Proposer) -> Self {
        SchedulerActor {
            opts,
            manifest,
            proposer,
            term: None,
            running: false,
            woken: false,
            last_expiry: None,
            epoch: Instant::now(),
            timers: Arc::new(Mutex::new(LeaderTimers::new())),
        }
    }

    /// One round: expire timed-out attempts, then plan and propose one batch. Re-runs at once
    /// if woken meanwhile or if the batch was full (more may be waiting).
    fn round(&mut self, ctx: &mut Context<Self>) {
        let Some(term) = self.term else { return };
        if self.running {
            self.woken = true;
            return;
        }
        self.running = true;
        self.woken = false;
        let manifest = self.manifest.clone();
        let proposer = self.proposer.clone();
        let batch_max = self.opts.batch_assignments_max;
        let expire_now = self
            .last_expiry
            .is_none_or(|t| t.elapsed() >= self.opts.expiry_interval);
        if expire_now {
            self.last_expiry = Some(Instant::now());
        }
        let mono_now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let expirations = PlanExpirations {
            mono_now_ms,
            timers: self.timers.clone(),
            report_grace_ms: u64::try_from(self.opts.run_timeout_report_grace.as_millis())
                .unwrap_or(u64::MAX),
        };
        let plan = PlanAssignments {
            mono_now_ms,
            timers: self.timers.clone(),
            batch_max,
        };
        let work = async move {
            if expire_now
                && let Ok(Some(expire)) = manifest.send(expirations).await
                && let Err(e) = proposer.propose(term, Kind::ExpireTasks(expire)).await
            {
                tracing::debug!(error = %e, "expiry not committed");
                return false;
            }
            let plan = match manifest.send(plan).await {
                Ok(Some(plan)) => plan,
                _ => return false,
            };
            let full = plan.assignments.len() >= batch_max;
            match proposer.propose(term, Kind::AssignTasks(plan)).await {
                Ok(_) => full,
                Err(e) => {
                    tracing::debug!(error = %e, "assignment batch not committed");
                    false
                }
            }
        };
        ctx.spawn(work.into_actor(self).map(|again, act, ctx| {
            act.running = false;
            if again || act.woken {
                act.round(ctx);
            }
        }));
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(SCHEDULER_MAILBOX_MESSAGES_MAX);
        ctx.run_interval(self.opts.interval, |act, ctx| act.round(ctx));
    }
}

impl actix::Supervised for SchedulerActor {}

impl Handler<WakeScheduler> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, _: WakeScheduler, ctx: &mut Context<Self>) {
        self.round(ctx);
    }
}

impl Handler<LeadershipChanged> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, msg: LeadershipChanged, ctx: &mut Context<Self>) {
        self.term = msg.is_leader.then_some(msg.term);
        // Timers are this leader's alone: a new leader starts every clock afresh.
        self.timers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.last_expiry = None;
        if msg.is_leader {
            tracing::info!(term = %msg.term, "scheduler active (leader)");
            self.round(ctx);
        }
    }
}
