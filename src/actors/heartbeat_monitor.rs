//! The heartbeat monitor (leader only): node liveness, which stays **off the Raft log**
//! (docs/lifecycle.md#liveness-off-the-log).
//!
//! What the leader keeps, in memory in its leader state:
//! - when each node was last heard from, on this controller's monotonic clock
//!   (`std::time::Instant`, as ms since the actor started) — agent timestamps are shown,
//!   never trusted (docs/failures.md S8);
//! - live usage figures (CPU, memory) for `ListNodes`;
//! - the moment this controller became leader: every node gets a grace period from then
//!   before it may be declared stale (docs/failures.md S4);
//! - the mass-failure alert (docs/failures.md S9).
//!
//! What it proposes (only while leader; a leader that lost its quorum cannot commit, so its
//! proposals fail and nothing changes — docs/failures.md S3; a status is never changed locally):
//! - `RegisterNode` when a heartbeat carries a registration that differs from the committed
//!   one (or the node was not up), so steady heartbeats write nothing (docs/lifecycle.md#liveness-off-the-log);
//! - `NodeLost` (UNHEALTHY + requeue of that node's unfinished attempts) for stale nodes, and
//!   again on every rescan for UNHEALTHY nodes that still hold unfinished attempts, so a crash
//!   halfway through loses nothing (level-triggered, docs/lifecycle.md#level-triggered-requeue, docs/failures.md S10);
//! - `RequeueTasks` (ORPHANED) for RUNNING attempts a node stopped reporting for a while.
//!
//! The decisions are the leader's pure step ([`crate::leader::LeaderState`] over the liveness
//! core [`crate::liveness::Liveness`]), run by the manifest actor, which owns that state
//! beside the manifest it reads ([`LeaderHeartbeat`], [`LeaderScan`]). This actor owns only
//! the cadence of scans, the CheckQuorum question to the Raft actor, and proposing what the
//! step returns.

#![warn(missing_docs)]

use std::time::Duration;

use actix::prelude::*;

use crate::actors::manifest::{LeaderHeartbeat, LeaderScan, ManifestActor};
use crate::actors::proposer::{ProposeError, Proposer, wall_clock_ms};
use crate::actors::raft::GetRaftStatus;
use crate::actors::{LeadershipChanged, MonoClock, ProposeFailure};
use crate::liveness::LivenessConfig;
use crate::manifest::command::{Kind, RegisterNode};
use crate::proto::RunningAttempt;
use crate::raft::{NodeId, Term};

/// Mailbox bound of the monitor (messages). Heartbeats beyond it wait in `send`.
pub const MONITOR_MAILBOX_MESSAGES_MAX: usize = 16_384;

/// Tunables of the monitor.
#[derive(Clone, Debug)]
pub struct MonitorOptions {
    /// The pure core's tunables (stale timeout, grace, interval scaling, brake).
    pub liveness: LivenessConfig,
    /// How often stale nodes and unhealthy nodes with unfinished work are rescanned.
    pub scan_interval: Duration,
}

impl MonitorOptions {
    /// Defaults derived from the stale timeout (`ServerOptions::node_stale_after`).
    pub fn with_stale_after(stale_after: Duration) -> Self {
        let stale_ms = stale_after.as_millis() as u64;
        MonitorOptions {
            liveness: LivenessConfig {
                stale_after_ms: stale_ms,
                leader_grace_ms: stale_ms,
                heartbeat_interval_min_ms: 1000.min(stale_ms / 3).max(1),
                orphan_after_ms: stale_ms,
                ..LivenessConfig::default()
            },
            scan_interval: Duration::from_millis(500),
        }
    }
}

/// What the gateway gets back for a heartbeat.
#[derive(Debug, Clone)]
pub struct HeartbeatReply {
    /// Interval the agent should heartbeat at (ms).
    pub interval_ms: u64,
    /// Attempts the agent must abort.
    pub abort: Vec<RunningAttempt>,
    /// True if this heartbeat registered the node or changed its registration.
    pub registered: bool,
}

/// Gateway → monitor: a heartbeat from an agent (already validated).
#[derive(Message, Debug)]
#[rtype(result = "Result<HeartbeatReply, ProposeError>")]
pub struct Heartbeat {
    /// Registration as the agent advertises it.
    pub registration: RegisterNode,
    /// CPU usage, percent 0..=100.
    pub cpu_usage: f64,
    /// Memory usage, percent 0..=100.
    pub memory_usage: f64,
    /// Agent wall clock (unix ms), shown only.
    pub agent_time_ms: i64,
    /// Attempts the agent runs now.
    pub running: Vec<RunningAttempt>,
    /// The agent is shutting down cleanly (its last heartbeat).
    pub leaving: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Scan;

/// The heartbeat monitor actor. See the module docs.
pub struct HeartbeatMonitorActor {
    opts: MonitorOptions,
    clock: MonoClock,
    manifest: Addr<ManifestActor>,
    proposer: Proposer,
    raft_status: Recipient<GetRaftStatus>,
    term: Option<Term>,
    known_leader: Option<NodeId>,
    braked: bool,
    scanning: bool,
}

impl HeartbeatMonitorActor {
    /// A monitor deciding through `manifest` on `clock`, proposing through `proposer` and
    /// asking `raft_status` whether this leader still has a quorum.
    pub fn new(
        opts: MonitorOptions,
        clock: MonoClock,
        manifest: Addr<ManifestActor>,
        proposer: Proposer,
        raft_status: Recipient<GetRaftStatus>,
    ) -> Self {
        HeartbeatMonitorActor {
            opts,
            clock,
            manifest,
            proposer,
            raft_status,
            term: None,
            known_leader: None,
            braked: false,
            scanning: false,
        }
    }

    fn not_leader(&self) -> ProposeError {
        ProposeError::Raft(ProposeFailure::NotLeader {
            leader: self.known_leader,
            leader_addr: None,
        })
    }
}

impl Actor for HeartbeatMonitorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MONITOR_MAILBOX_MESSAGES_MAX);
        ctx.run_interval(self.opts.scan_interval, |_, ctx| ctx.notify(Scan));
    }
}

impl actix::Supervised for HeartbeatMonitorActor {}

impl Handler<LeadershipChanged> for HeartbeatMonitorActor {
    type Result = ();

    fn handle(&mut self, msg: LeadershipChanged, _: &mut Context<Self>) {
        self.known_leader = msg.leader;
        let term = msg.is_leader.then_some(msg.term);
        if term != self.term {
            match term {
                Some(t) => tracing::info!(term = %t, "heartbeat monitor active (leader)"),
                None => tracing::info!(term = %msg.term, "heartbeat monitor idle (not leader)"),
            }
            self.braked = false;
        }
        self.term = term;
    }
}

impl Handler<Heartbeat> for HeartbeatMonitorActor {
    type Result = ResponseActFuture<Self, Result<HeartbeatReply, ProposeError>>;

    fn handle(&mut self, msg: Heartbeat, _: &mut Context<Self>) -> Self::Result {
        let Some(term) = self.term else {
            let err = self.not_leader();
            return Box::pin(fut::ready(Err(err)));
        };
        let node_id = msg.registration.node_id.clone();
        let step = LeaderHeartbeat {
            term,
            now_ms: self.clock.now_ms(),
            wall_ms: wall_clock_ms(),
            registration: msg.registration,
            running: msg.running,
            cpu_usage: msg.cpu_usage,
            memory_usage: msg.memory_usage,
            agent_time_ms: msg.agent_time_ms,
            leaving: msg.leaving,
        };
        let not_leader = self.not_leader();
        let (manifest, proposer) = (self.manifest.clone(), self.proposer.clone());
        let work = async move {
            let Some(mut step) = manifest.send(step).await? else {
                return Err(not_leader);
            };
            if let Some(requeue) = step.propose_in_background.take() {
                tracing::warn!(node = %node_id, "requeueing attempts the node no longer runs");
                let proposer = proposer.clone();
                actix::spawn(async move {
                    if let Err(e) = proposer.propose(term, requeue).await {
                        tracing::debug!(error = %e, "orphan requeue not committed");
                    }
                });
            }
            let registered = step.registers();
            if step.declares_leaving() {
                tracing::info!(node = %node_id, "node is leaving; declaring it unhealthy now");
            }
            if let Some(kind) = step.commit_before_reply.take() {
                proposer.propose(term, kind).await?;
            }
            Ok(HeartbeatReply {
                interval_ms: step.interval_ms,
                abort: step.abort,
                registered,
            })
        };
        Box::pin(work.into_actor(self))
    }
}

impl Handler<Scan> for HeartbeatMonitorActor {
    type Result = ();

    fn handle(&mut self, _: Scan, ctx: &mut Context<Self>) {
        let Some(term) = self.term else { return };
        if self.scanning {
            return;
        }
        self.scanning = true;
        let (manifest, raft_status) = (self.manifest.clone(), self.raft_status.clone());
        let clock = self.clock;
        let evaluate = async move {
            let leader_can_commit = raft_status
                .send(GetRaftStatus)
                .await
                .is_ok_and(|s| s.status.leader_has_active_quorum());
            let scan = LeaderScan {
                term,
                now_ms: clock.now_ms(),
                leader_can_commit,
            };
            manifest.send(scan).await.ok().flatten()
        };
        ctx.spawn(evaluate.into_actor(self).then(move |step, act, _| {
            let proposer = act.proposer.clone();
            let commands = match step {
                Some(step) => {
                    act.note_brake(step.brake_engaged, step.alert.as_deref());
                    step.commands
                }
                None => Vec::new(),
            };
            async move {
                for kind in commands {
                    match &kind {
                        Kind::NodeLost(n) => tracing::warn!(node = %n.node_id, "declaring node lost; requeueing its unfinished attempts"),
                        Kind::RequeueTasks(r) => tracing::warn!(count = r.attempts.len(), "requeueing attempts left on unhealthy nodes"),
                        _ => {}
                    }
                    if let Err(e) = proposer.propose(term, kind).await {
                        // Not committed (e.g. quorum lost): nothing changed; the next scan
                        // decides again from the committed state.
                        tracing::warn!(error = %e, "liveness change not committed");
                        break;
                    }
                }
            }
            .into_actor(act)
            .map(|_, act, _| act.scanning = false)
        }));
    }
}

impl HeartbeatMonitorActor {
    fn note_brake(&mut self, engaged: bool, alert: Option<&str>) {
        if engaged && !self.braked {
            tracing::error!(alert = "MASS_NODE_FAILURE", "{}", alert.unwrap_or_default());
        } else if !engaged && self.braked {
            tracing::info!("mass-failure brake released; reassigning at a bounded rate");
        }
        self.braked = engaged;
    }
}
