//! Placement policy and the heartbeat monitor's liveness logic — both pure (no clock, no RNG,
//! no I/O; ordered maps only), driven by the leader's actors and by the simulator.
//!
//! Placement (DESIGN.md "Scheduling"): PENDING tasks in order — higher priority first, then
//! submission order — each placed on the least-loaded node that is HEALTHY, not draining,
//! satisfies the task's constraints (cloud provider, region, labels) and has free capacity
//! (slots, CPU, memory, GPUs). Load is the share of the node's slots in use; ties go to the
//! node with fewer active tasks, then the smaller node id, so the same manifest always yields
//! the same batch. Tasks whose `not_before` (retry backoff) is in the future wait.
//!
//! The result is an `AssignTasks` command, bounded in size; `apply` re-checks every item
//! (a batch computed from a slightly stale state cannot double-assign or overfill a node).

pub mod liveness;

use std::collections::{BTreeMap, BTreeSet};

use crate::manifest::command::{AssignTasks, Assignment};
use crate::manifest::{Attempt, Manifest, Resources, TaskId};
use crate::proto::Task;

/// Bounds on one placement round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacementLimits {
    /// Most assignments in one `AssignTasks` batch (count).
    pub batch_assignments_max: usize,
    /// Most PENDING tasks examined in one round (count), so a long queue of tasks that fit
    /// nowhere cannot make a round slow.
    pub pending_scanned_max: usize,
}

impl Default for PlacementLimits {
    fn default() -> Self {
        PlacementLimits {
            batch_assignments_max: 256,
            pending_scanned_max: 10_000,
        }
    }
}

/// A node as the placement round sees it: what is still free and how busy it is.
#[derive(Clone, Debug)]
struct Candidate {
    free: Resources,
    slots_total: u64,
    slots_used: u64,
    active: u64,
}

impl Candidate {
    fn fits(&self, need: &Resources, cpu_limited: bool, mem_limited: bool) -> bool {
        self.free.slots >= need.slots
            && (!cpu_limited || self.free.cpu_millis >= need.cpu_millis)
            && (!mem_limited || self.free.memory_mb >= need.memory_mb)
            && (need.gpus == 0 || self.free.gpus >= need.gpus)
    }

    fn take(&mut self, need: &Resources) {
        self.free.slots = self.free.slots.saturating_sub(need.slots);
        self.free.cpu_millis = self.free.cpu_millis.saturating_sub(need.cpu_millis);
        self.free.memory_mb = self.free.memory_mb.saturating_sub(need.memory_mb);
        self.free.gpus = self.free.gpus.saturating_sub(need.gpus);
        self.slots_used += need.slots;
        self.active += 1;
    }
}

/// Orders candidates by load: share of slots in use (compared exactly by cross-multiplying),
/// then active tasks, then node id.
fn less_loaded(a: (&String, &Candidate), b: (&String, &Candidate)) -> std::cmp::Ordering {
    let lhs = u128::from(a.1.slots_used) * u128::from(b.1.slots_total.max(1));
    let rhs = u128::from(b.1.slots_used) * u128::from(a.1.slots_total.max(1));
    lhs.cmp(&rhs)
        .then(a.1.active.cmp(&b.1.active))
        .then(a.0.cmp(b.0))
}

/// Computes one batch of placements at proposer time `now_ms` (unix ms, the same value the
/// `AssignTasks` command will carry). Nodes in `held_back` receive nothing this round (e.g. a
/// returning node whose stale attempts must be aborted first, issue 4 §5).
pub fn place(
    manifest: &Manifest,
    now_ms: i64,
    limits: &PlacementLimits,
    held_back: &BTreeSet<String>,
) -> AssignTasks {
    let nodes: Vec<crate::proto::Node> = manifest
        .all_nodes()
        .into_iter()
        .filter(|n| crate::manifest::is_schedulable(n) && !held_back.contains(&n.node_id))
        .collect();
    let mut candidates: BTreeMap<String, Candidate> = nodes
        .iter()
        .map(|n| {
            let cap = crate::manifest::node_capacity(n);
            let used = manifest.node_usage(&n.node_id);
            let free = manifest.free_resources(&n.node_id);
            (
                n.node_id.clone(),
                Candidate {
                    free,
                    slots_total: cap.slots,
                    slots_used: used.slots,
                    active: u64::from(n.active_tasks),
                },
            )
        })
        .collect();
    let node_info: BTreeMap<&str, &crate::proto::Node> =
        nodes.iter().map(|n| (n.node_id.as_str(), n)).collect();

    let mut batch = AssignTasks::default();
    let mut free_slots: u64 = candidates.values().map(|c| c.free.slots).sum();
    for key in manifest.pending_keys().take(limits.pending_scanned_max) {
        if batch.assignments.len() >= limits.batch_assignments_max || free_slots == 0 {
            break;
        }
        let Some(task) = manifest.get_task(&key.task_id) else {
            continue;
        };
        if !is_due(task, now_ms) {
            continue;
        }
        let need = Resources::of_request(task.resources.as_ref());
        let best = candidates
            .iter()
            .filter(|(id, c)| {
                let node = node_info[id.as_str()];
                let cap = crate::manifest::node_capacity(node);
                c.fits(&need, cap.cpu_millis > 0, cap.memory_mb > 0)
                    && crate::manifest::constraints_match(node, task.constraints.as_ref()).is_ok()
            })
            .min_by(|a, b| less_loaded(*a, *b))
            .map(|(id, _)| id.clone());
        let Some(node_id) = best else { continue };
        let c = candidates.get_mut(&node_id).expect("chosen from the map");
        c.take(&need);
        free_slots = free_slots.saturating_sub(need.slots);
        batch.assignments.push(Assignment {
            task_id: key.task_id.to_string(),
            node_id,
            attempt: Attempt(task.attempt).next().0,
        });
    }
    batch
}

/// True if the task may be placed at `now_ms`: not cancelled, attempts left, backoff over.
fn is_due(task: &Task, now_ms: i64) -> bool {
    !task.cancel_requested && task.attempt < task.max_attempts && task.not_before <= now_ms
}

/// The earliest `not_before` (unix ms) among PENDING tasks still backing off at `now_ms`, so
/// the scheduler actor can sleep until then instead of polling.
pub fn next_due_ms(manifest: &Manifest, now_ms: i64) -> Option<i64> {
    manifest
        .pending_keys()
        .filter_map(|k| manifest.get_task(&k.task_id))
        .map(|t| t.not_before)
        .filter(|nb| *nb > now_ms)
        .min()
}

/// The task ids of a batch, parsed (for callers that track what they proposed).
pub fn batch_task_ids(batch: &AssignTasks) -> Vec<TaskId> {
    batch
        .assignments
        .iter()
        .filter_map(|a| TaskId::parse(&a.task_id).ok())
        .collect()
}

#[cfg(test)]
mod tests;
