//! The heartbeat monitor (leader only): owns node liveness, which stays **off the Raft log**
//! (issue 4 §4, DESIGN.md "Task lifecycle").
//!
//! What it owns, all in memory on the leader:
//! - when each node was last heard from, on this controller's monotonic clock
//!   (`std::time::Instant`, as ms since the actor started) — agent timestamps are shown,
//!   never trusted (SCENARIOS S8);
//! - live usage figures (CPU, memory) for `ListNodes`;
//! - the moment this controller became leader: every node gets a grace period from then
//!   before it may be declared stale (SCENARIOS S4);
//! - the mass-failure alert (SCENARIOS S9).
//!
//! What it proposes (only while leader; a leader that lost its quorum cannot commit, so its
//! proposals fail and nothing changes — SCENARIOS S3; a status is never changed locally):
//! - `RegisterNode` when a heartbeat carries a registration that differs from the committed
//!   one (or the node was not up), so steady heartbeats write nothing (issue 4 §7);
//! - `NodeLost` (UNHEALTHY + requeue of that node's unfinished attempts) for stale nodes, and
//!   again on every rescan for UNHEALTHY nodes that still hold unfinished attempts, so a crash
//!   halfway through loses nothing (level-triggered, issue 4 §5, SCENARIOS S10);
//! - `RequeueTasks` (ORPHANED) for RUNNING attempts a node stopped reporting for a while.
//!
//! The decisions are the pure liveness core ([`crate::scheduler::liveness::Liveness`]); this
//! actor only feeds it the clock, heartbeats and (through the manifest actor, which owns the
//! state it reads) the manifest, and proposes what it returns.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::manifest::{CheckHeartbeat, EvaluateLiveness, ManifestActor, ReleaseHeldBack};
use crate::actors::proposer::{ProposeError, Proposer, wall_clock_ms};
use crate::actors::raft::GetRaftStatus;
use crate::actors::{LeadershipChanged, ProposeFailure};
use crate::manifest::command::{Kind, NodeLost, RegisterNode, RequeueReason, RequeueTasks};
use crate::proto::{ClusterAlert, RunningAttempt};
use crate::raft::{NodeId, Term};
use crate::scheduler::liveness::{Liveness, LivenessConfig};

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

/// Live (not replicated) figures of one node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveUsage {
    /// CPU usage, percent.
    pub cpu_usage: f64,
    /// Memory usage, percent.
    pub memory_usage: f64,
    /// Leader wall clock when the last heartbeat arrived (unix ms), for display.
    pub last_heartbeat_ms: i64,
    /// Agent wall clock of the last heartbeat (unix ms), for display.
    pub agent_time_ms: i64,
}

/// What the monitor shows in cluster status and node lists.
#[derive(Debug, Clone, Default)]
pub struct MonitorReport {
    /// Active alerts.
    pub alerts: Vec<ClusterAlert>,
    /// Heartbeat interval handed to agents (ms).
    pub heartbeat_interval_ms: u64,
    /// Live figures by node id (empty on a follower).
    pub usage: BTreeMap<String, LiveUsage>,
}

/// Anyone → monitor: alerts, interval, and live usage of the given nodes.
#[derive(Message, Debug, Default)]
#[rtype(result = "MonitorReport")]
pub struct GetMonitorReport {
    /// Nodes whose live figures are wanted (empty = none).
    pub node_ids: Vec<String>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Scan;

/// The heartbeat monitor actor. See the module docs.
pub struct HeartbeatMonitorActor {
    opts: MonitorOptions,
    clock_origin: Instant,
    /// Shared with the manifest actor only for the duration of an evaluation (both run on
    /// the same arbiter, so the lock is never contended).
    liveness: Arc<Mutex<Liveness>>,
    manifest: Addr<ManifestActor>,
    proposer: Proposer,
    raft_status: Recipient<GetRaftStatus>,
    term: Option<Term>,
    known_leader: Option<NodeId>,
    node_count: usize,
    braked: bool,
    scanning: bool,
}

impl HeartbeatMonitorActor {
    /// A monitor reading `manifest`, proposing through `proposer` and asking `raft_status`
    /// whether this leader still has a quorum.
    pub fn new(
        opts: MonitorOptions,
        manifest: Addr<ManifestActor>,
        proposer: Proposer,
        raft_status: Recipient<GetRaftStatus>,
    ) -> Self {
        let liveness = Arc::new(Mutex::new(Liveness::new(opts.liveness.clone())));
        HeartbeatMonitorActor {
            opts,
            clock_origin: Instant::now(),
            liveness,
            manifest,
            proposer,
            raft_status,
            term: None,
            known_leader: None,
            node_count: 0,
            braked: false,
            scanning: false,
        }
    }

    /// Monotonic ms since the actor started (the only clock liveness uses).
    fn now_ms(&self) -> u64 {
        self.clock_origin.elapsed().as_millis() as u64
    }

    fn core(&self) -> MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(|e| e.into_inner())
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
        match (msg.is_leader, self.term) {
            (true, Some(t)) if t == msg.term => {}
            (true, _) => {
                // A new leadership: no heartbeat history is trusted and every node gets the
                // grace period from now.
                let now = self.now_ms();
                self.core().become_leader(now);
                self.manifest.do_send(ReleaseHeldBack);
                self.term = Some(msg.term);
                tracing::info!(term = %msg.term, "heartbeat monitor active (leader)");
            }
            (false, _) => {
                if self.term.take().is_some() {
                    tracing::info!(term = %msg.term, "heartbeat monitor idle (not leader)");
                }
                self.core().step_down();
                self.manifest.do_send(ReleaseHeldBack);
                self.braked = false;
            }
        }
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
        let check = CheckHeartbeat {
            liveness: self.liveness.clone(),
            now_ms: self.now_ms(),
            wall_ms: wall_clock_ms(),
            registration: msg.registration.clone(),
            running: msg.running,
            cpu_usage: msg.cpu_usage,
            memory_usage: msg.memory_usage,
            agent_time_ms: msg.agent_time_ms,
            leaving: msg.leaving,
        };
        let registration = msg.registration;
        let manifest = self.manifest.clone();
        let proposer = self.proposer.clone();
        let work = async move {
            // The decision is the pure core's (Liveness::heartbeat); this only proposes it.
            let decision = manifest.send(check).await?;
            if !decision.orphaned.is_empty() {
                tracing::warn!(node = %node_id, count = decision.orphaned.len(), "requeueing attempts the node no longer runs");
                let requeue = Kind::RequeueTasks(RequeueTasks {
                    attempts: decision.orphaned.clone(),
                    reason: RequeueReason::Orphaned as i32,
                });
                let proposer = proposer.clone();
                actix::spawn(async move {
                    if let Err(e) = proposer.propose(term, requeue).await {
                        tracing::debug!(error = %e, "orphan requeue not committed");
                    }
                });
            }
            if decision.declare_lost {
                tracing::info!(node = %node_id, "node is leaving; declaring it unhealthy now");
                proposer
                    .propose(term, Kind::NodeLost(NodeLost { node_id }))
                    .await?;
            } else if decision.register {
                proposer
                    .propose(term, Kind::RegisterNode(registration))
                    .await?;
            }
            Ok::<_, ProposeError>(decision)
        };
        Box::pin(work.into_actor(self).map(|res, _, _| {
            let decision = res?;
            Ok(HeartbeatReply {
                interval_ms: decision.interval_ms,
                abort: decision.abort,
                registered: decision.register,
            })
        }))
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
        let manifest = self.manifest.clone();
        let raft_status = self.raft_status.clone();
        let liveness = self.liveness.clone();
        let now_ms = self.now_ms();
        let evaluate = async move {
            let can_commit = raft_status
                .send(GetRaftStatus)
                .await
                .is_ok_and(|s| s.status.leader_has_active_quorum());
            manifest
                .send(EvaluateLiveness {
                    liveness,
                    now_ms,
                    leader_can_commit: can_commit,
                })
                .await
        };
        ctx.spawn(evaluate.into_actor(self).then(move |res, act, _| {
            let proposer = act.proposer.clone();
            let mut work = Vec::new();
            if let Ok((actions, node_count)) = res {
                act.node_count = node_count;
                act.note_brake(actions.brake_engaged);
                for node_id in actions.lost_nodes {
                    tracing::warn!(node = %node_id, "declaring node lost; requeueing its unfinished attempts");
                    work.push(Kind::NodeLost(NodeLost { node_id }));
                }
                if let Some(requeue) = actions.requeue {
                    tracing::warn!(count = requeue.attempts.len(), "requeueing attempts left on unhealthy nodes");
                    work.push(Kind::RequeueTasks(requeue));
                }
            }
            async move {
                for kind in work {
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
    fn note_brake(&mut self, engaged: bool) {
        if engaged && !self.braked {
            let msg = self
                .core()
                .alert()
                .map(|a| a.message.clone())
                .unwrap_or_default();
            tracing::error!(alert = "MASS_NODE_FAILURE", "{msg}");
        } else if !engaged && self.braked {
            tracing::info!("mass-failure brake released; reassigning at a bounded rate");
        }
        self.braked = engaged;
    }
}

impl Handler<GetMonitorReport> for HeartbeatMonitorActor {
    type Result = MessageResult<GetMonitorReport>;

    fn handle(&mut self, msg: GetMonitorReport, _: &mut Context<Self>) -> Self::Result {
        let now = self.now_ms();
        let wall = wall_clock_ms();
        let core = self.core();
        let alerts = core
            .alert()
            .map(|a| ClusterAlert {
                code: a.code.to_string(),
                message: a.message.clone(),
                // The core keeps monotonic time; shown as the wall-clock moment it was raised.
                since: wall - now.saturating_sub(a.since_ms) as i64,
            })
            .into_iter()
            .collect();
        let usage = msg
            .node_ids
            .iter()
            .filter_map(|id| {
                core.seen(id).map(|s| {
                    (
                        id.clone(),
                        LiveUsage {
                            cpu_usage: s.cpu_usage,
                            memory_usage: s.memory_usage,
                            last_heartbeat_ms: s.wall_ms,
                            agent_time_ms: s.agent_time_ms,
                        },
                    )
                })
            })
            .collect();
        let heartbeat_interval_ms = core.heartbeat_interval_ms(self.node_count);
        MessageResult(MonitorReport {
            alerts,
            heartbeat_interval_ms,
            usage,
        })
    }
}
