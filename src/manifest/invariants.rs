//! Self-checks of the manifest, for tests and the simulator (TigerBeetle style: cheap enough
//! to run after every applied command in simulation).

use std::collections::BTreeSet;

use crate::proto::TaskStatus;

use super::{Manifest, TaskId, is_active, is_terminal, task_status};

/// A broken manifest invariant, naming the task or node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("manifest invariant violated: {0}")]
pub struct InvariantViolation(pub String);

impl Manifest {
    /// Checks every structural invariant: the derived indexes equal a fresh rebuild; attempt
    /// records are numbered 1..=attempt in order and never exceed `max_attempts`; at most one
    /// attempt is in flight and only the current one; an active task's node exists and its
    /// attempt record names that node; terminal tasks have `completed_at`; a COMPLETED task's
    /// last attempt reported success; PENDING tasks have no node.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let fail = |msg: String| Err(InvariantViolation(msg));
        let mut rebuilt = self.clone();
        rebuilt.rebuild_indexes();
        let indexes = [
            ("pending", rebuilt.pending == self.pending),
            ("by_status", rebuilt.by_status == self.by_status),
            (
                "active_by_node",
                rebuilt.active_by_node == self.active_by_node,
            ),
            ("idempotency", rebuilt.idempotency == self.idempotency),
            ("session_lru", rebuilt.session_lru == self.session_lru),
        ];
        if let Some((name, _)) = indexes.iter().find(|(_, same)| !same) {
            return fail(format!("derived index {name} differs from a rebuild"));
        }
        let mut seqs = BTreeSet::new();
        for (id, t) in &self.tasks {
            let name = &t.task_id;
            if TaskId::parse(name).ok() != Some(*id) {
                return fail(format!("task key {id} holds task {name}"));
            }
            if !seqs.insert(t.submit_seq)
                || t.submit_seq == 0
                || t.submit_seq > self.next_submit_seq
            {
                return fail(format!("task {name} has bad submit_seq {}", t.submit_seq));
            }
            if t.attempt > t.max_attempts {
                return fail(format!(
                    "task {name} attempt {} exceeds max_attempts {}",
                    t.attempt, t.max_attempts
                ));
            }
            let numbers: Vec<u32> = t.attempts.iter().map(|a| a.attempt).collect();
            let want: Vec<u32> = (1..=t.attempt).collect();
            if numbers != want {
                return fail(format!(
                    "task {name} attempt records {numbers:?}, want {want:?}"
                ));
            }
            let in_flight: Vec<u32> = t
                .attempts
                .iter()
                .filter(|a| a.outcome == TaskStatus::Unspecified as i32)
                .map(|a| a.attempt)
                .collect();
            let status = task_status(t);
            if is_active(status) {
                if in_flight != vec![t.attempt] {
                    return fail(format!(
                        "active task {name} has in-flight attempts {in_flight:?}"
                    ));
                }
                let rec = t.attempts.last().expect("attempt >= 1");
                if rec.node_id != t.assigned_node_id || !self.nodes.contains_key(&rec.node_id) {
                    return fail(format!("active task {name} on unknown/mismatched node"));
                }
            } else if !in_flight.is_empty() {
                return fail(format!(
                    "{status:?} task {name} has in-flight attempts {in_flight:?}"
                ));
            }
            if is_terminal(status) && t.completed_at == 0 {
                return fail(format!("terminal task {name} has no completed_at"));
            }
            if status == TaskStatus::Pending && !t.assigned_node_id.is_empty() {
                return fail(format!(
                    "pending task {name} still names node {}",
                    t.assigned_node_id
                ));
            }
            if status == TaskStatus::Completed {
                let ok = t
                    .attempts
                    .last()
                    .is_some_and(|a| a.reported && a.outcome == TaskStatus::Completed as i32);
                if !ok {
                    return fail(format!("completed task {name} without a successful report"));
                }
                let completions = t
                    .attempts
                    .iter()
                    .filter(|a| a.outcome == TaskStatus::Completed as i32)
                    .count();
                if completions != 1 {
                    return fail(format!("task {name} completed {completions} times"));
                }
            }
        }
        Ok(())
    }
}
