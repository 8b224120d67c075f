//! The scheduler actor (leader only): turns PENDING tasks into placements
//! (docs/architecture.md#scheduling).
//!
//! It owns only *when* to schedule and the proposing. The round itself — expiries first,
//! then one placement batch — is the leader's pure step ([`crate::leader::LeaderState::round`]),
//! run by the manifest actor, which owns the leader state beside the manifest
//! ([`LeaderRound`]). One command is in flight at a time: the next round starts only after the
//! previous one committed (or failed), so a task is never planned twice from a stale view.
//! Each `apply` re-checks every placement anyway and skips the ones that no longer fit.
//!
//! It runs when woken (a submission, a registration, a freed slot — see
//! [`crate::actors::manifest`]) and on a timer (backoff delays end, run and queue timeouts
//! expire without any command to wake it). Backoff and timeouts are timed on the leader's
//! monotonic clock ([`MonoClock`]), never on a wall clock.

#![warn(missing_docs)]

use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::manifest::{LeaderRound, ManifestActor};
use crate::actors::proposer::Proposer;
use crate::actors::{LeadershipChanged, MonoClock, WakeScheduler};
use crate::leader::RoundLimits;
use crate::manifest::command::Kind;
use crate::raft::Term;
use crate::scheduler::PlacementLimits;

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

/// The scheduler actor. See the module docs.
pub struct SchedulerActor {
    opts: SchedulerOptions,
    clock: MonoClock,
    manifest: Addr<ManifestActor>,
    proposer: Proposer,
    term: Option<Term>,
    running: bool,
    woken: bool,
    last_expiry: Option<Instant>,
}

impl SchedulerActor {
    /// A scheduler deciding through `manifest` on `clock` and proposing through `proposer`.
    pub fn new(
        opts: SchedulerOptions,
        clock: MonoClock,
        manifest: Addr<ManifestActor>,
        proposer: Proposer,
    ) -> Self {
        SchedulerActor {
            opts,
            clock,
            manifest,
            proposer,
            term: None,
            running: false,
            woken: false,
            last_expiry: None,
        }
    }

    fn limits(&self) -> RoundLimits {
        RoundLimits {
            placement: PlacementLimits {
                batch_assignments_max: self.opts.batch_assignments_max,
                ..PlacementLimits::default()
            },
            report_grace_ms: u64::try_from(self.opts.run_timeout_report_grace.as_millis())
                .unwrap_or(u64::MAX),
        }
    }

    /// One round: expire timed-out attempts (at most every `expiry_interval`), then plan and
    /// propose one batch. Re-runs at once if woken meanwhile or if the batch was full (more
    /// may be waiting).
    fn round(&mut self, ctx: &mut Context<Self>) {
        let Some(term) = self.term else { return };
        if self.running {
            self.woken = true;
            return;
        }
        self.running = true;
        self.woken = false;
        let expire_now = self
            .last_expiry
            .is_none_or(|t| t.elapsed() >= self.opts.expiry_interval);
        if expire_now {
            self.last_expiry = Some(Instant::now());
        }
        let (manifest, proposer) = (self.manifest.clone(), self.proposer.clone());
        let (limits, clock) = (self.limits(), self.clock);
        let batch_max = limits.placement.batch_assignments_max;
        let work = async move {
            let mut expire = expire_now;
            loop {
                let round = LeaderRound {
                    term,
                    now_ms: clock.now_ms(),
                    expire,
                    limits,
                };
                let Ok(Some(kind)) = manifest.send(round).await else {
                    return false;
                };
                let full =
                    matches!(&kind, Kind::AssignTasks(p) if p.assignments.len() >= batch_max);
                let expiry = matches!(kind, Kind::ExpireTasks(_));
                if let Err(e) = proposer.propose(term, kind).await {
                    tracing::debug!(error = %e, "scheduling round not committed");
                    return false;
                }
                if !expiry {
                    return full;
                }
                // The expiry committed; place on the state it left.
                expire = false;
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
        // The timers are the leader state's (a new term starts them afresh).
        self.term = msg.is_leader.then_some(msg.term);
        self.last_expiry = None;
        if msg.is_leader {
            tracing::info!(term = %msg.term, "scheduler active (leader)");
            self.round(ctx);
        }
    }
}
