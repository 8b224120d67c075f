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
//! The decisions are the pure functions in [`liveness`]; this actor only feeds them the clock
//! and the manifest and proposes what they return.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::manifest::{CheckHeartbeat, ListNodes, ManifestActor};
use crate::actors::proposer::{ProposeError, Proposer, wall_clock_ms};
use crate::actors::{LeadershipChanged, ProposeFailure};
use crate::manifest::command::{
    AttemptRef, Kind, NodeLost, RegisterNode, RequeueReason, RequeueTasks,
};
use crate::proto::{ClusterAlert, NodeStatus, RunningAttempt};
use crate::raft::{NodeId, Term};

/// Mailbox bound of the monitor (messages). Heartbeats beyond it wait in `send`.
pub const MONITOR_MAILBOX_MESSAGES_MAX: usize = 16_384;

/// Tunables of the monitor.
#[derive(Clone, Debug)]
pub struct MonitorOptions {
    /// A node not heard from for this long is stale (raised to 3 heartbeat intervals when
    /// the interval grows).
    pub stale_after: Duration,
    /// After becoming leader, no node is declared stale before this much time has passed.
    pub leader_grace: Duration,
    /// How often stale nodes and unhealthy nodes with unfinished work are rescanned.
    pub scan_interval: Duration,
    /// Heartbeat interval handed to agents in a small cluster.
    pub heartbeat_interval_min: Duration,
    /// Cluster-wide heartbeats per second the leader aims to stay under; the interval grows
    /// with the number of nodes to keep it (issue 4 §4).
    pub cluster_heartbeats_per_sec_max: u64,
    /// Share of tracked nodes going stale together that trips the brake (issue 4 §6).
    pub mass_failure_fraction: f64,
    /// The brake only applies with at least this many tracked nodes.
    pub mass_failure_nodes_min: usize,
    /// Most nodes declared lost per scan (bounded reassignment after the brake releases).
    pub nodes_lost_per_scan_max: usize,
    /// A RUNNING attempt missing from its node's heartbeats for this long is requeued.
    pub orphan_after: Duration,
}

impl MonitorOptions {
    /// Defaults derived from the stale timeout.
    pub fn with_stale_after(stale_after: Duration) -> Self {
        MonitorOptions {
            stale_after,
            leader_grace: stale_after + Duration::from_secs(2),
            scan_interval: Duration::from_millis(500),
            heartbeat_interval_min: Duration::from_millis(1000).min(stale_after / 3),
            cluster_heartbeats_per_sec_max: 5_000,
            mass_failure_fraction: 0.55,
            mass_failure_nodes_min: 3,
            nodes_lost_per_scan_max: 8,
            orphan_after: stale_after,
        }
    }
}

/// The pure liveness decisions: no clock (times are ms on the leader's monotonic clock,
/// passed in), no I/O, fixed iteration order.
pub mod liveness {
    use std::collections::BTreeMap;

    /// One scan's inputs for one node.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct NodeView {
        /// Node id.
        pub node_id: String,
        /// True if committed HEALTHY or DRAINING (a node that may be declared lost).
        pub up: bool,
        /// Unfinished (ASSIGNED or RUNNING) attempts on the node (count).
        pub active_tasks: usize,
    }

    /// What a scan decided.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct ScanDecision {
        /// Up nodes past their deadline, ascending by id.
        pub stale: Vec<String>,
        /// Nodes to propose `NodeLost` for now (stale ones unless braked, plus down nodes
        /// still holding unfinished attempts), at most the per-scan bound.
        pub declare_lost: Vec<String>,
        /// True if the mass-failure brake is engaged.
        pub braked: bool,
    }

    /// Heartbeat interval for `nodes` nodes (ms): the minimum, grown so that `nodes` heartbeats
    /// per interval stay under `per_sec_max` per second.
    pub fn heartbeat_interval_ms(nodes: usize, min_ms: u64, per_sec_max: u64) -> u64 {
        let per_sec_max = per_sec_max.max(1);
        let scaled = (nodes as u64).saturating_mul(1000).div_ceil(per_sec_max);
        scaled.max(min_ms)
    }

    /// Stale timeout in effect (ms): never less than three heartbeat intervals.
    pub fn stale_after_ms(stale_after_ms: u64, interval_ms: u64) -> u64 {
        stale_after_ms.max(interval_ms.saturating_mul(3))
    }

    /// Decide which nodes are stale and which to declare lost.
    ///
    /// A node is stale when `now_ms` is past both `last_seen + stale_after` and
    /// `leader_since + grace` (every node gets the grace after a leader change, SCENARIOS
    /// S4). When at least `fraction` of at least `nodes_min` up nodes are stale together, the
    /// brake engages: the fault is most likely the leader's own (SCENARIOS S9), so no stale
    /// node is declared lost. Down nodes that still hold unfinished attempts are always
    /// rescanned (level-triggered, SCENARIOS S10).
    #[allow(clippy::too_many_arguments)]
    pub fn scan(
        nodes: &[NodeView],
        last_seen_ms: &BTreeMap<String, u64>,
        now_ms: u64,
        leader_since_ms: u64,
        stale_after_ms: u64,
        grace_ms: u64,
        fraction: f64,
        nodes_min: usize,
        lost_per_scan_max: usize,
    ) -> ScanDecision {
        let grace_over = now_ms >= leader_since_ms.saturating_add(grace_ms);
        let mut up = 0usize;
        let mut stale = Vec::new();
        let mut rescan = Vec::new();
        for n in nodes {
            if n.up {
                up += 1;
                let seen = last_seen_ms
                    .get(&n.node_id)
                    .copied()
                    .unwrap_or(leader_since_ms);
                if grace_over && now_ms >= seen.saturating_add(stale_after_ms) {
                    stale.push(n.node_id.clone());
                }
            } else if n.active_tasks > 0 {
                rescan.push(n.node_id.clone());
            }
        }
        stale.sort();
        rescan.sort();
        let braked =
            up >= nodes_min && !stale.is_empty() && stale.len() as f64 >= fraction * up as f64;
        let mut declare_lost: Vec<String> = if braked { Vec::new() } else { stale.clone() };
        declare_lost.extend(rescan);
        declare_lost.truncate(lost_per_scan_max);
        ScanDecision {
            stale,
            declare_lost,
            braked,
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

/// Anyone → monitor: alerts, interval and live usage.
#[derive(Message, Debug)]
#[rtype(result = "MonitorReport")]
pub struct GetMonitorReport;

#[derive(Message)]
#[rtype(result = "()")]
struct Scan;

#[derive(Debug, Clone, Copy)]
struct Seen {
    at_ms: u64,
    usage: LiveUsage,
}

#[derive(Debug, Clone, Copy)]
struct Leadership {
    term: Term,
    since_ms: u64,
}

/// The heartbeat monitor actor. See the module docs.
pub struct HeartbeatMonitorActor {
    opts: MonitorOptions,
    clock_origin: Instant,
    manifest: Addr<ManifestActor>,
    proposer: Proposer,
    leadership: Option<Leadership>,
    known_leader: Option<NodeId>,
    seen: BTreeMap<String, Seen>,
    /// RUNNING attempts a node stopped reporting: (node, attempt) → first noticed (ms).
    missing_since: BTreeMap<(String, String, u32), u64>,
    node_count: usize,
    alert: Option<ClusterAlert>,
    scanning: bool,
}

impl HeartbeatMonitorActor {
    /// A monitor reading `manifest` and proposing through `proposer`.
    pub fn new(opts: MonitorOptions, manifest: Addr<ManifestActor>, proposer: Proposer) -> Self {
        HeartbeatMonitorActor {
            opts,
            clock_origin: Instant::now(),
            manifest,
            proposer,
            leadership: None,
            known_leader: None,
            seen: BTreeMap::new(),
            missing_since: BTreeMap::new(),
            node_count: 0,
            alert: None,
            scanning: false,
        }
    }

    /// Monotonic ms since the actor started (the only clock liveness uses).
    fn now_ms(&self) -> u64 {
        self.clock_origin.elapsed().as_millis() as u64
    }

    fn interval_ms(&self) -> u64 {
        liveness::heartbeat_interval_ms(
            self.node_count.max(self.seen.len()),
            self.opts.heartbeat_interval_min.as_millis() as u64,
            self.opts.cluster_heartbeats_per_sec_max,
        )
    }

    fn not_leader(&self) -> ProposeError {
        ProposeError::Raft(ProposeFailure::NotLeader {
            leader: self.known_leader,
            leader_addr: None,
        })
    }

    /// Track RUNNING attempts the node no longer reports; return those missing for longer
    /// than `orphan_after`.
    fn note_orphans(&mut self, node_id: &str, orphaned: Vec<AttemptRef>) -> Vec<AttemptRef> {
        let now = self.now_ms();
        let limit = self.opts.orphan_after.as_millis() as u64;
        let current: std::collections::BTreeSet<(String, String, u32)> = orphaned
            .iter()
            .map(|a| (node_id.to_string(), a.task_id.clone(), a.attempt))
            .collect();
        self.missing_since
            .retain(|k, _| k.0 != node_id || current.contains(k));
        let mut due = Vec::new();
        for key in current {
            let since = *self.missing_since.entry(key.clone()).or_insert(now);
            if now.saturating_sub(since) >= limit {
                due.push(AttemptRef {
                    task_id: key.1.clone(),
                    attempt: key.2,
                });
                self.missing_since.remove(&key);
            }
        }
        due
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
        match (msg.is_leader, self.leadership) {
            (true, Some(l)) if l.term == msg.term => {}
            (true, _) => {
                // A new leadership: every node's clock restarts with a grace period.
                self.leadership = Some(Leadership {
                    term: msg.term,
                    since_ms: self.now_ms(),
                });
                self.seen.clear();
                self.missing_since.clear();
                tracing::info!(term = %msg.term, "heartbeat monitor active (leader)");
            }
            (false, _) => {
                if self.leadership.take().is_some() {
                    tracing::info!(term = %msg.term, "heartbeat monitor idle (not leader)");
                }
                self.seen.clear();
                self.missing_since.clear();
                self.alert = None;
            }
        }
    }
}

impl Handler<Heartbeat> for HeartbeatMonitorActor {
    type Result = ResponseActFuture<Self, Result<HeartbeatReply, ProposeError>>;

    fn handle(&mut self, msg: Heartbeat, _: &mut Context<Self>) -> Self::Result {
        let Some(leadership) = self.leadership else {
            let err = self.not_leader();
            return Box::pin(fut::ready(Err(err)));
        };
        let now = self.now_ms();
        let node_id = msg.registration.node_id.clone();
        self.seen.insert(
            node_id.clone(),
            Seen {
                at_ms: now,
                usage: LiveUsage {
                    cpu_usage: msg.cpu_usage,
                    memory_usage: msg.memory_usage,
                    last_heartbeat_ms: wall_clock_ms(),
                    agent_time_ms: msg.agent_time_ms,
                },
            },
        );
        let interval_ms = self.interval_ms();
        let manifest = self.manifest.clone();
        let proposer = self.proposer.clone();
        let Heartbeat {
            registration,
            running,
            ..
        } = msg;
        let check = async move {
            let check = manifest
                .send(CheckHeartbeat {
                    registration: registration.clone(),
                    running,
                })
                .await?;
            let mut registered = false;
            if check.registration_changes {
                proposer
                    .propose(leadership.term, Kind::RegisterNode(registration))
                    .await?;
                registered = true;
            }
            Ok::<_, ProposeError>((check, registered))
        };
        Box::pin(check.into_actor(self).map(move |res, act, _| {
            let (check, registered) = res?;
            let orphans = act.note_orphans(&node_id, check.orphaned);
            if !orphans.is_empty() {
                let proposer = act.proposer.clone();
                let term = leadership.term;
                tracing::warn!(node = %node_id, count = orphans.len(), "requeueing attempts the node no longer runs");
                actix::spawn(async move {
                    let cmd = Kind::RequeueTasks(RequeueTasks {
                        attempts: orphans,
                        reason: RequeueReason::Orphaned as i32,
                    });
                    if let Err(e) = proposer.propose(term, cmd).await {
                        tracing::debug!(error = %e, "orphan requeue not committed");
                    }
                });
            }
            Ok(HeartbeatReply { interval_ms, abort: check.abort, registered })
        }))
    }
}

impl Handler<Scan> for HeartbeatMonitorActor {
    type Result = ();

    fn handle(&mut self, _: Scan, ctx: &mut Context<Self>) {
        let Some(leadership) = self.leadership else {
            return;
        };
        if self.scanning {
            return;
        }
        self.scanning = true;
        let manifest = self.manifest.clone();
        let fetch = async move { manifest.send(ListNodes { status: None }).await };
        ctx.spawn(fetch.into_actor(self).then(move |nodes, act, _| {
            let nodes = nodes.unwrap_or_default();
            act.node_count = nodes.len();
            let views: Vec<liveness::NodeView> = nodes
                .iter()
                .map(|n| liveness::NodeView {
                    node_id: n.node_id.clone(),
                    up: matches!(
                        crate::manifest::node_status(n),
                        NodeStatus::Healthy | NodeStatus::Draining
                    ),
                    active_tasks: n.active_tasks as usize,
                })
                .collect();
            let interval = act.interval_ms();
            let last_seen: BTreeMap<String, u64> =
                act.seen.iter().map(|(k, s)| (k.clone(), s.at_ms)).collect();
            let decision = liveness::scan(
                &views,
                &last_seen,
                act.now_ms(),
                leadership.since_ms,
                liveness::stale_after_ms(act.opts.stale_after.as_millis() as u64, interval),
                act.opts.leader_grace.as_millis() as u64,
                act.opts.mass_failure_fraction,
                act.opts.mass_failure_nodes_min,
                act.opts.nodes_lost_per_scan_max,
            );
            act.update_alert(&decision, views.iter().filter(|v| v.up).count());
            let proposer = act.proposer.clone();
            let term = leadership.term;
            async move {
                for node_id in decision.declare_lost {
                    tracing::warn!(node = %node_id, "declaring node lost; requeueing its unfinished attempts");
                    let lost = Kind::NodeLost(NodeLost { node_id: node_id.clone() });
                    if let Err(e) = proposer.propose(term, lost).await {
                        // Not committed (e.g. quorum lost): nothing changed; the next scan
                        // decides again from the committed state.
                        tracing::warn!(node = %node_id, error = %e, "NodeLost not committed");
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
    fn update_alert(&mut self, d: &liveness::ScanDecision, up: usize) {
        if d.braked {
            if self.alert.is_none() {
                tracing::error!(
                    stale = d.stale.len(),
                    up,
                    "mass node failure: {} of {} nodes went stale together; assuming the fault is this controller's and not reassigning",
                    d.stale.len(),
                    up
                );
            }
            self.alert = Some(ClusterAlert {
                code: "MASS_NODE_FAILURE".into(),
                message: format!(
                    "{} of {} nodes stopped heartbeating together; reassignment paused (threshold {:.0}%)",
                    d.stale.len(),
                    up,
                    self.opts.mass_failure_fraction * 100.0
                ),
                since: self
                    .alert
                    .as_ref()
                    .map(|a| a.since)
                    .unwrap_or_else(wall_clock_ms),
            });
        } else if self.alert.take().is_some() {
            tracing::info!("mass node failure cleared; reassigning at a bounded rate");
        }
    }
}

impl Handler<GetMonitorReport> for HeartbeatMonitorActor {
    type Result = MessageResult<GetMonitorReport>;

    fn handle(&mut self, _: GetMonitorReport, _: &mut Context<Self>) -> Self::Result {
        MessageResult(MonitorReport {
            alerts: self.alert.iter().cloned().collect(),
            heartbeat_interval_ms: self.interval_ms(),
            usage: self
                .seen
                .iter()
                .map(|(k, s)| (k.clone(), s.usage))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::liveness::*;
    use std::collections::BTreeMap;

    fn up(id: &str) -> NodeView {
        NodeView {
            node_id: id.into(),
            up: true,
            active_tasks: 1,
        }
    }

    fn seen(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn interval_grows_with_nodes() {
        assert_eq!(heartbeat_interval_ms(10, 1000, 5000), 1000);
        assert_eq!(heartbeat_interval_ms(5000, 1000, 5000), 1000);
        assert_eq!(heartbeat_interval_ms(10_000, 1000, 5000), 2000);
        assert_eq!(stale_after_ms(5000, 2000), 6000);
    }

    #[test]
    fn grace_after_leader_change_protects_every_node() {
        let nodes = [up("a"), up("b"), up("c"), up("d")];
        // Leader since t=10_000; nobody heard from yet; stale after 5 s, grace 7 s.
        let d = scan(&nodes, &seen(&[]), 16_000, 10_000, 5000, 7000, 0.55, 3, 8);
        assert!(d.stale.is_empty(), "{d:?}");
        // After the grace only "d" (never heard from) is stale.
        let s = seen(&[("a", 17_000), ("b", 17_000), ("c", 17_000)]);
        let d = scan(&nodes, &s, 17_500, 10_000, 5000, 7000, 0.55, 3, 8);
        assert_eq!(d.stale, vec!["d".to_string()]);
        assert_eq!(d.declare_lost, vec!["d".to_string()]);
        assert!(!d.braked);
    }

    #[test]
    fn brake_stops_mass_reassignment_but_not_rescans() {
        let mut nodes = vec![up("a"), up("b"), up("c"), up("d")];
        nodes.push(NodeView {
            node_id: "z".into(),
            up: false,
            active_tasks: 2,
        });
        let s = seen(&[("a", 0), ("b", 0), ("c", 0), ("d", 20_000)]);
        let d = scan(&nodes, &s, 21_000, 0, 5000, 7000, 0.55, 3, 8);
        assert_eq!(d.stale.len(), 3);
        assert!(d.braked);
        assert_eq!(d.declare_lost, vec!["z".to_string()]);
    }

    #[test]
    fn lost_nodes_per_scan_are_bounded() {
        let nodes: Vec<NodeView> = (0..10)
            .map(|i| NodeView {
                node_id: format!("n{i}"),
                up: false,
                active_tasks: 1,
            })
            .collect();
        let d = scan(&nodes, &seen(&[]), 100_000, 0, 5000, 7000, 0.55, 3, 4);
        assert_eq!(d.declare_lost.len(), 4);
    }
}
