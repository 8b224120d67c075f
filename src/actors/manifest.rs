//! The manifest actor: owns this controller's copy of the replicated task manifest
//! (`crate::manifest::Manifest`), applies committed entries to it in log order, answers
//! reads, and wakes whoever waits on a change (DESIGN.md "Actors": "manifest (applies
//! committed entries, answers reads, wakes waiters)").
//!
//! Waiters:
//! - long polls wait on a per-node version counter (a `tokio::sync::watch`) bumped whenever an
//!   applied command changes a task placed on that node; the gateway takes the receiver in
//!   the same message that reads the node's work, so no wake-up can fall between the read and
//!   the wait;
//! - everyone else (WatchTask, the scheduler) can follow the applied index on a `watch`;
//! - the scheduler gets a [`WakeScheduler`] when a command may have created work to place
//!   (a submission, a registration, a finished or requeued attempt).
//!
//! The actor never proposes anything: it only sees what the Raft log committed.

#![warn(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use actix::{Actor, Context, Handler, Message, MessageResult, Recipient};
use tokio::sync::watch;

use crate::actors::scheduler::WakeScheduler;
use crate::actors::{ApplyCommitted, ApplyResult, RestoreSnapshot, TakeSnapshot};
use crate::manifest::command::{
    self as cmds, AssignTasks, Command, ExpireTasks, Kind, RegisterNode,
};
use crate::manifest::{Manifest, TaskId};
use crate::proto::{Node, NodeStatus, RunningAttempt, Task, TaskAssignment, TaskStatus};
use crate::raft::{EntryKind, LogIndex};
use crate::scheduler::liveness::{HeartbeatDecision, HeartbeatIn, Liveness, LivenessActions};
use crate::scheduler::timers::LeaderTimers;
use crate::scheduler::{self, PlacementLimits};

/// Mailbox bound of the manifest actor (messages).
pub const MANIFEST_MAILBOX_MESSAGES_MAX: usize = 4096;

/// One page of tasks.
#[derive(Debug, Clone, Default)]
pub struct TaskPage {
    /// Tasks in creation order.
    pub tasks: Vec<Task>,
    /// The last task returned, if more match after it.
    pub next_after: Option<TaskId>,
    /// Tasks matching the filter in total (count).
    pub total: u64,
}

/// What a node should do now, and how to wait for that to change.
#[derive(Debug)]
pub struct NodeWork {
    /// ASSIGNED attempts placed on the node, oldest first.
    pub assignments: Vec<TaskAssignment>,
    /// Attempts on the node the agent must abort (cancelled while in flight).
    pub abort: Vec<RunningAttempt>,
    /// Changes whenever a task placed on the node changes (or the whole state is restored).
    pub changed: watch::Receiver<u64>,
}

/// Counters for cluster status.
#[derive(Debug, Clone, Default)]
pub struct ManifestStatus {
    /// Last applied log index.
    pub applied: LogIndex,
    /// Tasks per status name (e.g. `"PENDING"`).
    pub task_counts: BTreeMap<String, u64>,
}

/// Read one task by its canonical id.
#[derive(Message, Debug)]
#[rtype(result = "Option<Task>")]
pub struct GetTask {
    /// Hyphenated lowercase UUID.
    pub task_id: String,
}

/// Read a page of tasks in creation order (task ids are UUID v7).
#[derive(Message, Debug)]
#[rtype(result = "TaskPage")]
pub struct ListTasks {
    /// Only tasks in this status (`None` = all).
    pub status: Option<TaskStatus>,
    /// Start after this task (`None` = from the first).
    pub after: Option<TaskId>,
    /// Most tasks to return (count, at least 1).
    pub limit: usize,
}

/// Read every node (optionally in one status), ordered by node id.
#[derive(Message, Debug)]
#[rtype(result = "Vec<Node>")]
pub struct ListNodes {
    /// Only nodes in this status (`None` = all).
    pub status: Option<NodeStatus>,
}

/// Read one node.
#[derive(Message, Debug)]
#[rtype(result = "Option<Node>")]
pub struct GetNode {
    /// The node id.
    pub node_id: String,
}

/// Read a node's current assignments and subscribe to its changes, atomically.
#[derive(Message, Debug)]
#[rtype(result = "NodeWork")]
pub struct PollWork {
    /// The node id.
    pub node_id: String,
    /// Most assignments to return (count; 0 = all).
    pub limit: usize,
}

/// Heartbeat monitor → manifest: run the pure liveness core's heartbeat decision
/// ([`Liveness::heartbeat`]) over the committed state, and hold the node back from placement
/// while it runs attempts that are no longer its own (issue 4 §5). The monitor owns
/// `liveness`; the manifest only borrows it.
#[derive(Message)]
#[rtype(result = "HeartbeatDecision")]
pub struct CheckHeartbeat {
    /// The monitor's liveness state.
    pub liveness: Arc<Mutex<Liveness>>,
    /// The monitor's monotonic clock (ms).
    pub now_ms: u64,
    /// The leader's wall clock (unix ms), for display only.
    pub wall_ms: i64,
    /// The registration the agent advertises.
    pub registration: RegisterNode,
    /// What the agent runs.
    pub running: Vec<RunningAttempt>,
    /// CPU usage, percent 0..=100.
    pub cpu_usage: f64,
    /// Memory usage, percent 0..=100.
    pub memory_usage: f64,
    /// The agent's clock (unix ms), display only.
    pub agent_time_ms: i64,
    /// The agent is shutting down cleanly (its last heartbeat).
    pub leaving: bool,
}

/// Applied index and task counts.
#[derive(Message, Debug)]
#[rtype(result = "ManifestStatus")]
pub struct GetStatus;

/// Scheduler → manifest: plan one batch of placements over the current state with the
/// pure scheduler. `None` when nothing can be placed now.
#[derive(Message, Debug)]
#[rtype(result = "Option<AssignTasks>")]
pub struct PlanAssignments {
    /// The scheduler's monotonic clock (ms): tasks still in their retry backoff wait.
    pub mono_now_ms: u64,
    /// The scheduler's timers; the manifest only borrows them for this plan.
    pub timers: Arc<Mutex<LeaderTimers>>,
    /// Most placements in the batch.
    pub batch_max: usize,
}

/// Scheduler → manifest: attempts past their run timeout and PENDING tasks past their queue
/// timeout, both on the leader's monotonic clock (SCENARIOS S8). `None` when there are none.
#[derive(Message, Debug)]
#[rtype(result = "Option<ExpireTasks>")]
pub struct PlanExpirations {
    /// The scheduler's monotonic clock (ms since it started).
    pub mono_now_ms: u64,
    /// The scheduler's timers; the manifest only borrows them for this scan.
    pub timers: Arc<Mutex<LeaderTimers>>,
    /// How long past its run timeout an attempt may still report before it is requeued
    /// (ms): the agent stops the task at the timeout and needs time to say so.
    pub report_grace_ms: u64,
}

/// Heartbeat monitor → manifest: run the pure liveness core over the current state. The
/// monitor owns `liveness`; the manifest only borrows it for this evaluation. Answers the
/// actions and the number of registered nodes.
#[derive(Message)]
#[rtype(result = "(LivenessActions, usize)")]
pub struct EvaluateLiveness {
    /// The monitor's liveness state.
    pub liveness: Arc<Mutex<Liveness>>,
    /// The monitor's monotonic clock (ms).
    pub now_ms: u64,
    /// Whether this leader still hears from a quorum (SCENARIOS S3).
    pub leader_can_commit: bool,
}

/// Heartbeat monitor → manifest: release every node held back from placement (leadership
/// changed; hold-backs are the leader's own, set by [`CheckHeartbeat`]).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReleaseHeldBack;

/// Register the actor the manifest wakes when there may be new work to place.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetScheduler {
    /// The scheduler's wake-up recipient.
    pub scheduler: Recipient<WakeScheduler>,
}

/// The manifest actor. See the module docs.
pub struct ManifestActor {
    manifest: Manifest,
    applied: LogIndex,
    applied_tx: watch::Sender<LogIndex>,
    node_versions: BTreeMap<String, watch::Sender<u64>>,
    scheduler: Option<Recipient<WakeScheduler>>,
    held_back: BTreeSet<String>,
}

impl ManifestActor {
    /// An empty manifest; `applied_tx` is told every new applied index.
    pub fn new(applied_tx: watch::Sender<LogIndex>) -> Self {
        ManifestActor {
            manifest: Manifest::default(),
            applied: LogIndex(0),
            applied_tx,
            node_versions: BTreeMap::new(),
            scheduler: None,
            held_back: BTreeSet::new(),
        }
    }

    fn bump_node(&mut self, node_id: &str) {
        if let Some(tx) = self.node_versions.get(node_id) {
            tx.send_modify(|v| *v += 1);
        }
    }

    fn bump_all_nodes(&mut self) {
        for tx in self.node_versions.values() {
            tx.send_modify(|v| *v += 1);
        }
    }

    fn wake_scheduler(&self) {
        if let Some(s) = &self.scheduler {
            // A wake-up is idempotent: a full mailbox already holds one.
            let _ = s.try_send(WakeScheduler);
        }
    }

    /// Apply one command entry; returns the encoded result for its proposer.
    fn apply_command(&mut self, data: &[u8]) -> Vec<u8> {
        let decoded = cmds::decode_command(data);
        let kind_wakes = matches!(
            decoded
                .as_ref()
                .ok()
                .and_then(|c: &Command| c.kind.as_ref()),
            Some(
                Kind::SubmitTask(_)
                    | Kind::RegisterNode(_)
                    | Kind::SetNodeStatus(_)
                    | Kind::ReportResult(_)
                    | Kind::RequeueTasks(_)
                    | Kind::NodeLost(_)
                    | Kind::CancelTask(_)
                    | Kind::ExpireTasks(_)
            )
        );
        let result = match decoded {
            Ok(cmd) => self.manifest.apply_command(&cmd),
            Err(e) => Err(e),
        };
        if let Ok(outcome) = &result {
            let nodes: Vec<String> = outcome
                .tasks
                .iter()
                .map(|t| t.assigned_node_id.clone())
                .chain(
                    outcome
                        .tasks
                        .iter()
                        .filter_map(|t| t.attempts.last().map(|a| a.node_id.clone())),
                )
                .filter(|n| !n.is_empty())
                .collect();
            for n in nodes {
                self.bump_node(&n);
            }
            if kind_wakes && !outcome.duplicate {
                self.wake_scheduler();
            }
        }
        cmds::encode_result(&result)
    }
}

impl Actor for ManifestActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MANIFEST_MAILBOX_MESSAGES_MAX);
    }
}

impl actix::Supervised for ManifestActor {}

impl Handler<ApplyCommitted> for ManifestActor {
    type Result = MessageResult<ApplyCommitted>;

    fn handle(&mut self, msg: ApplyCommitted, _: &mut Context<Self>) -> Self::Result {
        let mut results = Vec::with_capacity(msg.entries.len());
        for entry in msg.entries {
            // Entries at or below the applied index are already in the state (a restored
            // snapshot may cover them); applying them again would break determinism.
            if entry.index <= self.applied {
                continue;
            }
            let response = match entry.kind {
                EntryKind::Normal if !entry.data.is_empty() => self.apply_command(&entry.data),
                _ => Vec::new(),
            };
            self.applied = entry.index;
            results.push(ApplyResult {
                index: entry.index,
                response,
            });
        }
        self.applied_tx.send_replace(self.applied);
        MessageResult(results)
    }
}

impl Handler<TakeSnapshot> for ManifestActor {
    type Result = Result<(LogIndex, Vec<u8>), String>;

    fn handle(&mut self, _: TakeSnapshot, _: &mut Context<Self>) -> Self::Result {
        Ok((self.applied, self.manifest.snapshot()))
    }
}

impl Handler<RestoreSnapshot> for ManifestActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: RestoreSnapshot, _: &mut Context<Self>) -> Self::Result {
        let index = msg.snapshot.meta.index;
        // A snapshot older than what is applied would roll the state back (SCENARIOS C8).
        if index < self.applied {
            return Err(format!(
                "snapshot at index {index} is older than the applied index {}",
                self.applied
            ));
        }
        let restored = Manifest::restore(&msg.snapshot.data).map_err(|e| e.to_string())?;
        self.manifest = restored;
        self.applied = index;
        self.applied_tx.send_replace(index);
        self.bump_all_nodes();
        self.wake_scheduler();
        Ok(())
    }
}

impl Handler<GetTask> for ManifestActor {
    type Result = Option<Task>;
    fn handle(&mut self, msg: GetTask, _: &mut Context<Self>) -> Self::Result {
        self.manifest.lookup_task(&msg.task_id).ok().cloned()
    }
}

impl Handler<ListTasks> for ManifestActor {
    type Result = MessageResult<ListTasks>;
    fn handle(&mut self, msg: ListTasks, _: &mut Context<Self>) -> Self::Result {
        let (page, next_after) =
            self.manifest
                .tasks_page(msg.status, msg.after.as_ref(), msg.limit.max(1));
        let tasks = page.into_iter().cloned().collect();
        let total = match msg.status {
            None => self.manifest.task_count() as u64,
            Some(s) => self.manifest.task_counts().get(&s).copied().unwrap_or(0),
        };
        MessageResult(TaskPage {
            tasks,
            next_after,
            total,
        })
    }
}

impl Handler<ListNodes> for ManifestActor {
    type Result = MessageResult<ListNodes>;
    fn handle(&mut self, msg: ListNodes, _: &mut Context<Self>) -> Self::Result {
        let mut nodes = self.manifest.all_nodes();
        nodes.retain(|n| msg.status.is_none_or(|s| n.status == s as i32));
        MessageResult(nodes)
    }
}

impl Handler<GetNode> for ManifestActor {
    type Result = Option<Node>;
    fn handle(&mut self, msg: GetNode, _: &mut Context<Self>) -> Self::Result {
        self.manifest.get_node(&msg.node_id)
    }
}

impl Handler<PollWork> for ManifestActor {
    type Result = MessageResult<PollWork>;
    fn handle(&mut self, msg: PollWork, _: &mut Context<Self>) -> Self::Result {
        let changed = self
            .node_versions
            .entry(msg.node_id.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        let mut assignments = Vec::new();
        let mut abort = Vec::new();
        for t in self.manifest.active_tasks_on(&msg.node_id) {
            let active =
                t.status == TaskStatus::Assigned as i32 || t.status == TaskStatus::Running as i32;
            if active && t.cancel_requested {
                abort.push(RunningAttempt {
                    task_id: t.task_id.clone(),
                    attempt: t.attempt,
                });
            } else if t.status == TaskStatus::Assigned as i32 {
                assignments.push(assignment_of(t));
            }
        }
        assignments.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        if msg.limit > 0 {
            assignments.truncate(msg.limit);
        }
        MessageResult(NodeWork {
            assignments,
            abort,
            changed,
        })
    }
}

impl Handler<CheckHeartbeat> for ManifestActor {
    type Result = MessageResult<CheckHeartbeat>;
    fn handle(&mut self, msg: CheckHeartbeat, _: &mut Context<Self>) -> Self::Result {
        let hb = HeartbeatIn {
            registration: &msg.registration,
            running: &msg.running,
            cpu_usage: msg.cpu_usage,
            memory_usage: msg.memory_usage,
            agent_time_ms: msg.agent_time_ms,
            leaving: msg.leaving,
        };
        let decision = msg
            .liveness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .heartbeat(&self.manifest, hb, msg.now_ms, msg.wall_ms);
        let node_id = &msg.registration.node_id;
        if !decision.abort.is_empty() {
            self.held_back.insert(node_id.clone());
        } else if self.held_back.remove(node_id) {
            self.wake_scheduler();
        }
        MessageResult(decision)
    }
}

impl Handler<GetStatus> for ManifestActor {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let task_counts = self
            .manifest
            .task_counts()
            .into_iter()
            .map(|(s, n)| (status_name(s).to_string(), n))
            .collect();
        MessageResult(ManifestStatus {
            applied: self.applied,
            task_counts,
        })
    }
}

impl Handler<PlanAssignments> for ManifestActor {
    type Result = Option<AssignTasks>;
    fn handle(&mut self, msg: PlanAssignments, _: &mut Context<Self>) -> Self::Result {
        let limits = PlacementLimits {
            batch_assignments_max: msg.batch_max,
            ..PlacementLimits::default()
        };
        let mut timers = msg.timers.lock().unwrap_or_else(|e| e.into_inner());
        let plan = scheduler::place(
            &self.manifest,
            |t| timers.backoff_over(t, msg.mono_now_ms),
            &limits,
            &self.held_back,
        );
        (!plan.assignments.is_empty()).then_some(plan)
    }
}

impl Handler<PlanExpirations> for ManifestActor {
    type Result = Option<ExpireTasks>;
    fn handle(&mut self, msg: PlanExpirations, _: &mut Context<Self>) -> Self::Result {
        let mut timers = msg.timers.lock().unwrap_or_else(|e| e.into_inner());
        let e = timers.expired(&self.manifest, msg.mono_now_ms, msg.report_grace_ms);
        (!e.run_timed_out.is_empty() || !e.queue_timed_out.is_empty()).then_some(e)
    }
}

impl Handler<EvaluateLiveness> for ManifestActor {
    type Result = MessageResult<EvaluateLiveness>;
    fn handle(&mut self, msg: EvaluateLiveness, _: &mut Context<Self>) -> Self::Result {
        let mut liveness = msg.liveness.lock().unwrap_or_else(|e| e.into_inner());
        let actions = liveness.evaluate(msg.now_ms, &self.manifest, msg.leader_can_commit);
        MessageResult((actions, self.manifest.node_count()))
    }
}

impl Handler<ReleaseHeldBack> for ManifestActor {
    type Result = ();
    fn handle(&mut self, _: ReleaseHeldBack, _: &mut Context<Self>) {
        self.held_back.clear();
    }
}

impl Handler<SetScheduler> for ManifestActor {
    type Result = ();
    fn handle(&mut self, msg: SetScheduler, _: &mut Context<Self>) {
        self.scheduler = Some(msg.scheduler);
    }
}

/// The proto name of a task status without its prefix (`"PENDING"`).
pub fn status_name(s: TaskStatus) -> &'static str {
    s.as_str_name().trim_start_matches("TASK_STATUS_")
}

fn assignment_of(t: &Task) -> TaskAssignment {
    TaskAssignment {
        task_id: t.task_id.clone(),
        attempt: t.attempt,
        task_type: t.task_type.clone(),
        task_data: t.task_data.clone(),
        run_timeout_ms: t.run_timeout_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::command::AttemptRef;
    use crate::manifest::command::{Assignment, SubmitTask, command};
    use crate::proto::NodeCapacity;
    use crate::raft::{Entry, Snapshot, SnapshotMeta, Term};
    use prost::Message as _;

    const NOW: i64 = 1_700_000_000_000;
    const TASK: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

    fn entry(index: u64, kind: Kind) -> Entry {
        Entry {
            term: Term(1),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: command(NOW, 1, kind).encode_to_vec(),
        }
    }

    fn submit() -> Kind {
        Kind::SubmitTask(SubmitTask {
            task_id: TASK.into(),
            task_type: "echo".into(),
            task_data: "{}".into(),
            max_attempts: 1,
            ..Default::default()
        })
    }

    fn register() -> Kind {
        Kind::RegisterNode(RegisterNode {
            node_id: "n1".into(),
            capacity: Some(NodeCapacity {
                slots: 1,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn assign() -> Kind {
        Kind::AssignTasks(AssignTasks {
            assignments: vec![Assignment {
                task_id: TASK.into(),
                node_id: "n1".into(),
                attempt: 1,
            }],
        })
    }

    #[actix::test]
    async fn timeouts_run_on_the_monotonic_clock_not_the_proposers_wall_clock_s8() {
        let (tx, _) = watch::channel(LogIndex(0));
        let m = ManifestActor::new(tx).start();
        let submit = Kind::SubmitTask(SubmitTask {
            task_id: TASK.into(),
            task_type: "sleep".into(),
            task_data: "{}".into(),
            run_timeout_ms: 1_000,
            ..Default::default()
        });
        // Committed with the proposer's wall clock (NOW, long ago for any real clock): only
        // the monotonic readings passed in below count.
        let entries = vec![entry(1, submit), entry(2, register()), entry(3, assign())];
        m.send(ApplyCommitted { entries }).await.unwrap();
        let timers = Arc::new(Mutex::new(LeaderTimers::new()));
        let scan = |mono_now_ms: u64| PlanExpirations {
            mono_now_ms,
            timers: timers.clone(),
            report_grace_ms: 200,
        };
        assert!(m.send(scan(10)).await.unwrap().is_none());
        assert!(m.send(scan(1_100)).await.unwrap().is_none());
        // Only the monotonic clock passing timeout + grace fires it.
        let e = m.send(scan(1_210)).await.unwrap().expect("timed out");
        assert_eq!(
            e.run_timed_out,
            vec![AttemptRef {
                task_id: TASK.into(),
                attempt: 1
            }]
        );
        assert!(e.queue_timed_out.is_empty());
    }

    #[actix::test]
    async fn applies_in_order_wakes_the_node_and_round_trips_a_snapshot() {
        let (tx, applied) = watch::channel(LogIndex(0));
        let m = ManifestActor::new(tx).start();
        let noop = Entry {
            term: Term(1),
            index: LogIndex(1),
            kind: EntryKind::Normal,
            data: vec![],
        };
        let results = m
            .send(ApplyCommitted {
                entries: vec![noop, entry(2, submit()), entry(3, register())],
            })
            .await
            .unwrap();
        assert_eq!(
            results.iter().map(|r| r.index.get()).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(results[0].response.is_empty(), "a no-op has no response");
        let outcome = cmds::decode_result(&results[1].response).unwrap();
        assert_eq!(outcome.task().unwrap().task_id, TASK);
        assert_eq!(*applied.borrow(), LogIndex(3));

        // A poll sees nothing yet, then is woken by the assignment being applied.
        let mut work = m
            .send(PollWork {
                node_id: "n1".into(),
                limit: 0,
            })
            .await
            .unwrap();
        assert!(work.assignments.is_empty());
        m.send(ApplyCommitted {
            entries: vec![entry(4, assign())],
        })
        .await
        .unwrap();
        assert!(
            work.changed.has_changed().unwrap(),
            "the node's waiters are woken"
        );
        work.changed.changed().await.unwrap();
        let work = m
            .send(PollWork {
                node_id: "n1".into(),
                limit: 0,
            })
            .await
            .unwrap();
        assert_eq!(work.assignments.len(), 1);
        assert_eq!(work.assignments[0].attempt, 1);

        // Entries already applied are skipped, not applied twice.
        let again = m
            .send(ApplyCommitted {
                entries: vec![entry(4, assign())],
            })
            .await
            .unwrap();
        assert!(again.is_empty());

        let (index, data) = m.send(TakeSnapshot).await.unwrap().unwrap();
        assert_eq!(index, LogIndex(4));
        let (tx2, _) = watch::channel(LogIndex(0));
        let copy = ManifestActor::new(tx2).start();
        let snapshot = |i: u64| Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(i),
                term: Term(1),
                ..Default::default()
            },
            data: data.clone(),
        };
        copy.send(RestoreSnapshot {
            snapshot: snapshot(4),
        })
        .await
        .unwrap()
        .unwrap();
        let t = copy
            .send(GetTask {
                task_id: TASK.into(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.status, TaskStatus::Assigned as i32);
        // A snapshot older than the applied state would roll it back (SCENARIOS C8).
        let err = copy
            .send(RestoreSnapshot {
                snapshot: snapshot(3),
            })
            .await
            .unwrap();
        assert!(err.is_err());
    }
}
