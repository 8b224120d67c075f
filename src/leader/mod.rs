//! The leader's volatile state and the pure steps over it
//! (docs/architecture.md#leader-only-state).
//!
//! Everything a controller knows only while it leads, and forgets when it stops: the task
//! timers ([`LeaderTimers`]: backoff, queue and run timeouts), node liveness ([`Liveness`]:
//! heartbeats, grace, the mass-failure brake) and the nodes held back from placement because
//! they still run attempts that are no longer theirs. A [`LeaderState`] exists for one term;
//! a new leadership builds a new one, so no timer or heartbeat from an earlier term is ever
//! trusted (docs/failures.md S4, S8).
//!
//! Each step reads the committed manifest, updates this state and returns the commands to
//! propose; nothing here proposes, reads a clock or draws a random number. The shell — the
//! manifest actor in a controller (`crate::actors::manifest`), the lifecycle simulator's
//! controller model — owns one `LeaderState` beside its manifest, calls the same step and
//! proposes what it returns, so the simulator exercises the production decisions.

#![warn(missing_docs)]

use std::collections::BTreeSet;

use crate::liveness::{HeartbeatIn, Liveness, LivenessConfig};
use crate::manifest::Manifest;
use crate::manifest::command::{Kind, NodeLost, RequeueReason, RequeueTasks};
use crate::proto::RunningAttempt;
use crate::raft::Term;
use crate::scheduler::timers::LeaderTimers;
use crate::scheduler::{self, PlacementLimits};

/// What the leader answers one heartbeat with, and what it must propose for it
/// ([`LeaderState::heartbeat`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeartbeatStep {
    /// Heartbeat interval to hand the agent, in ms (grows with the fleet).
    pub interval_ms: u64,
    /// Attempts the agent must abort: superseded, cancelled or ended by the controller
    /// (docs/failures.md S1). The node gets no new placements until this is empty.
    pub abort: Vec<RunningAttempt>,
    /// Propose this and wait for it to commit before answering: a `RegisterNode` when the
    /// registration changed (steady heartbeats write nothing), or a `NodeLost` when the agent
    /// says it is leaving while its node is up. `None`: answer at once.
    pub commit_before_reply: Option<Kind>,
    /// Propose this without holding the answer back: a `RequeueTasks` (ORPHANED) for RUNNING
    /// attempts the agent has stopped reporting.
    pub propose_in_background: Option<Kind>,
    /// The node was held back from placement and no longer is: placement may run now.
    pub released: bool,
}

impl HeartbeatStep {
    /// True if the answer carries a registration (the agent then knows it is known).
    pub fn registers(&self) -> bool {
        matches!(self.commit_before_reply, Some(Kind::RegisterNode(_)))
    }

    /// True if the node is being declared UNHEALTHY because its agent is leaving.
    pub fn declares_leaving(&self) -> bool {
        matches!(self.commit_before_reply, Some(Kind::NodeLost(_)))
    }
}

/// What one liveness scan decided ([`LeaderState::scan`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanStep {
    /// Commands to propose in order: one `NodeLost` per node declared lost (ordered by node
    /// id), then at most one level-triggered `RequeueTasks` for leftovers on UNHEALTHY nodes.
    pub commands: Vec<Kind>,
    /// True while the mass-failure brake holds every declaration (docs/failures.md S9).
    pub brake_engaged: bool,
    /// The active alert's message, if any.
    pub alert: Option<String>,
}

impl ScanStep {
    /// The nodes this scan declares lost, in proposal order.
    pub fn lost_nodes(&self) -> impl Iterator<Item = &str> {
        self.commands.iter().filter_map(|k| match k {
            Kind::NodeLost(n) => Some(n.node_id.as_str()),
            _ => None,
        })
    }
}

/// Bounds of one scheduling round ([`LeaderState::round`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundLimits {
    /// Placement bounds (batch size, tasks examined).
    pub placement: PlacementLimits,
    /// How long past its run timeout an attempt may still report before it is requeued, in
    /// ms: the agent stops the task at the timeout and needs time to say so.
    pub report_grace_ms: u64,
}

impl Default for RoundLimits {
    fn default() -> Self {
        RoundLimits {
            placement: PlacementLimits::default(),
            report_grace_ms: 2_000,
        }
    }
}

/// The state one controller keeps while it leads in one term. See the module docs.
#[derive(Clone, Debug)]
pub struct LeaderState {
    term: Term,
    liveness: Liveness,
    timers: LeaderTimers,
    /// Nodes that run attempts no longer theirs: no placements until those are aborted
    /// (docs/lifecycle.md#returning-nodes).
    held_back: BTreeSet<String>,
}

impl LeaderState {
    /// The state of a leadership of `term` that began at monotonic `now_ms`: no timer is
    /// running, no heartbeat has been heard, and every node's grace period starts now.
    pub fn new(term: Term, now_ms: u64, config: LivenessConfig) -> LeaderState {
        let mut liveness = Liveness::new(config);
        liveness.become_leader(now_ms);
        LeaderState {
            term,
            liveness,
            timers: LeaderTimers::new(),
            held_back: BTreeSet::new(),
        }
    }

    /// The term this state belongs to.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The liveness core, for reads (alerts, live figures, heartbeat interval).
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Nodes held back from placement now.
    pub fn held_back(&self) -> &BTreeSet<String> {
        &self.held_back
    }

    /// One heartbeat at monotonic `now_ms` (leader wall clock `wall_ms`, unix ms, shown
    /// only): records it, holds the node back from placement while it runs attempts that are
    /// not its own, and says what to answer and propose.
    pub fn heartbeat(
        &mut self,
        manifest: &Manifest,
        hb: HeartbeatIn<'_>,
        now_ms: u64,
        wall_ms: i64,
    ) -> HeartbeatStep {
        let decision = self.liveness.heartbeat(manifest, hb, now_ms, wall_ms);
        let node_id = &hb.registration.node_id;
        let released = if decision.abort.is_empty() {
            self.held_back.remove(node_id)
        } else {
            self.held_back.insert(node_id.clone());
            false
        };
        let commit_before_reply = if decision.declare_lost {
            Some(Kind::NodeLost(NodeLost {
                node_id: node_id.clone(),
            }))
        } else if decision.register {
            Some(Kind::RegisterNode(hb.registration.clone()))
        } else {
            None
        };
        let propose_in_background =
            (!decision.orphaned.is_empty()).then_some(Kind::RequeueTasks(RequeueTasks {
                attempts: decision.orphaned,
                reason: RequeueReason::Orphaned as i32,
            }));
        HeartbeatStep {
            interval_ms: decision.interval_ms,
            abort: decision.abort,
            commit_before_reply,
            propose_in_background,
            released,
        }
    }

    /// One scheduling round at monotonic `now_ms`. With `expire` set, attempts past their run
    /// timeout and tasks past their queue timeout come first: if there are any, the round is
    /// one `ExpireTasks`. Otherwise it is one `AssignTasks` batch over the nodes not held
    /// back (tasks still in their retry backoff wait). `None`: nothing to do now.
    pub fn round(
        &mut self,
        manifest: &Manifest,
        now_ms: u64,
        limits: &RoundLimits,
        expire: bool,
    ) -> Option<Kind> {
        if expire {
            let e = self
                .timers
                .expired(manifest, now_ms, limits.report_grace_ms);
            if !e.run_timed_out.is_empty() || !e.queue_timed_out.is_empty() {
                return Some(Kind::ExpireTasks(e));
            }
        }
        let timers = &mut self.timers;
        let plan = scheduler::place(
            manifest,
            |t| timers.backoff_over(t, now_ms),
            &limits.placement,
            &self.held_back,
        );
        (!plan.assignments.is_empty()).then_some(Kind::AssignTasks(plan))
    }

    /// One liveness scan at monotonic `now_ms`: the nodes to declare lost and the leftovers
    /// to requeue. `leader_can_commit` is the Raft core's CheckQuorum verdict; without it
    /// nothing is decided (docs/failures.md S3).
    pub fn scan(&mut self, manifest: &Manifest, now_ms: u64, leader_can_commit: bool) -> ScanStep {
        let actions = self.liveness.evaluate(now_ms, manifest, leader_can_commit);
        let mut commands: Vec<Kind> = actions
            .lost_nodes
            .into_iter()
            .map(|node_id| Kind::NodeLost(NodeLost { node_id }))
            .collect();
        commands.extend(actions.requeue.map(Kind::RequeueTasks));
        ScanStep {
            commands,
            brake_engaged: actions.brake_engaged,
            alert: self.liveness.alert().map(|a| a.message.clone()),
        }
    }
}

#[cfg(test)]
mod tests;
