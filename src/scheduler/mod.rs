//! Placement policy and the leader's task timers — pure (no clock, no RNG, no I/O; ordered
//! maps only), driven through [`crate::leader::LeaderState`] by the leader's actors and by the
//! simulator.
//!
//! Placement (docs/architecture.md#scheduling): PENDING tasks in order — higher priority first, then
//! submission order — each placed on the least-loaded node that is HEALTHY, not draining,
//! satisfies the task's constraints (cloud provider, region, labels) and has free capacity
//! (slots, CPU, memory, GPUs). Load is the share of the node's slots in use (parts per
//! million); ties go to the node with fewer active tasks, then the smaller node id, so the
//! same manifest always yields the same batch. Tasks still in their retry backoff (timed by the
//! leader on its monotonic clock, [`timers::LeaderTimers`]) wait.
//!
//! The result is an `AssignTasks` command, bounded in size; `apply` re-checks every item
//! (a batch computed from a slightly stale state cannot double-assign or overfill a node).

#![warn(missing_docs)]

pub mod timers;

use std::collections::BTreeSet;

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
struct Candidate<'a> {
    node: &'a crate::proto::Node,
    free: Resources,
    slots_total: u64,
    slots_used: u64,
    active: u64,
    cpu_limited: bool,
    memory_limited: bool,
}

impl Candidate<'_> {
    fn fits(&self, need: &Resources) -> bool {
        self.free.slots >= need.slots
            && (!self.cpu_limited || self.free.cpu_millis >= need.cpu_millis)
            && (!self.memory_limited || self.free.memory_mb >= need.memory_mb)
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

    /// Position in the load order: share of slots in use (parts per million), then active
    /// tasks; the caller appends the node's index (= node id order) to break ties.
    fn load_key(&self) -> (u64, u64) {
        let ppm =
            (u128::from(self.slots_used) * 1_000_000 / u128::from(self.slots_total.max(1))) as u64;
        (ppm, self.active)
    }
}

/// Computes one batch of placements. `backoff_over` says whether a PENDING task has waited
/// out its retry backoff (the leader passes [`timers::LeaderTimers::backoff_over`] at its
/// monotonic now). Nodes in `held_back` receive nothing this round (e.g. a returning node
/// whose stale attempts must be aborted first, docs/lifecycle.md#returning-nodes).
///
/// Cost: O(log N) per placed task in the common case (the least-loaded node fits); a task
/// shape (constraints + resources) that fit nowhere is not searched for again in the round,
/// since nodes only fill up within a round.
pub fn place(
    manifest: &Manifest,
    mut backoff_over: impl FnMut(&Task) -> bool,
    limits: &PlacementLimits,
    held_back: &BTreeSet<String>,
) -> AssignTasks {
    let nodes: Vec<crate::proto::Node> = manifest
        .all_nodes()
        .into_iter()
        .filter(|n| crate::manifest::is_schedulable(n) && !held_back.contains(&n.node_id))
        .collect();
    let mut candidates: Vec<Candidate<'_>> = nodes
        .iter()
        .map(|n| {
            let cap = crate::manifest::node_capacity(n);
            Candidate {
                node: n,
                free: manifest.free_resources(&n.node_id),
                slots_total: cap.slots,
                slots_used: manifest.node_usage(&n.node_id).slots,
                active: u64::from(n.active_tasks),
                cpu_limited: cap.cpu_millis > 0,
                memory_limited: cap.memory_mb > 0,
            }
        })
        .collect();
    // Least loaded first; the index (nodes are ordered by id) breaks ties by node id.
    let mut order: BTreeSet<((u64, u64), usize)> = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.free.slots > 0)
        .map(|(i, c)| (c.load_key(), i))
        .collect();
    let mut unplaceable: BTreeSet<Vec<u8>> = BTreeSet::new();

    let mut batch = AssignTasks::default();
    for key in manifest.pending_keys().take(limits.pending_scanned_max) {
        if batch.assignments.len() >= limits.batch_assignments_max || order.is_empty() {
            break;
        }
        let Some(task) = manifest.get_task(&key.task_id) else {
            continue;
        };
        if !may_run_again(task) || !backoff_over(task) {
            continue;
        }
        let need = Resources::of_request(task.resources.as_ref());
        let shape = task_shape(task);
        if unplaceable.contains(&shape) {
            continue;
        }
        let best = order.iter().copied().find(|(_, i)| {
            let c = &candidates[*i];
            c.fits(&need)
                && crate::manifest::constraints_match(c.node, task.constraints.as_ref()).is_ok()
        });
        let Some(entry) = best else {
            unplaceable.insert(shape);
            continue;
        };
        order.remove(&entry);
        let c = &mut candidates[entry.1];
        c.take(&need);
        if c.free.slots > 0 {
            order.insert((c.load_key(), entry.1));
        }
        batch.assignments.push(Assignment {
            task_id: key.task_id.to_string(),
            node_id: c.node.node_id.clone(),
            attempt: Attempt(task.attempt).next().0,
        });
    }
    batch
}

/// What decides where a task can go: its constraints and resource request, encoded.
fn task_shape(task: &Task) -> Vec<u8> {
    use prost::Message;
    let mut out = task
        .constraints
        .as_ref()
        .map(Message::encode_to_vec)
        .unwrap_or_default();
    out.push(0xff);
    if let Some(r) = &task.resources {
        r.encode(&mut out).expect("Vec grows");
    }
    out
}

/// True if the task may get another attempt: not cancelled and attempts left (docs/failures.md S7).
fn may_run_again(task: &Task) -> bool {
    !task.cancel_requested && task.attempt < task.max_attempts
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
mod model_tests;
#[cfg(test)]
mod tests;
