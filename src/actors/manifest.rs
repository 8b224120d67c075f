//! The manifest actor: owns this controller's copy of the replicated task manifest
//! (`crate::manifest::Manifest`), applies committed entries to it in log order, answers
//! reads, and wakes whoever waits on a change (docs/architecture.md#actors).
//!
//! It also owns the leader-only state ([`LeaderState`]: task timers, liveness, held-back
//! nodes) while this controller leads, because every leader decision reads the manifest at
//! one applied index: kept beside it, a decision needs neither a copy of the manifest nor a
//! lock shared across mailboxes. The scheduler and the heartbeat monitor own only *when* to
//! decide and the proposing of what [`LeaderState`] returns ([`LeaderRound`],
//! [`LeaderHeartbeat`], [`LeaderScan`]). The state is built when the raft actor says this
//! controller leads in a new term and dropped when it says it does not; a message names the
//! term it was sent for, and one for a term this controller does not lead in is answered
//! `None`.
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
//! The actor never proposes anything: it only sees what the Raft log committed, and answers
//! with the commands others propose.

#![warn(missing_docs)]

use std::collections::BTreeMap;

use actix::{Actor, Context, Handler, Message, MessageResult, Recipient};
use tokio::sync::watch;

use crate::actors::proposer::wall_clock_ms;
use crate::actors::{
    ApplyCommitted, ApplyResult, LeadershipChanged, MonoClock, Response, RestoreSnapshot,
    TakeSnapshot, WakeScheduler,
};
use crate::leader::{HeartbeatStep, LeaderState, RoundLimits, ScanStep};
use crate::liveness::{HeartbeatIn, LivenessConfig};
use crate::manifest::command::{self as cmds, Command, Kind, RegisterNode};
use crate::manifest::{Manifest, ManifestError, TaskId};
use crate::proto::{
    ClusterAlert, Node, NodeStatus, RunningAttempt, Task, TaskAssignment, TaskStatus,
};
use crate::raft::{EntryKind, LogIndex, Term};

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

/// Heartbeat monitor → manifest: one heartbeat, decided by the leader's pure step
/// ([`LeaderState::heartbeat`]) over the committed state. `None` when this controller does
/// not lead in `term`.
#[derive(Message, Debug)]
#[rtype(result = "Option<HeartbeatStep>")]
pub struct LeaderHeartbeat {
    /// The term the monitor believes it leads in.
    pub term: Term,
    /// The leader's monotonic clock ([`MonoClock`]), in ms.
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

/// Scheduler → manifest: one scheduling round ([`LeaderState::round`]): an `ExpireTasks`
/// (when `expire` is set and something timed out) or an `AssignTasks` batch. `None` when
/// there is nothing to do or this controller does not lead in `term`.
#[derive(Message, Debug)]
#[rtype(result = "Option<Kind>")]
pub struct LeaderRound {
    /// The term the scheduler believes it leads in.
    pub term: Term,
    /// The leader's monotonic clock ([`MonoClock`]), in ms.
    pub now_ms: u64,
    /// Look for run and queue timeouts first.
    pub expire: bool,
    /// Batch size and report grace.
    pub limits: RoundLimits,
}

/// Heartbeat monitor → manifest: one liveness scan ([`LeaderState::scan`]). `None` when this
/// controller does not lead in `term`.
#[derive(Message, Debug)]
#[rtype(result = "Option<ScanStep>")]
pub struct LeaderScan {
    /// The term the monitor believes it leads in.
    pub term: Term,
    /// The leader's monotonic clock ([`MonoClock`]), in ms.
    pub now_ms: u64,
    /// The Raft core's CheckQuorum verdict (docs/failures.md S3).
    pub leader_can_commit: bool,
}

/// What the leader alone knows, for cluster status: alerts and the heartbeat interval.
#[derive(Debug, Clone, Default)]
pub struct LiveReport {
    /// Active alerts (empty on a follower).
    pub alerts: Vec<ClusterAlert>,
    /// Heartbeat interval handed to agents, in ms (0 on a follower).
    pub heartbeat_interval_ms: u64,
}

/// Anyone → manifest: the leader's alerts and heartbeat interval.
#[derive(Message, Debug, Default)]
#[rtype(result = "LiveReport")]
pub struct GetLiveReport;

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
    /// The leader-only state while this controller leads (built on `LeadershipChanged`),
    /// owned here beside the manifest it is derived from, so every decision reads one
    /// consistent applied state without a copy or a shared lock.
    leader: Option<LeaderState>,
    liveness: LivenessConfig,
    clock: MonoClock,
}

impl ManifestActor {
    /// An empty manifest; `applied_tx` is told every new applied index. `liveness` configures
    /// the leader's liveness core; `clock` is the monotonic clock the scheduler and the
    /// heartbeat monitor read too.
    pub fn new(
        applied_tx: watch::Sender<LogIndex>,
        liveness: LivenessConfig,
        clock: MonoClock,
    ) -> Self {
        ManifestActor {
            manifest: Manifest::default(),
            applied: LogIndex(0),
            applied_tx,
            node_versions: BTreeMap::new(),
            scheduler: None,
            leader: None,
            liveness,
            clock,
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

    /// Apply one command entry; returns the outcome for its proposer.
    fn apply_command(&mut self, data: &[u8]) -> Result<cmds::CommandOutcome, ManifestError> {
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
        result
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
                EntryKind::Normal if !entry.data.is_empty() => {
                    Some(Box::new(self.apply_command(&entry.data)) as Response)
                }
                _ => None,
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
        // A snapshot older than what is applied would roll the state back (docs/failures.md C8).
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
        // Usage and the last heartbeat stay off the log; only the leader has them.
        if let Some(leader) = &self.leader {
            for n in &mut nodes {
                leader.liveness().decorate(n);
            }
        }
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

impl Handler<LeadershipChanged> for ManifestActor {
    type Result = ();
    fn handle(&mut self, msg: LeadershipChanged, _: &mut Context<Self>) {
        // The raft actor tells the manifest actor first, so the state exists before the
        // scheduler or the monitor, told next, can ask for a step in the new term.
        if !msg.is_leader {
            self.leader = None;
        } else if self.leader.as_ref().is_none_or(|l| l.term() != msg.term) {
            let now = self.clock.now_ms();
            self.leader = Some(LeaderState::new(msg.term, now, self.liveness.clone()));
        }
    }
}

impl Handler<LeaderHeartbeat> for ManifestActor {
    type Result = Option<HeartbeatStep>;
    fn handle(&mut self, msg: LeaderHeartbeat, _: &mut Context<Self>) -> Self::Result {
        let hb = HeartbeatIn {
            registration: &msg.registration,
            running: &msg.running,
            cpu_usage: msg.cpu_usage,
            memory_usage: msg.memory_usage,
            agent_time_ms: msg.agent_time_ms,
            leaving: msg.leaving,
        };
        let manifest = &self.manifest;
        let step = (self.leader.as_mut())
            .filter(|l| l.term() == msg.term)
            .map(|l| l.heartbeat(manifest, hb, msg.now_ms, msg.wall_ms));
        if step.as_ref().is_some_and(|s| s.released) {
            self.wake_scheduler();
        }
        step
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

impl Handler<LeaderRound> for ManifestActor {
    type Result = Option<Kind>;
    fn handle(&mut self, msg: LeaderRound, _: &mut Context<Self>) -> Self::Result {
        let manifest = &self.manifest;
        (self.leader.as_mut())
            .filter(|l| l.term() == msg.term)
            .and_then(|l| l.round(manifest, msg.now_ms, &msg.limits, msg.expire))
    }
}

impl Handler<LeaderScan> for ManifestActor {
    type Result = Option<ScanStep>;
    fn handle(&mut self, msg: LeaderScan, _: &mut Context<Self>) -> Self::Result {
        let manifest = &self.manifest;
        (self.leader.as_mut())
            .filter(|l| l.term() == msg.term)
            .map(|l| l.scan(manifest, msg.now_ms, msg.leader_can_commit))
    }
}

impl Handler<GetLiveReport> for ManifestActor {
    type Result = MessageResult<GetLiveReport>;
    fn handle(&mut self, _: GetLiveReport, _: &mut Context<Self>) -> Self::Result {
        let Some(leader) = &self.leader else {
            return MessageResult(LiveReport::default());
        };
        let now = self.clock.now_ms();
        let wall = wall_clock_ms();
        let liveness = leader.liveness();
        let alerts = liveness
            .alert()
            .map(|a| ClusterAlert {
                code: a.code.to_string(),
                message: a.message.clone(),
                // The core keeps monotonic time; shown as the wall-clock moment it was raised.
                since: wall - now.saturating_sub(a.since_ms) as i64,
            })
            .into_iter()
            .collect();
        MessageResult(LiveReport {
            alerts,
            heartbeat_interval_ms: liveness.heartbeat_interval_ms(self.manifest.node_count()),
        })
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
    use crate::manifest::command::AssignTasks;
    use crate::manifest::command::AttemptRef;
    use crate::manifest::command::{Assignment, SubmitTask, command};
    use crate::proto::NodeCapacity;
    use crate::raft::{Entry, Snapshot, SnapshotMeta};
    use actix::Addr;
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

    fn actor() -> (Addr<ManifestActor>, watch::Receiver<LogIndex>) {
        let (tx, applied) = watch::channel(LogIndex(0));
        let liveness = LivenessConfig::default();
        (
            ManifestActor::new(tx, liveness, MonoClock::start()).start(),
            applied,
        )
    }

    #[actix::test]
    async fn timeouts_run_on_the_monotonic_clock_not_the_proposers_wall_clock_s8() {
        let (m, _) = actor();
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
        m.send(leads(true, 1)).await.unwrap();
        let round = |now_ms: u64| LeaderRound {
            term: Term(1),
            now_ms,
            expire: true,
            limits: RoundLimits {
                report_grace_ms: 200,
                ..RoundLimits::default()
            },
        };
        assert!(m.send(round(10)).await.unwrap().is_none());
        assert!(m.send(round(1_100)).await.unwrap().is_none());
        // Only the monotonic clock passing timeout + grace fires it.
        let Some(Kind::ExpireTasks(e)) = m.send(round(1_210)).await.unwrap() else {
            panic!("timed out");
        };
        assert_eq!(
            e.run_timed_out,
            vec![AttemptRef {
                task_id: TASK.into(),
                attempt: 1
            }]
        );
        assert!(e.queue_timed_out.is_empty());
    }

    fn leads(is_leader: bool, term: u64) -> LeadershipChanged {
        LeadershipChanged {
            is_leader,
            leader: None,
            term: Term(term),
        }
    }

    #[actix::test]
    async fn a_message_for_a_term_this_controller_does_not_lead_in_is_refused() {
        let (m, _) = actor();
        m.send(ApplyCommitted {
            entries: vec![entry(1, submit()), entry(2, register())],
        })
        .await
        .unwrap();
        let round = |term: u64| LeaderRound {
            term: Term(term),
            now_ms: 0,
            expire: false,
            limits: RoundLimits::default(),
        };
        // Not told it leads: nothing is decided, whatever the term.
        assert!(m.send(round(3)).await.unwrap().is_none());
        // A candidate, then the leader of term 3.
        m.send(leads(false, 3)).await.unwrap();
        m.send(leads(true, 3)).await.unwrap();
        assert!(m.send(round(2)).await.unwrap().is_none(), "an older term");
        assert!(matches!(
            m.send(round(3)).await.unwrap(),
            Some(Kind::AssignTasks(_))
        ));
        m.send(leads(false, 4)).await.unwrap();
        assert!(m.send(round(3)).await.unwrap().is_none(), "stepped down");
        assert!(m.send(GetLiveReport).await.unwrap().alerts.is_empty());
    }

    #[actix::test]
    async fn applies_in_order_wakes_the_node_and_round_trips_a_snapshot() {
        let (m, applied) = actor();
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
        assert!(results[0].response.is_none(), "a no-op has no response");
        let outcome = results[1]
            .response
            .as_ref()
            .and_then(|r| r.downcast_ref::<Result<cmds::CommandOutcome, ManifestError>>())
            .expect("an outcome")
            .as_ref()
            .unwrap();
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
        let (copy, _) = actor();
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
        // A snapshot older than the applied state would roll it back (docs/failures.md C8).
        let err = copy
            .send(RestoreSnapshot {
                snapshot: snapshot(3),
            })
            .await
            .unwrap();
        assert!(err.is_err());
    }
}
