//! The lifecycle checker (docs/simulator.md#the-lifecycle-simulator): invariants of the task lifecycle, kept apart from the
//! code it checks, evaluated on every committed entry and on every agent/client event.
//!
//! It keeps a **reference manifest** built by applying each committed index exactly once, in
//! index order, the first time any controller applies it (the Raft checker already proves
//! every controller applies the same command at each index). Against it:
//! - no task is completed twice; a terminal task never changes again;
//! - a result is accepted only from the task's live attempt on its assigned node (so the
//!   result of a superseded attempt is never accepted), and the stored result names that
//!   attempt;
//! - attempt numbers only grow, only through `AssignTasks`, and never exceed `max_attempts`;
//! - every acknowledged submission exists, and an idempotency key always names one task;
//! - a node becomes UNHEALTHY only through a committed `NodeLost`/`SetNodeStatus` carrying
//!   the term of the entry that holds it, decided by a leader that (by the simulator's ground
//!   truth) could still reach a quorum when it decided (docs/failures.md S3);
//! - agent side: at most one attempt of a task has its success acknowledged, and no task is
//!   executed more times than `max_attempts` (so `max_attempts = 1` runs at most once, S7).

use std::collections::{BTreeMap, BTreeSet};

use mlcp::manifest::command::{self, Kind};
use mlcp::manifest::{Manifest, is_terminal, node_status, task_status};
use mlcp::proto::{NodeStatus, TaskStatus};
use mlcp::raft::{Entry, EntryKind, LogIndex};

use crate::checker::Violation;

macro_rules! violation {
    ($($arg:tt)*) => { return Err(Violation(format!($($arg)*))) };
}

/// What the checker remembers of a task between entries.
#[derive(Clone, Debug, PartialEq)]
struct TaskView {
    status: TaskStatus,
    attempt: u32,
    node: String,
    max_attempts: u32,
    result: String,
}

/// A liveness decision (`NodeLost`) as the deciding leader made it.
#[derive(Clone, Copy, Debug)]
pub struct Decision {
    /// The deciding controller.
    pub controller: u64,
    /// Ground truth when deciding: the controller had reached a quorum of voters recently
    /// enough that CheckQuorum would still let it lead. A declaration on the agent's own word
    /// (it said it is leaving) needs no quorum to be right.
    pub quorum_ok: bool,
}

/// The lifecycle invariants. See the module docs.
#[derive(Debug, Default)]
pub struct LifecycleChecker {
    /// The reference manifest (committed entries, applied once each, in order).
    pub reference: Manifest,
    /// Highest index applied to the reference.
    pub applied: LogIndex,
    views: BTreeMap<String, TaskView>,
    node_views: BTreeMap<String, NodeStatus>,
    /// NodeLost decisions by (term, node id).
    decisions: BTreeMap<(u64, String), Decision>,
    /// Acknowledged submissions: idempotency key → task id.
    pub acked: BTreeMap<String, String>,
    /// Per task: attempts whose success report an agent saw acknowledged.
    success_acked: BTreeMap<String, BTreeSet<u32>>,
    /// Per task: attempts an agent started executing.
    executed: BTreeMap<String, BTreeSet<(u32, String)>>,
    /// Completions committed (count).
    pub completions: u64,
    /// Node status changes to UNHEALTHY committed (count).
    pub nodes_declared_lost: u64,
    /// Results rejected as superseded or from the wrong node (count).
    pub stale_reports_rejected: u64,
    /// Registrations that wrote a change (count).
    pub registrations_changed: u64,
    /// Checks made (count).
    pub checks: u64,
}

fn view_of(t: &mlcp::proto::Task) -> TaskView {
    TaskView {
        status: task_status(t),
        attempt: t.attempt,
        node: t.assigned_node_id.clone(),
        max_attempts: t.max_attempts,
        result: t.result_data.clone(),
    }
}

/// The result an honest simulated agent reports for an attempt: it names the attempt, so a
/// stored result shows which attempt produced it.
pub fn result_for(task_id: &str, attempt: u32, node: &str) -> String {
    format!("{{\"task\":\"{task_id}\",\"attempt\":{attempt},\"node\":\"{node}\"}}")
}

impl LifecycleChecker {
    /// An empty checker.
    pub fn new() -> LifecycleChecker {
        LifecycleChecker::default()
    }

    /// `NodeLost` decisions made by a leader that had lost its quorum (count; S3). They can
    /// never commit, but a correct leader does not even make them.
    pub fn decisions_without_quorum(&self) -> usize {
        self.decisions.values().filter(|d| !d.quorum_ok).count()
    }

    /// Records a `NodeLost` decision a leader is about to propose in `term`.
    pub fn note_decision(&mut self, term: u64, node: &str, d: Decision) {
        self.decisions.insert((term, node.to_string()), d);
    }

    /// A controller applied `entry` (already checked by the Raft checker). The first time an
    /// index is seen it is applied to the reference and every lifecycle invariant checked.
    pub fn on_apply(&mut self, entry: &Entry) -> Result<(), Violation> {
        if entry.index <= self.applied {
            return Ok(());
        }
        if entry.index.get() != self.applied.get() + 1 {
            violation!(
                "reference manifest: index {} applied before index {}",
                entry.index,
                self.applied.get() + 1
            );
        }
        self.applied = entry.index;
        if entry.kind != EntryKind::Normal || entry.data.is_empty() {
            return Ok(());
        }
        let cmd = match command::decode_command(&entry.data) {
            Ok(c) => c,
            Err(e) => violation!("index {}: undecodable command: {e}", entry.index),
        };
        let result = self.reference.apply_command(&cmd);
        self.checks += 1;
        if cmd.term != entry.term.get() {
            violation!(
                "index {}: command proposed in term {} but committed in an entry of term {}",
                entry.index,
                cmd.term,
                entry.term
            );
        }
        if let Err(e) = self.reference.check_invariants() {
            violation!("index {}: manifest invariant: {e:?}", entry.index);
        }
        if let (Some(Kind::ReportResult(_)), Err(e)) = (&cmd.kind, &result)
            && e.requires_abort()
        {
            self.stale_reports_rejected += 1;
        }
        if let (Some(Kind::RegisterNode(_)), Ok(o)) = (&cmd.kind, &result)
            && !o.duplicate
        {
            self.registrations_changed += 1;
        }
        self.check_tasks(entry.index, &cmd)?;
        self.check_nodes(entry.index, &cmd)
    }

    fn check_tasks(&mut self, index: LogIndex, cmd: &command::Command) -> Result<(), Violation> {
        let now: BTreeMap<String, TaskView> = self
            .reference
            .all_tasks()
            .into_iter()
            .map(|t| (t.task_id.clone(), view_of(t)))
            .collect();
        for (id, v) in &now {
            if v.attempt > v.max_attempts {
                violation!(
                    "index {index}: task {id} at attempt {} beyond max_attempts {}",
                    v.attempt,
                    v.max_attempts
                );
            }
            let Some(before) = self.views.get(id) else {
                continue;
            };
            if before == v {
                continue;
            }
            if v.attempt < before.attempt {
                violation!(
                    "index {index}: task {id} attempt went backwards: {} then {}",
                    before.attempt,
                    v.attempt
                );
            }
            if v.attempt > before.attempt && !matches!(cmd.kind, Some(Kind::AssignTasks(_))) {
                violation!("index {index}: task {id} got a new attempt outside AssignTasks");
            }
            if is_terminal(before.status) {
                violation!(
                    "index {index}: task {id} changed after reaching {:?}: now {:?} attempt {}",
                    before.status,
                    v.status,
                    v.attempt
                );
            }
            if v.status == TaskStatus::Completed {
                let Some(Kind::ReportResult(r)) = &cmd.kind else {
                    violation!("index {index}: task {id} completed without a report");
                };
                let live = r.task_id == *id
                    && r.attempt == before.attempt
                    && r.node_id == before.node
                    && matches!(before.status, TaskStatus::Assigned | TaskStatus::Running);
                if !live {
                    violation!(
                        "index {index}: task {id} completed by attempt {} from {} while its live attempt was {} on {} ({:?})",
                        r.attempt,
                        r.node_id,
                        before.attempt,
                        before.node,
                        before.status
                    );
                }
                if v.result != result_for(id, before.attempt, &before.node) {
                    violation!(
                        "index {index}: task {id} stored result {} which is not attempt {}'s",
                        v.result,
                        before.attempt
                    );
                }
                self.completions += 1;
            }
        }
        self.views = now;
        Ok(())
    }

    fn check_nodes(&mut self, index: LogIndex, cmd: &command::Command) -> Result<(), Violation> {
        for n in self.reference.all_nodes() {
            let status = node_status(&n);
            let before = self.node_views.insert(n.node_id.clone(), status);
            if status != NodeStatus::Unhealthy || before == Some(NodeStatus::Unhealthy) {
                continue;
            }
            self.nodes_declared_lost += 1;
            let by_liveness =
                matches!(&cmd.kind, Some(Kind::NodeLost(l)) if l.node_id == n.node_id);
            if !by_liveness {
                continue; // an operator SetNodeStatus; the term fence is checked above
            }
            match self.decisions.get(&(cmd.term, n.node_id.clone())) {
                None => violation!(
                    "index {index}: node {} declared lost in term {} with no recorded decision",
                    n.node_id,
                    cmd.term
                ),
                Some(d) if !d.quorum_ok => violation!(
                    "index {index}: node {} declared lost by controller {} in term {} which had lost its quorum when it decided (S3)",
                    n.node_id,
                    d.controller,
                    cmd.term
                ),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// A client was told its submission with idempotency `key` created/returned `task_id`.
    pub fn on_submit_acked(&mut self, key: &str, task_id: &str) -> Result<(), Violation> {
        self.checks += 1;
        if let Some(prev) = self.acked.get(key)
            && prev != task_id
        {
            violation!("idempotency key {key} returned task {prev} and then task {task_id}");
        }
        if self.reference.lookup_task(task_id).is_err() {
            violation!(
                "acknowledged submission {key} → {task_id} is not in the committed manifest"
            );
        }
        self.acked.insert(key.to_string(), task_id.to_string());
        Ok(())
    }

    /// An agent starts executing `(task_id, attempt)` (its start was acknowledged).
    pub fn on_execute(&mut self, task_id: &str, attempt: u32, node: &str) -> Result<(), Violation> {
        self.checks += 1;
        let max = self
            .reference
            .lookup_task(task_id)
            .map(|t| t.max_attempts)
            .unwrap_or(0);
        let runs = self.executed.entry(task_id.to_string()).or_default();
        if !runs.insert((attempt, node.to_string())) {
            violation!("task {task_id} attempt {attempt} executed twice on {node}");
        }
        if runs.len() as u32 > max {
            violation!(
                "task {task_id} executed {} times (attempts {:?}) but max_attempts is {max}",
                runs.len(),
                runs
            );
        }
        Ok(())
    }

    /// An agent saw its success report for `(task_id, attempt)` acknowledged.
    pub fn on_success_acked(&mut self, task_id: &str, attempt: u32) -> Result<(), Violation> {
        self.checks += 1;
        let set = self.success_acked.entry(task_id.to_string()).or_default();
        set.insert(attempt);
        if set.len() > 1 {
            violation!("task {task_id} completed twice: attempts {set:?} were both acknowledged");
        }
        Ok(())
    }

    /// Executions started for `task_id` (count).
    pub fn executions(&self, task_id: &str) -> usize {
        self.executed.get(task_id).map_or(0, BTreeSet::len)
    }

    /// Every acknowledged submission still exists (checked at the end of a run).
    pub fn check_final(&self) -> Result<(), Violation> {
        for (key, id) in &self.acked {
            if self.reference.lookup_task(id).is_err() {
                violation!("acknowledged submission {key} → {id} was lost");
            }
        }
        Ok(())
    }

    /// Tasks not yet terminal in the reference manifest (ids).
    pub fn unfinished(&self) -> Vec<String> {
        self.reference
            .all_tasks()
            .into_iter()
            .filter(|t| !is_terminal(task_status(t)))
            .map(|t| format!("{}({:?} attempt {})", t.task_id, task_status(t), t.attempt))
            .collect()
    }
}
