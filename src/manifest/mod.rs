//! The replicated TaskManifest: tasks and worker nodes, changed only by applying commands
//! that were committed through Raft (docs/architecture.md#manifest, "Task lifecycle"; docs/architecture.md#manifest,
//! docs/lifecycle.md).
//!
//! Pure and deterministic: no clock (every timestamp is the proposer's `now_ms` inside the
//! command), no RNG (task ids come inside the command; backoff jitter is a hash of the task id
//! and attempt), no I/O, and only ordered maps. Applying the same commands in the same order
//! gives byte-identical [`Manifest::snapshot`]s on every controller.
//!
//! The seed's operations are methods here: [`Manifest::add_task`], [`Manifest::get_task`],
//! [`Manifest::update_task_status`], [`Manifest::assign_task`], [`Manifest::complete_task`],
//! [`Manifest::fail_task`], [`Manifest::pending_tasks`], [`Manifest::tasks_by_status`],
//! [`Manifest::all_tasks`], [`Manifest::update_node_heartbeat`] (auto-registration),
//! [`Manifest::mark_node_unhealthy`], [`Manifest::healthy_nodes`], [`Manifest::all_nodes`],
//! [`Manifest::select_least_loaded_node`], [`Manifest::check_stale_nodes`] and
//! [`Manifest::node_task_count`]. The mutating ones are the primitives `apply` dispatches
//! to; on a controller they must only run through [`Manifest::apply`] so replicas agree.
//!
//! Driving it:
//! ```
//! use mlcp::manifest::{Manifest, TaskId, command::{self, Kind, SubmitTask}};
//! let mut m = Manifest::new();
//! let id = TaskId::new_v7(1_700_000_000_000, [7; 10]);
//! let cmd = command::command(1_700_000_000_000, 1, Kind::SubmitTask(SubmitTask {
//!     task_id: id.to_string(),
//!     task_type: "echo".into(),
//!     task_data: "{}".into(),
//!     ..Default::default()
//! }));
//! let response = m.apply(&prost::Message::encode_to_vec(&cmd));
//! let outcome = command::decode_result(&response).unwrap();
//! assert_eq!(outcome.task().unwrap().task_id, id.to_string());
//! assert_eq!(m.pending_tasks().len(), 1);
//! ```

#![warn(missing_docs)]

pub mod backoff;
pub mod command;
mod error;
mod ids;
mod invariants;
mod lifecycle;
mod nodes;
mod session;
mod snapshot;
pub mod validate;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

pub use error::{ErrorKind, ManifestError};
pub use ids::{Attempt, TaskId, TaskIdError};
pub use invariants::InvariantViolation;
pub use nodes::{constraints_match, is_schedulable, node_capacity};
pub use snapshot::SNAPSHOT_FORMAT_VERSION;

use crate::proto::internal::SessionRecord;
use crate::proto::{Node, NodeStatus, ResourceRequest, Task, TaskStatus};

use command::{Command, CommandOutcome, Kind};

/// Position of a PENDING task in the placement order: higher priority first, then
/// submission order (docs/architecture.md#scheduling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PendingKey {
    /// `-priority`, so ascending order is descending priority.
    pub neg_priority: i64,
    /// The task's `submit_seq`.
    pub submit_seq: u64,
    /// The task.
    pub task_id: TaskId,
}

/// Resources in use on (or free on) a node. `slots` counts task slots, `cpu_millis`
/// millicores, `memory_mb` MiB, `gpus` devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Task slots (count).
    pub slots: u64,
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// GPUs (count).
    pub gpus: u64,
}

impl Resources {
    /// What one attempt of a task with this request occupies (0 slots counts as 1).
    pub fn of_request(r: Option<&ResourceRequest>) -> Resources {
        let r = r.copied().unwrap_or_default();
        Resources {
            slots: u64::from(r.slots.max(1)),
            cpu_millis: u64::from(r.cpu_millis),
            memory_mb: r.memory_mb,
            gpus: u64::from(r.gpus),
        }
    }
}

/// The replicated task manifest. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Manifest {
    tasks: BTreeMap<TaskId, Task>,
    nodes: BTreeMap<String, Node>,
    /// Term of the last committed status change per node (docs/failures.md S3).
    node_status_terms: BTreeMap<String, u64>,
    sessions: BTreeMap<String, SessionRecord>,
    next_submit_seq: u64,

    // Derived indexes, rebuilt on restore; never part of the snapshot.
    idempotency: BTreeMap<String, TaskId>,
    pending: BTreeSet<PendingKey>,
    by_status: BTreeMap<i32, BTreeSet<TaskId>>,
    active_by_node: BTreeMap<String, BTreeSet<TaskId>>,
    session_lru: BTreeSet<(i64, String)>,
}

/// The status of a task as the enum (unknown numbers read as `Unspecified`).
pub fn task_status(t: &Task) -> TaskStatus {
    TaskStatus::try_from(t.status).unwrap_or(TaskStatus::Unspecified)
}

/// The status of a node as the enum (unknown numbers read as `Unspecified`).
pub fn node_status(n: &Node) -> NodeStatus {
    NodeStatus::try_from(n.status).unwrap_or(NodeStatus::Unspecified)
}

/// True for COMPLETED, FAILED and CANCELLED.
pub fn is_terminal(status: TaskStatus) -> bool {
    matches!(
        status,
        TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
    )
}

/// True for ASSIGNED and RUNNING: the task's current attempt occupies its node.
pub fn is_active(status: TaskStatus) -> bool {
    matches!(status, TaskStatus::Assigned | TaskStatus::Running)
}

impl Manifest {
    /// An empty manifest.
    pub fn new() -> Manifest {
        Manifest::default()
    }

    // ----- applying commands ---------------------------------------------------------

    /// Applies one committed command given as bytes (a Raft entry's data) and returns the
    /// encoded `CommandResult` for the proposer (decode it with [`command::decode_result`]).
    /// Undecodable bytes change nothing and yield a `Malformed` error result.
    pub fn apply(&mut self, cmd_bytes: &[u8]) -> Vec<u8> {
        let result = command::decode_command(cmd_bytes).and_then(|c| self.apply_command(&c));
        command::encode_result(&result)
    }

    /// Applies one committed command. With a client session, a `(client_id, sequence)` that
    /// was already applied returns the recorded outcome (with current task/node values) and
    /// changes nothing (docs/failures.md C10). On `Err` nothing but the session record was written.
    pub fn apply_command(&mut self, cmd: &Command) -> Result<CommandOutcome, ManifestError> {
        let session = cmd
            .session
            .as_ref()
            .filter(|s| !s.client_id.is_empty())
            .cloned();
        if let Some(s) = &session {
            match self.check_session(s) {
                session::SessionCheck::Fresh => {}
                session::SessionCheck::Replay(result) => return self.replay(&result),
                session::SessionCheck::Expired => {
                    return Err(ManifestError::SessionExpired {
                        client_id: s.client_id.clone(),
                        sequence: s.sequence,
                    });
                }
            }
        }
        let result = self.execute(cmd);
        if let Some(s) = &session {
            self.record_session(s, cmd.now_ms, &result);
        }
        result
    }

    fn execute(&mut self, cmd: &Command) -> Result<CommandOutcome, ManifestError> {
        let now = cmd.now_ms;
        let term = cmd.term;
        let Some(kind) = &cmd.kind else {
            return Err(ManifestError::Malformed {
                what: "command".into(),
                reason: "no command kind set".into(),
            });
        };
        match kind {
            Kind::SubmitTask(s) => {
                let (task, duplicate) = self.add_task(s, now)?;
                Ok(CommandOutcome {
                    tasks: vec![task],
                    duplicate,
                    ..Default::default()
                })
            }
            Kind::AssignTasks(batch) => Ok(self.assign_batch(batch, now)),
            Kind::AckStarted(a) => {
                let id = parse_task_id(&a.task_id)?;
                let (task, duplicate) =
                    self.start_task(&id, Attempt(a.attempt), &a.node_id, now)?;
                Ok(CommandOutcome {
                    tasks: vec![task],
                    duplicate,
                    ..Default::default()
                })
            }
            Kind::ReportResult(r) => {
                let id = parse_task_id(&r.task_id)?;
                let (task, duplicate) = if r.success {
                    self.complete_task(&id, Attempt(r.attempt), &r.node_id, &r.result_data, now)?
                } else {
                    self.fail_task(
                        &id,
                        Attempt(r.attempt),
                        &r.node_id,
                        &r.error,
                        r.retryable,
                        now,
                    )?
                };
                Ok(CommandOutcome {
                    tasks: vec![task],
                    duplicate,
                    ..Default::default()
                })
            }
            Kind::RequeueTasks(r) => Ok(self.requeue_batch(&r.attempts, r.reason(), now)),
            Kind::NodeLost(n) => {
                let (node, tasks) = self.node_lost(&n.node_id, now, term)?;
                Ok(CommandOutcome {
                    tasks,
                    node: Some(node),
                    ..Default::default()
                })
            }
            Kind::CancelTask(c) => {
                let id = parse_task_id(&c.task_id)?;
                let (task, duplicate) = self.cancel_task(&id, &c.reason, now)?;
                Ok(CommandOutcome {
                    tasks: vec![task],
                    duplicate,
                    ..Default::default()
                })
            }
            Kind::RegisterNode(r) => {
                let (node, changed) = self.update_node_heartbeat(r, now, term)?;
                Ok(CommandOutcome {
                    node: Some(node),
                    duplicate: !changed,
                    ..Default::default()
                })
            }
            Kind::SetNodeStatus(s) => {
                let (node, changed) = self.set_node_status(&s.node_id, s.status(), now, term)?;
                Ok(CommandOutcome {
                    node: Some(node),
                    duplicate: !changed,
                    ..Default::default()
                })
            }
            Kind::ExpireTasks(e) => Ok(self.expire_batch(e, now)),
        }
    }

    // ----- task queries (seed operations) -------------------------------------------

    /// The task with this id (seed `GetTask`).
    pub fn get_task(&self, id: &TaskId) -> Option<&Task> {
        self.tasks.get(id)
    }

    /// The task named by a textual id: `InvalidArgument` (field `task_id`) if it is not a
    /// UUID, `TaskNotFound` if unknown.
    pub fn lookup_task(&self, task_id: &str) -> Result<&Task, ManifestError> {
        let id = validate::validate_task_id("task_id", task_id)?;
        self.tasks
            .get(&id)
            .ok_or_else(|| ManifestError::TaskNotFound {
                task_id: task_id.to_string(),
            })
    }

    /// PENDING tasks in placement order: higher priority first, then submission order
    /// (seed `GetPendingTasks`). Includes tasks whose `not_before` is still in the future.
    pub fn pending_tasks(&self) -> Vec<&Task> {
        self.pending_keys()
            .map(|k| &self.tasks[&k.task_id])
            .collect()
    }

    /// PENDING tasks in placement order, as keys (cheap to iterate).
    pub fn pending_keys(&self) -> impl Iterator<Item = &PendingKey> + '_ {
        self.pending.iter()
    }

    /// Tasks in `status`, ordered by task id (= creation order) (seed `GetTasksByStatus`).
    pub fn tasks_by_status(&self, status: TaskStatus) -> Vec<&Task> {
        self.by_status
            .get(&(status as i32))
            .into_iter()
            .flatten()
            .map(|id| &self.tasks[id])
            .collect()
    }

    /// Every task, ordered by task id (seed `GetAllTasks`).
    pub fn all_tasks(&self) -> Vec<&Task> {
        self.tasks.values().collect()
    }

    /// Number of tasks.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Task counts per status (only statuses with at least one task).
    pub fn task_counts(&self) -> BTreeMap<TaskStatus, u64> {
        self.by_status
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(s, ids)| {
                (
                    TaskStatus::try_from(*s).unwrap_or(TaskStatus::Unspecified),
                    ids.len() as u64,
                )
            })
            .collect()
    }

    /// One page of tasks ordered by id, optionally filtered by status, starting after
    /// `after` (exclusive). Returns the page and the id to continue after, if more remain.
    pub fn tasks_page(
        &self,
        status: Option<TaskStatus>,
        after: Option<&TaskId>,
        limit: usize,
    ) -> (Vec<&Task>, Option<TaskId>) {
        use std::ops::Bound::{Excluded, Unbounded};
        let lower = after.map_or(Unbounded, Excluded);
        let mut ids: Box<dyn Iterator<Item = &TaskId>> = match status {
            None => Box::new(self.tasks.range((lower, Unbounded)).map(|(id, _)| id)),
            Some(s) => match self.by_status.get(&(s as i32)) {
                Some(set) => Box::new(set.range((lower, Unbounded))),
                None => Box::new(std::iter::empty()),
            },
        };
        let page: Vec<&Task> = ids.by_ref().take(limit).map(|id| &self.tasks[id]).collect();
        let next = if ids.next().is_some() {
            page.last().and_then(|t| TaskId::parse(&t.task_id).ok())
        } else {
            None
        };
        (page, next)
    }

    /// The task submitted with this idempotency key, if any.
    pub fn task_by_idempotency_key(&self, key: &str) -> Option<&Task> {
        self.idempotency.get(key).and_then(|id| self.tasks.get(id))
    }

    /// Tasks ASSIGNED or RUNNING on `node_id`, ordered by task id.
    pub fn active_tasks_on(&self, node_id: &str) -> Vec<&Task> {
        self.active_by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .map(|id| &self.tasks[id])
            .collect()
    }

    /// Tasks ASSIGNED (not yet acknowledged) to `node_id`: what a PollTask hands out.
    pub fn assignments_for(&self, node_id: &str) -> Vec<&Task> {
        self.active_tasks_on(node_id)
            .into_iter()
            .filter(|t| task_status(t) == TaskStatus::Assigned)
            .collect()
    }

    /// Tasks ASSIGNED or RUNNING on `node_id` (count) (seed `GetNodeTaskCount`).
    pub fn node_task_count(&self, node_id: &str) -> usize {
        self.active_by_node.get(node_id).map_or(0, BTreeSet::len)
    }

    /// Resources occupied on `node_id` by its ASSIGNED and RUNNING tasks.
    pub fn node_usage(&self, node_id: &str) -> Resources {
        let mut used = Resources::default();
        for t in self.active_tasks_on(node_id) {
            let r = Resources::of_request(t.resources.as_ref());
            used.slots += r.slots;
            used.cpu_millis += r.cpu_millis;
            used.memory_mb += r.memory_mb;
            used.gpus += r.gpus;
        }
        used
    }

    /// True if the attempt is the task's live attempt on `node_id`: the current attempt,
    /// ASSIGNED or RUNNING, on that node. Anything else an agent runs must be aborted.
    pub fn is_live_attempt(&self, task_id: &str, attempt: Attempt, node_id: &str) -> bool {
        TaskId::parse(task_id)
            .ok()
            .and_then(|id| self.tasks.get(&id))
            .is_some_and(|t| {
                t.attempt == attempt.0
                    && is_active(task_status(t))
                    && t.assigned_node_id == node_id
                    && !t.cancel_requested
            })
    }

    /// Which of the attempts an agent says it runs it must abort: every one that is not the
    /// live attempt of its task on that node (superseded, ended, cancelled, unknown) (docs/lifecycle.md
    /// §1, §5). Order follows `running`.
    pub fn attempts_to_abort(
        &self,
        node_id: &str,
        running: &[crate::proto::RunningAttempt],
    ) -> Vec<crate::proto::RunningAttempt> {
        running
            .iter()
            .filter(|r| !self.is_live_attempt(&r.task_id, Attempt(r.attempt), node_id))
            .cloned()
            .collect()
    }

    /// RUNNING attempts on `node_id` that the agent no longer reports in `running` (it lost
    /// them, e.g. after a restart). The leader may requeue them with reason ORPHANED. ASSIGNED
    /// attempts are not included: the agent may not have polled them yet.
    pub fn orphaned_attempts(
        &self,
        node_id: &str,
        running: &[crate::proto::RunningAttempt],
    ) -> Vec<command::AttemptRef> {
        let reported: BTreeSet<(&str, u32)> = running
            .iter()
            .map(|r| (r.task_id.as_str(), r.attempt))
            .collect();
        self.active_tasks_on(node_id)
            .into_iter()
            .filter(|t| task_status(t) == TaskStatus::Running)
            .filter(|t| !reported.contains(&(t.task_id.as_str(), t.attempt)))
            .map(|t| command::AttemptRef {
                task_id: t.task_id.clone(),
                attempt: t.attempt,
            })
            .collect()
    }

    // ----- index maintenance --------------------------------------------------------

    fn index(&mut self, id: TaskId, t: &Task) {
        let status = task_status(t);
        self.by_status.entry(t.status).or_default().insert(id);
        if status == TaskStatus::Pending {
            self.pending.insert(pending_key(id, t));
        }
        if is_active(status) && !t.assigned_node_id.is_empty() {
            self.active_by_node
                .entry(t.assigned_node_id.clone())
                .or_default()
                .insert(id);
        }
        if !t.idempotency_key.is_empty() {
            self.idempotency.insert(t.idempotency_key.clone(), id);
        }
    }

    fn unindex(&mut self, id: TaskId, t: &Task) {
        if let Some(set) = self.by_status.get_mut(&t.status) {
            set.remove(&id);
            if set.is_empty() {
                self.by_status.remove(&t.status);
            }
        }
        self.pending.remove(&pending_key(id, t));
        if let Some(set) = self.active_by_node.get_mut(&t.assigned_node_id) {
            set.remove(&id);
            if set.is_empty() {
                self.active_by_node.remove(&t.assigned_node_id);
            }
        }
    }

    /// Inserts a new task (indexes included).
    fn insert_task(&mut self, id: TaskId, t: Task) {
        self.index(id, &t);
        self.tasks.insert(id, t);
    }

    /// Runs `f` on the task with indexes kept in step. `None` if the task does not exist.
    fn mutate_task<R>(&mut self, id: &TaskId, f: impl FnOnce(&mut Task) -> R) -> Option<R> {
        let mut t = self.tasks.remove(id)?;
        self.unindex(*id, &t);
        let r = f(&mut t);
        self.index(*id, &t);
        self.tasks.insert(*id, t);
        Some(r)
    }

    fn rebuild_indexes(&mut self) {
        self.idempotency.clear();
        self.pending.clear();
        self.by_status.clear();
        self.active_by_node.clear();
        self.session_lru.clear();
        let tasks = std::mem::take(&mut self.tasks);
        for (id, t) in &tasks {
            self.index(*id, t);
        }
        self.tasks = tasks;
        for (client, s) in &self.sessions {
            self.session_lru.insert((s.last_used_ms, client.clone()));
        }
    }
}

fn pending_key(id: TaskId, t: &Task) -> PendingKey {
    PendingKey {
        neg_priority: -i64::from(t.priority),
        submit_seq: t.submit_seq,
        task_id: id,
    }
}

/// Parses a task id carried in a command (`InvalidArgument` naming `task_id` otherwise).
fn parse_task_id(text: &str) -> Result<TaskId, ManifestError> {
    validate::validate_task_id("task_id", text)
}
