//! The heartbeat monitor's pure core (docs/lifecycle.md; docs/failures.md S3, S4, S8, S9, S10, S12).
//!
//! Heartbeats stay off the Raft log: the leader records each one here, in memory, on its own
//! **monotonic** clock (milliseconds passed in by the shell; agent timestamps are kept for
//! display only). [`Liveness::evaluate`] then says which nodes to declare lost (a `NodeLost`
//! command each: UNHEALTHY + requeue) and which leftover attempts on already-UNHEALTHY nodes
//! to requeue (level-triggered, so a leader that crashed halfway through loses nothing).
//!
//! Protections:
//! - **grace**: a new leader declares nothing until `max(leader_grace_ms, stale timeout)` has
//!   passed since it took over, so agents still failing over from the old leader are not
//!   declared lost (S4);
//! - **quorum**: nothing is decided unless the shell says the leader can still commit (S3);
//! - **bounded heartbeat rate**: the interval handed to agents grows with the node count so
//!   the cluster-wide rate stays under `cluster_heartbeats_per_sec_max`, and the stale timeout
//!   grows with it (at least `stale_intervals_min` intervals);
//! - **mass-failure brake**: when at least `mass_failure_fraction` of the up nodes (and at
//!   least `mass_failure_nodes_min`) are stale together, the leader assumes the fault is its
//!   own (S9): it declares nothing and requeues nothing, raises an alert, and once the
//!   condition clears or `brake_hold_ms` passes it resumes at `recovery_declarations_per_sec`.

use std::collections::{BTreeMap, BTreeSet};

use crate::manifest::command::{AttemptRef, RegisterNode, RequeueReason, RequeueTasks};
use crate::manifest::{Manifest, node_status, task_status};
use crate::proto::{NodeStatus, RunningAttempt, TaskStatus};

/// Tunables of the heartbeat monitor. All durations are milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct LivenessConfig {
    /// A node with no heartbeat for this long (leader's monotonic clock) is stale, in ms.
    pub stale_after_ms: u64,
    /// After taking over, a leader declares no node stale for this long, in ms (at least the
    /// stale timeout is always waited).
    pub leader_grace_ms: u64,
    /// Shortest heartbeat interval handed to agents, in ms.
    pub heartbeat_interval_min_ms: u64,
    /// Longest heartbeat interval handed to agents, in ms.
    pub heartbeat_interval_max_ms: u64,
    /// Heartbeats per second the leader aims to receive from the whole fleet (count/s).
    pub cluster_heartbeats_per_sec_max: u64,
    /// The stale timeout is at least this many heartbeat intervals (count).
    pub stale_intervals_min: u64,
    /// Share of up nodes that, stale together, engages the brake (0.0..=1.0; default 0.55).
    pub mass_failure_fraction: f64,
    /// Fewest stale nodes that can engage the brake (count), so small fleets still recover.
    pub mass_failure_nodes_min: usize,
    /// Longest the brake holds before recovery starts anyway, in ms.
    pub brake_hold_ms: u64,
    /// Nodes declared lost per second while recovering from the brake (count/s, >= 1).
    pub recovery_declarations_per_sec: u64,
    /// Most attempts in one level-triggered `RequeueTasks` (count).
    pub requeue_batch_max: usize,
    /// A RUNNING attempt missing from its node's heartbeats for this long is requeued as
    /// orphaned, in ms (the agent restarted and lost it, or never started it).
    pub orphan_after_ms: u64,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            stale_after_ms: 10_000,
            leader_grace_ms: 10_000,
            heartbeat_interval_min_ms: 1_000,
            heartbeat_interval_max_ms: 30_000,
            cluster_heartbeats_per_sec_max: 5_000,
            stale_intervals_min: 3,
            mass_failure_fraction: 0.55,
            mass_failure_nodes_min: 3,
            brake_hold_ms: 60_000,
            recovery_declarations_per_sec: 1,
            requeue_batch_max: 256,
            orphan_after_ms: 10_000,
        }
    }
}

/// What the leader last heard from a node (in memory only).
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    /// Leader's monotonic clock at the last heartbeat, in ms.
    pub last_ms: u64,
    /// Leader's wall clock at the last heartbeat (unix ms), for display as `last_heartbeat`.
    pub wall_ms: i64,
    /// CPU usage, percent 0..=100.
    pub cpu_usage: f64,
    /// Memory usage, percent 0..=100.
    pub memory_usage: f64,
    /// The agent's own clock (unix ms); shown, never used for liveness (S8).
    pub agent_time_ms: i64,
}

/// An operator-visible condition (shown in cluster status, logged, counted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// Stable code, e.g. `MASS_NODE_FAILURE`.
    pub code: &'static str,
    /// Explanation.
    pub message: String,
    /// Leader monotonic ms when raised.
    pub since_ms: u64,
}

/// Code of the mass-failure alert.
pub const MASS_NODE_FAILURE: &str = "MASS_NODE_FAILURE";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Brake {
    Off,
    Engaged {
        since_ms: u64,
    },
    /// Declaring at a bounded rate. `forced`: the hold expired while the mass failure was
    /// still present (a new mass event cannot re-engage the brake until recovery ends).
    /// `released_ms`: when the brake let go; unless forced, a node is not declared until it
    /// has been silent for a whole stale timeout after that, so agents still reconnecting
    /// after the fault cleared (they back off, jittered) are not declared lost.
    Recovering {
        last_declared_ms: Option<u64>,
        forced: bool,
        released_ms: u64,
    },
}

/// One heartbeat as the leader received it (already validated by the gateway).
#[derive(Clone, Copy, Debug)]
pub struct HeartbeatIn<'a> {
    /// The registration the agent advertises.
    pub registration: &'a RegisterNode,
    /// The attempts the agent runs now.
    pub running: &'a [RunningAttempt],
    /// CPU usage, percent 0..=100.
    pub cpu_usage: f64,
    /// Memory usage, percent 0..=100.
    pub memory_usage: f64,
    /// The agent's own clock (unix ms); shown, never used for liveness (S8).
    pub agent_time_ms: i64,
    /// The agent is shutting down cleanly: this is its last heartbeat.
    pub leaving: bool,
}

/// What the leader does about one heartbeat ([`Liveness::heartbeat`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeartbeatDecision {
    /// Heartbeat interval to hand the agent, in ms (grows with the fleet).
    pub interval_ms: u64,
    /// Attempts the agent runs that are no longer its own (superseded, cancelled, ended by
    /// the controller): it must abort them (S1). While this is non-empty the node must get
    /// no new placements (docs/lifecycle.md#returning-nodes): the shell holds it back.
    pub abort: Vec<RunningAttempt>,
    /// The registration differs from the committed one (or the node is not up): propose a
    /// `RegisterNode`. Steady heartbeats write nothing (docs/lifecycle.md#liveness-off-the-log).
    pub register: bool,
    /// The agent is leaving and its node is up: propose a `NodeLost` now (requeueing
    /// anything still placed on it) rather than wait for the stale timeout. Takes the place
    /// of `register`.
    pub declare_lost: bool,
    /// RUNNING attempts the agent has not reported for `orphan_after_ms`: propose a
    /// `RequeueTasks` with reason ORPHANED.
    pub orphaned: Vec<AttemptRef>,
}

/// What the heartbeat monitor should propose now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LivenessActions {
    /// Nodes to declare lost (one `NodeLost` command each), ordered by node id.
    pub lost_nodes: Vec<String>,
    /// Leftover attempts on UNHEALTHY nodes to requeue (reason NODE_LOST), if any.
    pub requeue: Option<RequeueTasks>,
    /// True while the mass-failure brake holds all declarations.
    pub brake_engaged: bool,
}

/// The heartbeat monitor's state on one controller (meaningful while it leads).
#[derive(Clone, Debug)]
pub struct Liveness {
    config: LivenessConfig,
    leader_since_ms: Option<u64>,
    seen: BTreeMap<String, Seen>,
    /// RUNNING attempts a node stopped reporting: (node, task, attempt) → first noticed (ms).
    missing_since: BTreeMap<(String, String, u32), u64>,
    brake: Brake,
    alert: Option<Alert>,
}

impl Liveness {
    /// A monitor that is not leading.
    pub fn new(config: LivenessConfig) -> Liveness {
        Liveness {
            config,
            leader_since_ms: None,
            seen: BTreeMap::new(),
            missing_since: BTreeMap::new(),
            brake: Brake::Off,
            alert: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LivenessConfig {
        &self.config
    }

    /// This controller became leader at monotonic `now_ms`: every node starts fresh (no
    /// heartbeat history from an earlier term is trusted) and the grace period begins.
    pub fn become_leader(&mut self, now_ms: u64) {
        self.leader_since_ms = Some(now_ms);
        self.seen.clear();
        self.missing_since.clear();
        self.brake = Brake::Off;
        self.alert = None;
    }

    /// This controller is no longer leader: forget everything.
    pub fn step_down(&mut self) {
        self.leader_since_ms = None;
        self.seen.clear();
        self.missing_since.clear();
        self.brake = Brake::Off;
        self.alert = None;
    }

    /// True while leading.
    pub fn is_leading(&self) -> bool {
        self.leader_since_ms.is_some()
    }

    /// Records a heartbeat from `node_id` at monotonic `now_ms` (wall clock `wall_ms`, unix
    /// ms, for display). Usage figures are percentages 0..=100.
    pub fn observe_heartbeat(
        &mut self,
        node_id: &str,
        now_ms: u64,
        wall_ms: i64,
        cpu_usage: f64,
        memory_usage: f64,
        agent_time_ms: i64,
    ) {
        let seen = Seen {
            last_ms: now_ms,
            wall_ms,
            cpu_usage,
            memory_usage,
            agent_time_ms,
        };
        match self.seen.get_mut(node_id) {
            Some(s) => *s = seen,
            None => {
                self.seen.insert(node_id.to_string(), seen);
            }
        }
    }

    /// Handles one heartbeat at monotonic `now_ms` (wall clock `wall_ms`, unix ms, for
    /// display only): records it and decides, from the committed `manifest`, what to answer
    /// and propose. Pure: the shell (the heartbeat monitor actor, the simulator) proposes what
    /// it returns and holds the node back from placement while `abort` is non-empty.
    pub fn heartbeat(
        &mut self,
        manifest: &Manifest,
        hb: HeartbeatIn<'_>,
        now_ms: u64,
        wall_ms: i64,
    ) -> HeartbeatDecision {
        let node_id = hb.registration.node_id.as_str();
        self.observe_heartbeat(
            node_id,
            now_ms,
            wall_ms,
            hb.cpu_usage,
            hb.memory_usage,
            hb.agent_time_ms,
        );
        let orphaned = manifest.orphaned_attempts(node_id, hb.running);
        let up = manifest
            .get_node(node_id)
            .is_some_and(|n| matches!(node_status(&n), NodeStatus::Healthy | NodeStatus::Draining));
        HeartbeatDecision {
            interval_ms: self.heartbeat_interval_ms(manifest.node_count()),
            abort: manifest.attempts_to_abort(node_id, hb.running),
            register: !hb.leaving && manifest.registration_changes(hb.registration),
            declare_lost: hb.leaving && up,
            orphaned: self.note_missing(node_id, orphaned, now_ms),
        }
    }

    /// Tracks RUNNING attempts `node_id` no longer reports; returns those missing for at
    /// least `orphan_after_ms` (and forgets them: the requeue ends them).
    fn note_missing(
        &mut self,
        node_id: &str,
        missing: Vec<AttemptRef>,
        now_ms: u64,
    ) -> Vec<AttemptRef> {
        let current: BTreeSet<(String, String, u32)> = missing
            .into_iter()
            .map(|a| (node_id.to_string(), a.task_id, a.attempt))
            .collect();
        self.missing_since
            .retain(|k, _| k.0 != node_id || current.contains(k));
        let mut due = Vec::new();
        for key in current {
            let since = *self.missing_since.entry(key.clone()).or_insert(now_ms);
            if now_ms.saturating_sub(since) >= self.config.orphan_after_ms {
                self.missing_since.remove(&key);
                due.push(AttemptRef {
                    task_id: key.1,
                    attempt: key.2,
                });
            }
        }
        due
    }

    /// What the leader last heard from `node_id` (None before its first heartbeat in this
    /// term).
    pub fn seen(&self, node_id: &str) -> Option<&Seen> {
        self.seen.get(node_id)
    }

    /// The active alert, if any.
    pub fn alert(&self) -> Option<&Alert> {
        self.alert.as_ref()
    }

    /// The heartbeat interval to hand agents for a fleet of `node_count` nodes, in ms:
    /// `node_count / cluster_heartbeats_per_sec_max` seconds, clamped to the configured range.
    pub fn heartbeat_interval_ms(&self, node_count: usize) -> u64 {
        let c = &self.config;
        let rate = c.cluster_heartbeats_per_sec_max.max(1);
        let spread = (node_count as u64).saturating_mul(1000).div_ceil(rate);
        spread.clamp(
            c.heartbeat_interval_min_ms,
            c.heartbeat_interval_max_ms.max(c.heartbeat_interval_min_ms),
        )
    }

    /// The stale timeout in force for `node_count` nodes, in ms: the configured one, or
    /// `stale_intervals_min` heartbeat intervals if that is longer.
    pub fn stale_after_ms(&self, node_count: usize) -> u64 {
        self.config.stale_after_ms.max(
            self.config
                .stale_intervals_min
                .saturating_mul(self.heartbeat_interval_ms(node_count)),
        )
    }

    /// Decides, at monotonic `now_ms`, which nodes to declare lost and which leftover attempts
    /// to requeue. `leader_can_commit` is the shell's word that this leader still has a quorum
    /// (CheckQuorum); without it nothing is decided (S3). Nodes are read from `manifest`.
    pub fn evaluate(
        &mut self,
        now_ms: u64,
        manifest: &Manifest,
        leader_can_commit: bool,
    ) -> LivenessActions {
        let Some(since) = self.leader_since_ms else {
            return LivenessActions::default();
        };
        if !leader_can_commit {
            return LivenessActions {
                brake_engaged: matches!(self.brake, Brake::Engaged { .. }),
                ..Default::default()
            };
        }
        let nodes = manifest.all_nodes();
        let stale_after = self.stale_after_ms(nodes.len());
        self.forget_departed(&nodes, now_ms, stale_after);
        let up: Vec<&crate::proto::Node> = nodes
            .iter()
            .filter(|n| matches!(node_status(n), NodeStatus::Healthy | NodeStatus::Draining))
            .collect();
        let grace_end = since.saturating_add(self.config.leader_grace_ms.max(stale_after));
        let stale = if now_ms < grace_end {
            Vec::new()
        } else {
            self.silent_for(&up, since, now_ms, stale_after)
        };
        // Nodes cut off together do not cross the stale line in the same scan: their last
        // heartbeats are spread over one interval. So the brake counts every node silent for
        // at least `stale_after - interval` (about to go stale with the first) as part of the
        // same failure; otherwise each scan sees only a slice of the fleet, below the
        // threshold, and declares it lost piecemeal (docs/failures.md S9, found by the
        // lifecycle simulator).
        let suspects = if stale.is_empty() {
            0
        } else {
            let suspect_after = stale_after.saturating_sub(self.heartbeat_interval_ms(nodes.len()));
            self.silent_for(&up, since, now_ms, suspect_after).len()
        };
        let mass = suspects >= self.config.mass_failure_nodes_min.max(1)
            && (suspects as f64) >= self.config.mass_failure_fraction * (up.len() as f64);
        self.step_brake(mass, suspects, up.len(), now_ms);
        if matches!(self.brake, Brake::Engaged { .. }) {
            return LivenessActions {
                brake_engaged: true,
                ..Default::default()
            };
        }
        let lost_nodes = self.declarations(&stale, now_ms, stale_after);
        LivenessActions {
            requeue: self.leftovers(manifest, &lost_nodes),
            lost_nodes,
            brake_engaged: false,
        }
    }

    /// Forgets nodes that left the manifest, but not one heard from recently: its
    /// registration may still be on its way through the log, and a registered node with no
    /// heartbeat counts as silent since the leader took over.
    fn forget_departed(&mut self, nodes: &[crate::proto::Node], now_ms: u64, stale_after: u64) {
        let known: BTreeSet<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
        self.seen.retain(|id, seen| {
            known.contains(id.as_str()) || now_ms.saturating_sub(seen.last_ms) < stale_after
        });
        self.missing_since
            .retain(|k, _| known.contains(k.0.as_str()));
    }

    /// The nodes of `up` silent for at least `silence_ms` at `now_ms` (a node not heard from
    /// in this term counts from `since`, when this leader took over), as `(last heard, node
    /// id)`, longest-silent first.
    fn silent_for(
        &self,
        up: &[&crate::proto::Node],
        since: u64,
        now_ms: u64,
        silence_ms: u64,
    ) -> Vec<(u64, String)> {
        let mut silent: Vec<(u64, String)> = up
            .iter()
            .map(|n| {
                let last = self.seen.get(&n.node_id).map_or(since, |s| s.last_ms);
                (last, n.node_id.clone())
            })
            .filter(|(last, _)| now_ms.saturating_sub(*last) >= silence_ms)
            .collect();
        silent.sort();
        silent
    }

    /// The brake's state machine: engages on a mass failure (raising the alert), holds at most
    /// `brake_hold_ms`, and lets go into a rate-limited recovery when the failure clears or
    /// the hold runs out.
    fn step_brake(&mut self, mass: bool, suspects: usize, up: usize, now_ms: u64) {
        self.brake = match (&self.brake, mass) {
            (Brake::Engaged { since_ms }, true)
                if now_ms.saturating_sub(*since_ms) >= self.config.brake_hold_ms =>
            {
                Brake::Recovering {
                    last_declared_ms: None,
                    forced: true,
                    released_ms: now_ms,
                }
            }
            (Brake::Engaged { since_ms }, true) => Brake::Engaged {
                since_ms: *since_ms,
            },
            (Brake::Off | Brake::Recovering { forced: false, .. }, true) => {
                self.alert = Some(Alert {
                    code: MASS_NODE_FAILURE,
                    message: format!(
                        "{suspects} of {up} nodes went stale together; assuming the fault is \
                         the controller's own and declaring none lost"
                    ),
                    since_ms: now_ms,
                });
                Brake::Engaged { since_ms: now_ms }
            }
            (Brake::Engaged { .. }, false) => Brake::Recovering {
                last_declared_ms: None,
                forced: false,
                released_ms: now_ms,
            },
            (other, _) => other.clone(),
        };
    }

    /// Which of the `stale` nodes (longest-silent first) to declare lost now: all of them
    /// with the brake off; while recovering, at most one per `1 / recovery_declarations_per_sec`
    /// and (unless the hold ran out) only one silent for a whole stale timeout after the brake
    /// let go. Recovery ends, and the alert clears, once nothing is stale.
    fn declarations(
        &mut self,
        stale: &[(u64, String)],
        now_ms: u64,
        stale_after: u64,
    ) -> Vec<String> {
        let gap_ms = 1000 / self.config.recovery_declarations_per_sec.clamp(1, 1000);
        let mut lost = Vec::new();
        match &mut self.brake {
            Brake::Engaged { .. } => {}
            Brake::Off => {
                lost = stale.iter().map(|(_, id)| id.clone()).collect();
                lost.sort();
            }
            Brake::Recovering {
                last_declared_ms,
                forced,
                released_ms,
            } => {
                let due = last_declared_ms.is_none_or(|t| now_ms.saturating_sub(t) >= gap_ms);
                let settled = |last: &u64| {
                    *forced || now_ms.saturating_sub((*last).max(*released_ms)) >= stale_after
                };
                if due && let Some((_, id)) = stale.iter().find(|(last, _)| settled(last)) {
                    lost.push(id.clone());
                    *last_declared_ms = Some(now_ms);
                }
                if stale.is_empty() {
                    self.brake = Brake::Off;
                    self.alert = None;
                }
            }
        }
        lost
    }

    /// Attempts still ASSIGNED/RUNNING on UNHEALTHY nodes (excluding nodes being declared
    /// now, whose `NodeLost` requeues them), bounded by `requeue_batch_max` (S10).
    fn leftovers(&self, manifest: &Manifest, declaring: &[String]) -> Option<RequeueTasks> {
        let mut attempts = Vec::new();
        for node in manifest.all_nodes() {
            if node_status(&node) != NodeStatus::Unhealthy
                || declaring.contains(&node.node_id)
                || node.active_tasks == 0
            {
                continue;
            }
            for t in manifest.active_tasks_on(&node.node_id) {
                if attempts.len() >= self.config.requeue_batch_max {
                    break;
                }
                if matches!(task_status(t), TaskStatus::Assigned | TaskStatus::Running) {
                    attempts.push(AttemptRef {
                        task_id: t.task_id.clone(),
                        attempt: t.attempt,
                    });
                }
            }
        }
        if attempts.is_empty() {
            return None;
        }
        Some(RequeueTasks {
            attempts,
            reason: RequeueReason::NodeLost as i32,
        })
    }
}

impl Liveness {
    /// Fills a node's live fields from what this leader heard (the manifest holds only the
    /// registration): `last_heartbeat` (leader wall clock, unix ms), `cpu_usage`,
    /// `memory_usage` (percent) and `agent_time` (the agent's clock, display only).
    pub fn decorate(&self, node: &mut crate::proto::Node) {
        if let Some(s) = self.seen.get(&node.node_id) {
            node.last_heartbeat = s.wall_ms;
            node.cpu_usage = s.cpu_usage;
            node.memory_usage = s.memory_usage;
            node.agent_time = s.agent_time_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::TaskId;
    use crate::manifest::command::{self, AssignTasks, Assignment, Kind, NodeLost, RegisterNode};

    const T0: i64 = 1_700_000_000_000;

    fn manifest_with(nodes: usize) -> Manifest {
        let mut m = Manifest::new();
        for i in 0..nodes {
            let reg = RegisterNode {
                node_id: format!("n{i:02}"),
                capacity: Some(crate::proto::NodeCapacity {
                    slots: 4,
                    ..Default::default()
                }),
                ..Default::default()
            };
            m.apply_command(&command::command(T0, 1, Kind::RegisterNode(reg)))
                .unwrap();
        }
        m
    }

    fn cfg() -> LivenessConfig {
        LivenessConfig {
            stale_after_ms: 3_000,
            leader_grace_ms: 5_000,
            ..Default::default()
        }
    }

    fn beat_all(l: &mut Liveness, m: &Manifest, now: u64, except: &[&str]) {
        for n in m.all_nodes() {
            if !except.contains(&n.node_id.as_str()) {
                l.observe_heartbeat(&n.node_id, now, T0, 10.0, 20.0, 0);
            }
        }
    }

    #[test]
    fn a_silent_node_is_declared_after_the_stale_timeout() {
        let m = manifest_with(5);
        let mut l = Liveness::new(cfg());
        l.become_leader(0);
        let mut now = 0;
        while now <= 20_000 {
            beat_all(&mut l, &m, now, &["n03"]);
            let a = l.evaluate(now, &m, true);
            if !a.lost_nodes.is_empty() {
                assert_eq!(a.lost_nodes, vec!["n03".to_string()]);
                // Grace (5 s) is longer than the stale timeout (3 s).
                assert_eq!(now, 5_000);
                return;
            }
            now += 500;
        }
        panic!("n03 was never declared");
    }

    #[test]
    fn new_leader_grace_protects_failing_over_agents_s4() {
        let m = manifest_with(3);
        let mut l = Liveness::new(cfg());
        l.become_leader(100_000);
        // Nobody has reached the new leader yet.
        for now in (100_000..105_000).step_by(250) {
            assert!(l.evaluate(now, &m, true).lost_nodes.is_empty());
        }
        // They arrive just before grace ends.
        beat_all(&mut l, &m, 104_900, &[]);
        assert!(l.evaluate(105_000, &m, true).lost_nodes.is_empty());
    }

    #[test]
    fn nothing_is_decided_without_quorum_s3() {
        let m = manifest_with(3);
        let mut l = Liveness::new(cfg());
        l.become_leader(0);
        beat_all(&mut l, &m, 59_000, &["n00"]);
        assert!(l.evaluate(60_000, &m, false).lost_nodes.is_empty());
        assert_eq!(
            l.evaluate(60_000, &m, true).lost_nodes,
            vec!["n00".to_string()]
        );
    }

    #[test]
    fn agent_clock_steps_do_not_matter_s8() {
        let m = manifest_with(3);
        let mut l = Liveness::new(cfg());
        l.become_leader(0);
        for (i, now) in (0..30_000u64).step_by(1_000).enumerate() {
            for n in m.all_nodes() {
                // Wildly stepping agent clocks.
                let agent = if i % 2 == 0 { 0 } else { i64::MAX / 2 };
                l.observe_heartbeat(&n.node_id, now, T0, 1.0, 1.0, agent);
            }
            assert!(l.evaluate(now, &m, true).lost_nodes.is_empty());
        }
    }

    #[test]
    fn mass_failure_engages_the_brake_then_recovers_at_a_bounded_rate_s9() {
        let m = manifest_with(10);
        let mut l = Liveness::new(LivenessConfig {
            brake_hold_ms: 20_000,
            ..cfg()
        });
        l.become_leader(0);
        beat_all(&mut l, &m, 0, &[]);
        // 6 of 10 go silent together.
        let silent = ["n00", "n01", "n02", "n03", "n04", "n05"];
        let mut now = 0;
        let mut declared = Vec::new();
        while now < 10_000 {
            now += 500;
            beat_all(&mut l, &m, now, &silent);
            let a = l.evaluate(now, &m, true);
            declared.extend(a.lost_nodes);
            if now >= 5_000 {
                assert!(a.brake_engaged, "at {now}");
            }
        }
        assert!(declared.is_empty(), "the brake must hold all declarations");
        assert_eq!(l.alert().unwrap().code, MASS_NODE_FAILURE);
        // Five come back; one stays silent: the condition clears and the last one is
        // declared (rate-limited), then the alert clears.
        let mut declared = Vec::new();
        while now < 14_000 {
            now += 500;
            beat_all(&mut l, &m, now, &["n05"]);
            let a = l.evaluate(now, &m, true);
            assert!(a.lost_nodes.len() <= 1);
            declared.extend(a.lost_nodes);
        }
        assert!(declared.contains(&"n05".to_string()));
    }

    #[test]
    fn a_second_mass_failure_during_recovery_re_engages_the_brake() {
        let m = manifest_with(10);
        let mut l = Liveness::new(cfg());
        l.become_leader(0);
        beat_all(&mut l, &m, 0, &[]);
        // 6 of 10 silent: brake.
        let silent = ["n00", "n01", "n02", "n03", "n04", "n05"];
        for now in (500..=6_000).step_by(500) {
            beat_all(&mut l, &m, now, &silent);
            l.evaluate(now, &m, true);
        }
        assert!(l.evaluate(6_000, &m, true).brake_engaged);
        // All but one come back: recovery.
        beat_all(&mut l, &m, 6_500, &["n05"]);
        assert!(!l.evaluate(6_500, &m, true).brake_engaged);
        // Then most go silent again together: the brake engages again.
        let mut engaged = false;
        for now in (7_000..=12_000).step_by(500) {
            beat_all(&mut l, &m, now, &["n05", "n06", "n07", "n08", "n09", "n00"]);
            let a = l.evaluate(now, &m, true);
            engaged |= a.brake_engaged;
            if engaged {
                assert!(a.lost_nodes.is_empty());
            }
        }
        assert!(engaged);
    }

    #[test]
    fn agents_still_reconnecting_after_the_brake_releases_are_not_declared() {
        let m = manifest_with(10);
        let mut l = Liveness::new(cfg());
        l.become_leader(0);
        beat_all(&mut l, &m, 0, &[]);
        let silent = ["n00", "n01", "n02", "n03", "n04", "n05"];
        let mut now = 0;
        while now < 8_000 {
            now += 500;
            beat_all(&mut l, &m, now, &silent);
            assert!(l.evaluate(now, &m, true).lost_nodes.is_empty());
        }
        assert!(l.evaluate(now, &m, true).brake_engaged);
        // The fault clears; four agents are back at once, n04 is still backing off and n05
        // is really dead. The brake releases at `released`.
        let released = now + 500;
        let mut declared = Vec::new();
        while now < released + 6_000 {
            now += 500;
            let away: &[&str] = if now < released + 2_500 {
                &["n04", "n05"]
            } else {
                &["n05"]
            };
            beat_all(&mut l, &m, now, away);
            let a = l.evaluate(now, &m, true);
            assert!(!a.brake_engaged, "at {now}");
            for id in a.lost_nodes {
                declared.push((now, id));
            }
        }
        // n04 reconnected within a stale timeout (3 s) of the release: never declared. n05
        // is declared (again each second here, as nothing applies the NodeLost), but not
        // before a whole stale timeout after the release.
        assert!(!declared.is_empty());
        assert!(declared.iter().all(|(_, id)| id == "n05"), "{declared:?}");
        assert!(declared[0].0 >= released + 3_000, "{declared:?}");
    }

    #[test]
    fn brake_hold_expires_into_rate_limited_recovery() {
        let m = manifest_with(10);
        let mut l = Liveness::new(LivenessConfig {
            brake_hold_ms: 10_000,
            recovery_declarations_per_sec: 2,
            ..cfg()
        });
        l.become_leader(0);
        beat_all(&mut l, &m, 0, &[]);
        let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
        let mut first_declaration = None;
        for now in (100..40_000u64).step_by(100) {
            // Nobody heartbeats at all (the controller is cut off, or the fleet is gone).
            let a = l.evaluate(now, &m, true);
            if !a.lost_nodes.is_empty() {
                first_declaration.get_or_insert(now);
                *per_second.entry(now / 1000).or_default() += a.lost_nodes.len();
            }
        }
        let first = first_declaration.expect("recovery must eventually declare");
        assert!(
            first >= 5_000 + 10_000,
            "held for brake_hold_ms, got {first}"
        );
        assert!(per_second.values().all(|n| *n <= 2), "{per_second:?}");
    }

    #[test]
    fn small_fleets_do_not_brake() {
        let m = manifest_with(3);
        let mut l = Liveness::new(cfg());
        l.become_leader(0);
        let a = l.evaluate(6_000, &m, true);
        // 3 of 3 stale: the brake needs at least 3 nodes, so here it engages...
        assert!(a.brake_engaged);
        let m = manifest_with(2);
        let mut l = Liveness::new(cfg());
        l.become_leader(0);
        // ...but 2 of 2 is below mass_failure_nodes_min and they are declared.
        assert_eq!(l.evaluate(6_000, &m, true).lost_nodes.len(), 2);
    }

    #[test]
    fn decorate_fills_live_fields() {
        let m = manifest_with(1);
        let mut l = Liveness::new(cfg());
        l.become_leader(0);
        l.observe_heartbeat("n00", 10, T0 + 5, 12.5, 40.0, 777);
        let mut n = m.get_node("n00").unwrap();
        l.decorate(&mut n);
        assert_eq!(
            (n.last_heartbeat, n.cpu_usage, n.memory_usage, n.agent_time),
            (T0 + 5, 12.5, 40.0, 777)
        );
    }

    #[test]
    fn heartbeat_interval_grows_with_the_fleet_and_stale_timeout_follows() {
        let l = Liveness::new(LivenessConfig::default());
        assert_eq!(l.heartbeat_interval_ms(10), 1_000);
        assert_eq!(l.heartbeat_interval_ms(5_000), 1_000);
        assert_eq!(l.heartbeat_interval_ms(20_000), 4_000);
        assert_eq!(l.heartbeat_interval_ms(10_000_000), 30_000);
        assert_eq!(l.stale_after_ms(10), 10_000);
        assert_eq!(l.stale_after_ms(20_000), 12_000);
    }

    #[test]
    fn leftovers_on_unhealthy_nodes_are_requeued_every_time_s10() {
        let mut m = manifest_with(2);
        let id = TaskId::new_v7(T0 as u64, [1; 10]);
        m.apply_command(&command::command(
            T0,
            1,
            Kind::SubmitTask(command::SubmitTask {
                task_id: id.to_string(),
                task_type: "echo".into(),
                task_data: "{}".into(),
                ..Default::default()
            }),
        ))
        .unwrap();
        // Mark n00 unhealthy without requeueing (as if the leader crashed mid-way), then
        // place work there through a status flip to model a half-done batch.
        m.apply_command(&command::command(
            T0,
            1,
            Kind::AssignTasks(AssignTasks {
                assignments: vec![Assignment {
                    task_id: id.to_string(),
                    node_id: "n00".into(),
                    attempt: 1,
                }],
            }),
        ))
        .unwrap();
        m.mark_node_unhealthy("n00", T0, 1).unwrap();
        let mut l = Liveness::new(cfg());
        l.become_leader(0);
        for _ in 0..2 {
            beat_all(&mut l, &m, 1_000, &[]);
            let a = l.evaluate(1_000, &m, true);
            let r = a.requeue.expect("leftover must be requeued");
            assert_eq!(r.attempts.len(), 1);
            assert_eq!(r.attempts[0].task_id, id.to_string());
        }
        m.apply_command(&command::command(
            T0,
            1,
            Kind::NodeLost(NodeLost {
                node_id: "n00".into(),
            }),
        ))
        .unwrap();
        assert!(l.evaluate(1_000, &m, true).requeue.is_none());
    }
}
