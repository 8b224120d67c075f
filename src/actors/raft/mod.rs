//! The raft actor: owns this controller's Raft core ([`RawNode`]) and drives it.
//!
//! It ticks the core on an interval, feeds it peer messages, proposals, reads and operator
//! requests, and processes each [`Ready`] in the order the core documents:
//!
//! 1. the Ready's `messages` go to the [`Outbox`] at once;
//! 2. its snapshot, entries and hard state go to the [`LogWriter`] as one durable write;
//! 3. once that write is durable, `persisted_messages` (votes, append acknowledgements) go out;
//! 4. a received snapshot is restored into the state machine ([`RestoreSnapshot`]), then the
//!    committed entries are applied ([`ApplyCommitted`]) and the proposers are answered with
//!    the state machine's responses; read barriers whose index is applied are released;
//! 5. [`RawNode::advance`] confirms the Ready once its write is durable and its entries are
//!    applied.
//!
//! One deviation in timing, not in safety: when every committed entry of a Ready was already
//! durable here before it (the usual case: the write carries newer entries and the new
//! commit index), step 4 runs while step 2's write is in flight, as etcd applies alongside
//! its WAL fsync. A committed entry is durable on a majority, so answering its proposer
//! before this controller's next fsync acknowledges nothing that could be lost; step 5
//! still waits for both. A Ready with a snapshot, or whose committed entries are in its
//! own write, runs the steps strictly in order.
//!
//! Only one Ready is in flight. Proposals and peer messages that arrive meanwhile are fed to
//! the core at once and accumulate there, so the next Ready carries all of them in one write
//! (group commit) — the busier the controller, the larger each fsync's batch.
//!
//! Every `snapshot_every_entries` applied entries the actor asks the state machine for a
//! snapshot ([`TakeSnapshot`]), stores it and compacts the log on the writer thread, and tells
//! the core ([`RawNode::on_snapshot_taken`]).
//!
//! **Member addresses.** Controllers must know each member's gRPC address to send it Raft
//! messages and to point clients at the leader. The address book starts from the configured
//! peers (`ServerOptions::peers`) and from the latest snapshot; adding a member through
//! [`ChangeMembership`] first commits an address record (a normal entry the actor reads
//! itself and hands to the state machine as a no-op), so every controller learns the new
//! member's address from the log, and the book is stored inside every snapshot (see
//! [`wire`]). A configured address wins over a replicated one, so an operator
//! can move a controller by changing its flags.
//!
//! **Supervision.** This actor is deliberately not restarted in place: a Ready in flight when
//! it stopped may or may not have reached the disk, and resuming the core without knowing is
//! unsound. A controller whose raft actor dies must be restarted as a process (recovery is
//! from the durable log). A storage failure exits the process (see [`LogWriter`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::actors::log_writer::{LogWriter, WriterStopped};
use crate::actors::{
    ApplyCommitted, ApplyResult, LeadershipChanged, Propose, ProposeFailure, ReadBarrier, Response,
    RestoreSnapshot, TakeSnapshot,
};
use crate::raft::{
    ConfChange, Config, Entry, EntryKind, LogIndex, Membership, Message, NodeId, ProposeError,
    RawNode, ReadState, Ready, Role, Snapshot, SoftState, Status, Storage, StorageError, Term,
};
use crate::storage::{LogStore, WriteBatch};
use wire::{EntryPayload, WireError};

pub mod wire;

/// Where the raft actor hands outgoing messages. Implementations must not block: they queue
/// or drop.
pub trait Outbox: Send + Sync + 'static {
    /// Sends one Ready's messages (any mix of receivers), in order per receiver.
    fn send(&self, messages: Vec<Message>);
    /// The current members other than this one and their gRPC addresses. Peers not listed
    /// are forgotten; a changed address gets a new connection.
    fn set_peers(&self, peers: &BTreeMap<NodeId, String>);
}

/// The state machine the raft actor replicates into: one recipient per message so tests can
/// plug in a fake.
#[derive(Clone)]
pub struct StateMachine {
    /// Applies committed entries in order and answers each.
    pub apply: Recipient<ApplyCommitted>,
    /// Serializes the state as of the last applied index.
    pub take_snapshot: Recipient<TakeSnapshot>,
    /// Replaces the state with a snapshot.
    pub restore: Recipient<RestoreSnapshot>,
}

/// Tunables of the raft actor (the core's own are in [`Config`]).
#[derive(Clone, Debug)]
pub struct RaftActorOptions {
    /// Length of one core tick.
    pub tick: Duration,
    /// Take a snapshot and compact the log every this many applied entries (0 = never
    /// automatically).
    pub snapshot_every_entries: u64,
    /// Messages waiting in the actor's mailbox before senders using `send` wait.
    pub mailbox_capacity: usize,
    /// A read barrier that has not been answered by the core within this many ticks fails
    /// with [`ProposeFailure::Unknown`] (the leader it was forwarded to may be gone).
    pub read_timeout_ticks: u64,
}

impl Default for RaftActorOptions {
    fn default() -> Self {
        RaftActorOptions {
            tick: Duration::from_millis(50),
            snapshot_every_entries: 10_000,
            mailbox_capacity: 4096,
            read_timeout_ticks: 40,
        }
    }
}

/// Peer transport → raft actor: messages received from another member.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Step {
    /// Decoded messages, in the order they were sent. Messages addressed to another member
    /// are dropped.
    pub messages: Vec<Message>,
}

/// Anyone → raft actor: register for [`LeadershipChanged`]. The subscriber is told the
/// current state at once, then every change of role, leader or term.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeLeadership {
    /// Where to send the notifications.
    pub subscriber: Recipient<LeadershipChanged>,
}

/// Anyone → raft actor: the core's status plus what the shell knows.
#[derive(Message, Debug)]
#[rtype(result = "RaftStatus")]
pub struct GetRaftStatus;

/// Answer to [`GetRaftStatus`].
#[derive(Clone, Debug)]
pub struct RaftStatus {
    /// The core's view: role, leader, term, commit, configuration, per-peer progress.
    pub status: Status,
    /// gRPC address of the leader, if known.
    pub leader_address: Option<String>,
    /// Highest log index the state machine has applied.
    pub applied: LogIndex,
    /// Last log index durable in this controller's own storage (what a leader's progress
    /// table would say of itself; `status.peers` has only the other members).
    pub durable_index: LogIndex,
    /// Index of the latest local snapshot (0 = none).
    pub snapshot_index: LogIndex,
    /// Known gRPC addresses of members (and former members), by id.
    pub addresses: BTreeMap<NodeId, String>,
    /// Log writer: Ready writes requested (count).
    pub log_write_requests: u64,
    /// Log writer: durable syncs performed (count); `log_write_requests / log_syncs` is the
    /// group-commit factor of the writer itself.
    pub log_syncs: u64,
    /// Log writer: entries appended (count).
    pub log_entries: u64,
}

/// Operator → raft actor: hand leadership to another voter (thesis §3.10).
#[derive(Message, Debug)]
#[rtype(result = "Result<NodeId, ProposeFailure>")]
pub struct TransferLeader {
    /// The voter to hand over to; `None` picks the other voter with the highest match index.
    pub to: Option<NodeId>,
}

/// A single-server membership change (thesis §4.1) with what the actor needs to reach the
/// member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Add `id` as a learner reachable at `address` (gRPC `host:port`).
    AddLearner {
        /// The new member.
        id: NodeId,
        /// Its gRPC address.
        address: String,
    },
    /// Promote a caught-up learner to voter.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Remove a voter or learner.
    Remove {
        /// The member.
        id: NodeId,
    },
}

/// Operator → raft actor (leader only): change the membership. Resolves with the new
/// configuration once the change is committed and applied on this controller.
#[derive(Message, Debug)]
#[rtype(result = "Result<Membership, ProposeFailure>")]
pub struct ChangeMembership {
    /// The change.
    pub change: MemberChange,
}

/// Operator → raft actor: snapshot the state machine now and compact the log.
#[derive(Message, Debug)]
#[rtype(result = "Result<SnapshotInfo, SnapshotFailure>")]
pub struct TriggerSnapshot;

/// Where a snapshot sits and how big it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Last log index the snapshot covers.
    pub index: LogIndex,
    /// Term of that entry.
    pub term: Term,
    /// Size of the stored snapshot data, in bytes.
    pub size_bytes: u64,
}

/// Why a snapshot was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotFailure {
    /// The state machine could not serialize itself.
    #[error("the state machine refused to snapshot: {0}")]
    StateMachine(String),
    /// Nothing has been applied yet, so there is nothing to snapshot.
    #[error("nothing applied yet")]
    NothingApplied,
    /// The core could not describe the snapshot index.
    #[error("snapshot metadata unavailable: {0}")]
    Meta(String),
    /// The controller is shutting down.
    #[error("controller shutting down")]
    Shutdown,
}

/// Test/shutdown hook → raft actor: stop for good (waiters get [`ProposeFailure::Shutdown`]).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopRaft;

/// Everything [`start_raft_actor`] needs.
pub struct RaftParts {
    /// The core's configuration (id, initial voters, ticks, seed).
    pub config: Config,
    /// The durable log, shared by the core (reads) and the writer thread (writes).
    pub store: Arc<dyn LogStore>,
    /// Where outgoing messages go.
    pub outbox: Arc<dyn Outbox>,
    /// The replicated state machine.
    pub state_machine: StateMachine,
    /// Configured member addresses (including this controller's own), by id.
    pub addresses: BTreeMap<NodeId, String>,
    /// Actor tunables.
    pub options: RaftActorOptions,
}

/// Why the replication shell did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Node ids are positive.
    #[error("node id must be positive (0 means \"none\" in Raft messages)")]
    NodeIdZero,
    /// The configured peers do not include this node.
    #[error("--peers lists ids {peers:?} but not this node's id {node_id}")]
    NotInPeers {
        /// This node.
        node_id: u64,
        /// The configured ids.
        peers: Vec<u64>,
    },
    /// Joining a cluster needs the addresses of its members.
    #[error("joining a cluster needs --peers listing its members and this node")]
    JoinWithoutPeers,
    /// A peer's address is empty.
    #[error("peer {id} has an empty address")]
    EmptyPeerAddress {
        /// The peer.
        id: u64,
    },
    /// The data directory could not be opened or belongs to another node or cluster.
    #[error("data dir {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: std::path::PathBuf,
        /// What was wrong.
        source: StorageError,
    },
    /// `--peers` names other initial voters than the ones this data dir was bootstrapped with.
    #[error(
        "data dir {dir} was bootstrapped with voters {stored:?} but --peers lists {configured:?}; \
         --peers must stay the initial voters (change membership with `mlcp cluster \
         add-learner/promote/remove`)"
    )]
    BootstrapVotersChanged {
        /// The data directory.
        dir: std::path::PathBuf,
        /// Voters recorded on the first start.
        stored: Vec<u64>,
        /// Voters configured now.
        configured: Vec<u64>,
    },
    /// The bootstrap-voters record could not be read or written.
    #[error("{path}: {reason}")]
    BootstrapVotersFile {
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Reading the durable state failed.
    #[error("reading the Raft log: {0}")]
    Storage(#[from] StorageError),
    /// The stored snapshot is not one this controller can read.
    #[error("stored snapshot at index {index}: {source}")]
    SnapshotFormat {
        /// The snapshot's index.
        index: LogIndex,
        /// What was wrong.
        source: WireError,
    },
    /// The state machine refused the stored snapshot.
    #[error("restoring the snapshot at index {index} into the state machine: {reason}")]
    SnapshotRestore {
        /// The snapshot's index.
        index: LogIndex,
        /// The state machine's reason.
        reason: String,
    },
}

/// Starts a raft actor: restores the latest stored snapshot into the state machine first
/// (so the core only replays the committed entries after it), starts the log writer thread
/// and the actor. Must be called inside a running actix system.
///
/// Errors: a storage read error, an unreadable stored snapshot, or a state machine that
/// refuses it.
pub async fn start_raft_actor(parts: RaftParts) -> Result<Addr<RaftActor>, StartError> {
    let RaftParts {
        config,
        store,
        outbox,
        state_machine,
        mut addresses,
        options,
    } = parts;
    let snapshot = store.snapshot()?;
    let snapshot_index = snapshot.meta.index;
    let latest_snapshot = (snapshot_index > LogIndex(0)).then_some(SnapshotInfo {
        index: snapshot_index,
        term: snapshot.meta.term,
        size_bytes: snapshot.data.len() as u64,
    });
    if snapshot_index > LogIndex(0) {
        let (book, state) = wire::decode_snapshot_data(&snapshot.data).map_err(|source| {
            StartError::SnapshotFormat {
                index: snapshot_index,
                source,
            }
        })?;
        for (id, addr) in book {
            addresses.entry(id).or_insert(addr);
        }
        let restore = RestoreSnapshot {
            snapshot: Snapshot {
                meta: snapshot.meta,
                data: state,
            },
        };
        let reason = match state_machine.restore.send(restore).await {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(reason),
            Err(err) => Some(format!("state machine unreachable: {err}")),
        };
        if let Some(reason) = reason {
            return Err(StartError::SnapshotRestore {
                index: snapshot_index,
                reason,
            });
        }
    }
    let configured = addresses.clone();
    let store_last = store.last_index()?;
    let id = config.id;
    let node = RawNode::new(config, store.clone())?;
    let writer = LogWriter::start(store);
    let soft = node.status().soft;
    let mut actor = RaftActor {
        id,
        node,
        writer,
        outbox,
        sm: state_machine,
        options,
        configured,
        addresses,
        soft,
        applied: snapshot_index,
        snapshot_index,
        latest_snapshot,
        snapshot_after: snapshot_index,
        durable_last: store_last,
        busy: false,
        proposals: BTreeMap::new(),
        next_read_ctx: 1,
        reads_pending: BTreeMap::new(),
        reads_ready: BTreeMap::new(),
        subscribers: Vec::new(),
        snapshot_waiters: Vec::new(),
        ticks: 0,
    };
    actor.sync_peers();
    if actor.node.status().membership.voters == BTreeSet::from([id]) {
        // The only voter need not wait out an election timeout to lead (single-member
        // cluster, the `mlcp server` default).
        actor.node.campaign();
    }
    Ok(actor.start())
}

/// Who waits for a proposed entry and what they get back.
enum Waiter {
    Command(oneshot::Sender<Result<Option<Response>, ProposeFailure>>),
    ConfChange(oneshot::Sender<Result<Membership, ProposeFailure>>),
}

struct ProposalWaiter {
    /// Term in which the entry was proposed: the entry at `index` is ours only if it has it.
    term: Term,
    waiter: Waiter,
}

struct ReadWaiter {
    deadline_tick: u64,
    respond: oneshot::Sender<Result<LogIndex, ProposeFailure>>,
}

/// What the asynchronous half of Ready processing hands back.
struct ApplyOutcome {
    /// The snapshot restored, if one was.
    restored: Option<SnapshotInfo>,
    /// The state machine's answers for the applied entries.
    results: Vec<ApplyResult>,
    /// The Ready's write, when it runs alongside the apply.
    write: Option<WriteTask>,
}

/// Step 4 of a Ready: restores the received snapshot, then applies the committed entries.
/// With `overlap` the apply runs while `write` is still in flight and the write is handed
/// back unjoined; otherwise the write is joined first.
async fn apply_ready(
    sm: StateMachine,
    write: WriteTask,
    overlap: bool,
    restore: Option<(SnapshotInfo, RestoreSnapshot)>,
    to_apply: Vec<Entry>,
) -> Result<ApplyOutcome, PipelineError> {
    let write = if overlap {
        Some(write)
    } else {
        join_write(write).await?;
        None
    };
    let mut restored = None;
    if let Some((info, restore)) = restore {
        sm.restore
            .send(restore)
            .await?
            .map_err(|reason| PipelineError::Restore {
                index: info.index,
                reason,
            })?;
        restored = Some(info);
    }
    let results = if to_apply.is_empty() {
        Vec::new()
    } else {
        sm.apply.send(ApplyCommitted { entries: to_apply }).await?
    };
    Ok(ApplyOutcome {
        restored,
        results,
        write,
    })
}

/// A Ready's durable write (then its `persisted_messages`), running on its own task.
type WriteTask = tokio::task::JoinHandle<Result<(), WriterStopped>>;

async fn join_write(task: WriteTask) -> Result<(), PipelineError> {
    task.await
        .map_err(|_| PipelineError::Writer(WriterStopped))??;
    Ok(())
}

/// Why the asynchronous half of Ready processing failed; each is fatal for this member.
#[derive(Debug, thiserror::Error)]
enum PipelineError {
    #[error(transparent)]
    Writer(#[from] WriterStopped),
    #[error("the state machine is unreachable: {0}")]
    StateMachineGone(#[from] MailboxError),
    #[error("the state machine refused snapshot {index}: {reason}")]
    Restore { index: LogIndex, reason: String },
}

/// The raft actor. See the module docs.
pub struct RaftActor {
    id: NodeId,
    node: RawNode<Arc<dyn LogStore>>,
    writer: LogWriter,
    outbox: Arc<dyn Outbox>,
    sm: StateMachine,
    options: RaftActorOptions,
    /// Addresses from this controller's configuration; they win over replicated ones.
    configured: BTreeMap<NodeId, String>,
    /// Every known member address.
    addresses: BTreeMap<NodeId, String>,
    /// Role, leader and term as last reported by the core.
    soft: SoftState,
    /// Highest index applied to the state machine.
    applied: LogIndex,
    /// Index of the latest snapshot in storage.
    snapshot_index: LogIndex,
    /// The latest snapshot in storage, if any.
    latest_snapshot: Option<SnapshotInfo>,
    /// The next automatic snapshot is due `snapshot_every_entries` after this index.
    snapshot_after: LogIndex,
    /// Last log index known durable in storage.
    durable_last: LogIndex,
    /// A Ready or a snapshot is being processed.
    busy: bool,
    proposals: BTreeMap<LogIndex, ProposalWaiter>,
    next_read_ctx: u64,
    /// Read barriers the core has not yet answered, by request tag.
    reads_pending: BTreeMap<u64, ReadWaiter>,
    /// Read barriers answered by the core, waiting for their index to be applied.
    reads_ready: BTreeMap<LogIndex, Vec<oneshot::Sender<Result<LogIndex, ProposeFailure>>>>,
    subscribers: Vec<Recipient<LeadershipChanged>>,
    snapshot_waiters: Vec<oneshot::Sender<Result<SnapshotInfo, SnapshotFailure>>>,
    ticks: u64,
}

impl Actor for RaftActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.options.mailbox_capacity);
        ctx.run_interval(self.options.tick, |act, ctx| act.on_tick(ctx));
        tracing::info!(id = %self.id, applied = %self.applied, "raft actor started");
        self.maybe_ready(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        tracing::info!(id = %self.id, "raft actor stopped");
        // Dropping the waiters answers every caller with Shutdown.
    }
}

impl RaftActor {
    fn on_tick(&mut self, ctx: &mut Context<Self>) {
        self.ticks += 1;
        self.node.tick();
        self.expire_reads();
        self.maybe_ready(ctx);
    }

    fn expire_reads(&mut self) {
        let now = self.ticks;
        let expired: Vec<u64> = self
            .reads_pending
            .iter()
            .filter(|(_, w)| w.deadline_tick <= now)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in expired {
            if let Some(w) = self.reads_pending.remove(&ctx) {
                let _ = w.respond.send(Err(ProposeFailure::Unknown));
            }
        }
    }

    fn not_leader(&self, leader: Option<NodeId>) -> ProposeFailure {
        let leader = leader.filter(|l| *l != self.id);
        ProposeFailure::NotLeader {
            leader,
            leader_addr: leader.and_then(|l| self.addresses.get(&l).cloned()),
        }
    }

    fn map_propose_error(&self, err: ProposeError) -> ProposeFailure {
        match err {
            ProposeError::NotLeader { leader } => self.not_leader(leader),
            other => ProposeFailure::Refused(other.to_string()),
        }
    }

    fn register(&mut self, index: LogIndex, waiter: Waiter) {
        // The term the core is in right now is the term of the entry it just appended.
        let term = self.node.status().soft.term;
        if let Some(old) = self
            .proposals
            .insert(index, ProposalWaiter { term, waiter })
        {
            fail_waiter(old.waiter, ProposeFailure::Unknown);
        }
    }

    /// Takes the next Ready, if any and if none is in flight, and starts processing it.
    fn maybe_ready(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        if self.snapshot_due() {
            self.start_snapshot(ctx);
            return;
        }
        if !self.node.has_ready() {
            return;
        }
        self.busy = true;
        let Ready {
            number,
            soft_state,
            hard_state,
            snapshot,
            entries,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
        } = self.node.ready();
        if let Some(soft) = soft_state {
            self.on_soft_state(soft);
        }
        self.fail_overwritten(&entries);
        if !messages.is_empty() {
            self.outbox.send(messages);
        }
        let restore = snapshot.as_ref().map(|s| {
            let info = SnapshotInfo {
                index: s.meta.index,
                term: s.meta.term,
                size_bytes: s.data.len() as u64,
            };
            (info, self.unwrap_received_snapshot(s))
        });
        let mut peers_changed = restore.is_some();
        let (to_apply, applied_ids) = self.unwrap_committed(committed_entries, &mut peers_changed);
        let durable_after = match (&snapshot, entries.last()) {
            (_, Some(last)) => last.index,
            (Some(snap), None) => snap.meta.index,
            (None, None) => self.durable_last,
        };
        // Entries that are committed and already durable here can be applied while this
        // Ready's own write is in flight (etcd applies concurrently with its WAL fsync): a
        // committed entry is durable on a majority, and the write only adds newer entries
        // and the hard state. A snapshot, or a committed entry this very write stores, waits.
        let overlap = restore.is_none()
            && applied_ids
                .last()
                .is_none_or(|(last, _)| *last <= self.durable_last);
        let batch = WriteBatch {
            snapshot,
            entries,
            hard_state,
        };
        let write = self.spawn_write(batch, persisted_messages);
        let apply = apply_ready(self.sm.clone(), write, overlap, restore, to_apply);
        let pipeline = apply
            .into_actor(self)
            .then(move |outcome, act, ctx| {
                let write = act.finish_apply(applied_ids, read_states, outcome, ctx);
                async move {
                    match write {
                        Ok(Some(w)) => join_write(w).await,
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                .into_actor(act)
            })
            .map(move |written, act, ctx| {
                act.finish_ready(number, durable_after, peers_changed, written, ctx)
            });
        ctx.spawn(pipeline);
    }

    /// Step 1 (then 3) of a Ready on its own task: the durable write, then the messages that
    /// may leave only once it is durable (votes, append acknowledgements).
    fn spawn_write(&self, batch: WriteBatch, persisted_messages: Vec<Message>) -> WriteTask {
        let (writer, outbox) = (self.writer.clone(), self.outbox.clone());
        tokio::spawn(async move {
            if !batch.is_empty() {
                writer.write(batch).await?;
            }
            if !persisted_messages.is_empty() {
                outbox.send(persisted_messages);
            }
            Ok::<_, WriterStopped>(())
        })
    }

    /// Answers proposers and read barriers once the state machine has applied a Ready's
    /// committed entries. Returns the Ready's write if it is still in flight.
    fn finish_apply(
        &mut self,
        applied_ids: Vec<(LogIndex, Term)>,
        read_states: Vec<ReadState>,
        outcome: Result<ApplyOutcome, PipelineError>,
        _ctx: &mut Context<Self>,
    ) -> Result<Option<WriteTask>, PipelineError> {
        let outcome = outcome?;
        if let Some(info) = outcome.restored {
            let index = info.index;
            self.applied = index;
            self.snapshot_index = self.snapshot_index.max(index);
            self.latest_snapshot = Some(info);
            self.snapshot_after = self.snapshot_after.max(index);
            // Entries up to the snapshot were applied elsewhere; their outcome is unknown here.
            let later = self.proposals.split_off(&index.next());
            for (_, w) in std::mem::replace(&mut self.proposals, later) {
                fail_waiter(w.waiter, ProposeFailure::Unknown);
            }
        }
        let mut responses: BTreeMap<LogIndex, Option<Response>> = outcome
            .results
            .into_iter()
            .map(|r| (r.index, r.response))
            .collect();
        for (index, term) in applied_ids {
            self.applied = index;
            let Some(w) = self.proposals.remove(&index) else {
                continue;
            };
            if w.term != term {
                fail_waiter(w.waiter, ProposeFailure::Unknown);
                continue;
            }
            match w.waiter {
                Waiter::Command(tx) => {
                    let _ = tx.send(Ok(responses.remove(&index).flatten()));
                }
                Waiter::ConfChange(tx) => {
                    let _ = tx.send(Ok(self.node.status().membership));
                }
            }
        }
        if self.soft.role != Role::Leader {
            // Entries still pending may commit under the next leader or be overwritten.
            for (_, w) in std::mem::take(&mut self.proposals) {
                fail_waiter(w.waiter, ProposeFailure::Unknown);
            }
        }
        self.serve_reads(read_states);
        Ok(outcome.write)
    }

    /// Confirms a Ready to the core once its write is durable and its entries applied.
    fn finish_ready(
        &mut self,
        number: u64,
        durable_after: LogIndex,
        peers_changed: bool,
        written: Result<(), PipelineError>,
        ctx: &mut Context<Self>,
    ) {
        if let Err(err) = written {
            // The log and the state machine can no longer be kept in step; a restart
            // recovers from the durable log.
            tracing::error!(id = %self.id, error = %err, "raft pipeline failed; stopping");
            ctx.stop();
            return;
        }
        self.durable_last = durable_after;
        self.node.advance(number);
        self.busy = false;
        if peers_changed {
            self.sync_peers();
        }
        self.maybe_ready(ctx);
    }

    fn on_soft_state(&mut self, soft: SoftState) {
        let leader_changed = soft.leader != self.soft.leader || soft.term != self.soft.term;
        self.soft = soft;
        if leader_changed {
            // A read forwarded to a leader that is gone would never be answered.
            for (_, w) in std::mem::take(&mut self.reads_pending) {
                let _ = w.respond.send(Err(ProposeFailure::Unknown));
            }
        }
        tracing::info!(
            id = %self.id, role = ?soft.role, leader = ?soft.leader, term = %soft.term,
            "raft role changed"
        );
        let note = self.leadership();
        self.subscribers.retain(|s| s.connected());
        for s in &self.subscribers {
            s.do_send(note);
        }
    }

    fn leadership(&self) -> LeadershipChanged {
        LeadershipChanged {
            is_leader: self.soft.role == Role::Leader,
            leader: self.soft.leader,
            term: self.soft.term,
        }
    }

    /// Answers proposals whose index is about to be overwritten by an entry of another term
    /// (a new leader's log won, Raft §5.3).
    fn fail_overwritten(&mut self, entries: &[Entry]) {
        for e in entries {
            if self
                .proposals
                .get(&e.index)
                .is_some_and(|w| w.term != e.term)
                && let Some(w) = self.proposals.remove(&e.index)
            {
                fail_waiter(w.waiter, ProposeFailure::Unknown);
            }
        }
    }

    /// Splits a snapshot received from the leader into the address book (taken now) and the
    /// state machine's part (restored by the pipeline).
    fn unwrap_received_snapshot(&mut self, s: &Snapshot) -> RestoreSnapshot {
        let (book, state) = wire::decode_snapshot_data(&s.data).unwrap_or_else(|err| {
            fatal(&format!(
                "snapshot {} from the leader is unreadable: {err}",
                s.meta.index
            ))
        });
        for (id, addr) in book {
            self.learn_address(id, addr);
        }
        RestoreSnapshot {
            snapshot: Snapshot {
                meta: s.meta.clone(),
                data: state,
            },
        }
    }

    /// Strips the entry envelopes: commands go to the state machine bare, address records
    /// are taken here and passed on as no-ops (so the state machine sees every index).
    fn unwrap_committed(
        &mut self,
        committed: Vec<Entry>,
        peers_changed: &mut bool,
    ) -> (Vec<Entry>, Vec<(LogIndex, Term)>) {
        let ids = committed.iter().map(|e| (e.index, e.term)).collect();
        let mut out = Vec::with_capacity(committed.len());
        for e in committed {
            let Entry {
                term,
                index,
                kind,
                data,
            } = e;
            if kind == EntryKind::ConfChange {
                *peers_changed = true;
                out.push(Entry {
                    term,
                    index,
                    kind,
                    data,
                });
                continue;
            }
            let data = match wire::decode_entry_payload(data) {
                Ok(EntryPayload::Noop) => Vec::new(),
                Ok(EntryPayload::Command(c)) => c,
                Ok(EntryPayload::MemberAddress { id, address }) => {
                    self.learn_address(id, address);
                    *peers_changed = true;
                    Vec::new()
                }
                Err(err) => fatal(&format!("committed entry {index} is unreadable: {err}")),
            };
            out.push(Entry {
                term,
                index,
                kind,
                data,
            });
        }
        (out, ids)
    }

    fn learn_address(&mut self, id: NodeId, address: String) {
        if !self.configured.contains_key(&id) {
            self.addresses.insert(id, address);
        }
    }

    /// Points the transport at the current members.
    fn sync_peers(&self) {
        let membership = self.node.status().membership;
        let mut peers = BTreeMap::new();
        for id in membership.members().filter(|id| *id != self.id) {
            match self.addresses.get(&id) {
                Some(a) => {
                    peers.insert(id, a.clone());
                }
                None => tracing::warn!(peer = %id, "no address known for member; cannot reach it"),
            }
        }
        self.outbox.set_peers(&peers);
    }

    fn serve_reads(&mut self, read_states: Vec<ReadState>) {
        for rs in read_states {
            let Some(tag) = decode_read_ctx(&rs.ctx) else {
                continue;
            };
            let Some(w) = self.reads_pending.remove(&tag) else {
                continue;
            };
            self.reads_ready
                .entry(rs.index)
                .or_default()
                .push(w.respond);
        }
        let later = self.reads_ready.split_off(&self.applied.next());
        for (index, waiters) in std::mem::replace(&mut self.reads_ready, later) {
            for w in waiters {
                let _ = w.send(Ok(index));
            }
        }
    }

    fn snapshot_due(&self) -> bool {
        let every = self.options.snapshot_every_entries;
        !self.snapshot_waiters.is_empty()
            || (every > 0 && self.applied.0 >= self.snapshot_after.0.saturating_add(every))
    }

    /// Snapshots the state machine, stores it and compacts the log (on the writer thread).
    /// Runs with `busy` set, so no Ready is applied meanwhile and the state machine's state
    /// is exactly `applied`.
    fn start_snapshot(&mut self, ctx: &mut Context<Self>) {
        self.busy = true;
        self.snapshot_after = self.applied;
        let take = self.sm.take_snapshot.clone();
        let work = async move { take.send(TakeSnapshot).await };
        ctx.spawn(work.into_actor(self).map(|res, act, ctx| {
            let taken = match res {
                Ok(Ok(t)) => Ok(t),
                Ok(Err(reason)) => Err(SnapshotFailure::StateMachine(reason)),
                Err(err) => Err(SnapshotFailure::StateMachine(err.to_string())),
            };
            act.store_snapshot(taken, ctx);
        }));
    }

    fn store_snapshot(
        &mut self,
        taken: Result<(LogIndex, Vec<u8>), SnapshotFailure>,
        ctx: &mut Context<Self>,
    ) {
        let taken = match taken {
            Ok(t) => t,
            Err(err) => {
                tracing::warn!(id = %self.id, error = %err, "snapshot not taken");
                self.end_snapshot(Err(err), ctx);
                return;
            }
        };
        let (index, state) = taken;
        if index <= self.snapshot_index {
            // Nothing applied since the last one; the stored snapshot already covers it.
            let latest = self.latest_snapshot.ok_or(SnapshotFailure::NothingApplied);
            self.end_snapshot(latest, ctx);
            return;
        }
        let meta = match self.node.snapshot_meta(index) {
            Ok(m) => m,
            Err(err) => {
                let err = SnapshotFailure::Meta(err.to_string());
                tracing::warn!(id = %self.id, error = %err, "snapshot not taken");
                self.end_snapshot(Err(err), ctx);
                return;
            }
        };
        let snapshot = Snapshot {
            meta,
            data: wire::encode_snapshot_data(&self.addresses, state),
        };
        let info = SnapshotInfo {
            index: snapshot.meta.index,
            term: snapshot.meta.term,
            size_bytes: snapshot.data.len() as u64,
        };
        let writer = self.writer.clone();
        let work = async move { writer.compact(snapshot).await };
        ctx.spawn(work.into_actor(self).map(move |res, act, ctx| match res {
            Ok(()) => {
                act.snapshot_index = info.index;
                act.latest_snapshot = Some(info);
                act.node.on_snapshot_taken(info.index);
                tracing::info!(id = %act.id, index = %info.index, bytes = info.size_bytes, "snapshot taken; log compacted");
                act.end_snapshot(Ok(info), ctx);
            }
            Err(err) => {
                tracing::error!(id = %act.id, error = %err, "log writer gone; stopping");
                ctx.stop();
            }
        }));
    }

    fn end_snapshot(
        &mut self,
        result: Result<SnapshotInfo, SnapshotFailure>,
        ctx: &mut Context<Self>,
    ) {
        for w in std::mem::take(&mut self.snapshot_waiters) {
            let _ = w.send(result.clone());
        }
        self.busy = false;
        self.maybe_ready(ctx);
    }
}

fn fail_waiter(waiter: Waiter, failure: ProposeFailure) {
    match waiter {
        Waiter::Command(tx) => {
            let _ = tx.send(Err(failure));
        }
        Waiter::ConfChange(tx) => {
            let _ = tx.send(Err(failure));
        }
    }
}

fn decode_read_ctx(ctx: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(ctx.try_into().ok()?))
}

/// The log or a snapshot cannot be read: applying around it would fork this controller's
/// state from the others', so stop the process.
fn fatal(reason: &str) -> ! {
    tracing::error!(
        reason,
        "unrecoverable replication error; stopping the controller"
    );
    eprintln!("fatal: {reason}");
    std::process::exit(1);
}

impl Handler<Step> for RaftActor {
    type Result = ();

    fn handle(&mut self, msg: Step, ctx: &mut Self::Context) {
        for m in msg.messages {
            if m.to == self.id {
                self.node.step(m);
            } else {
                tracing::debug!(to = %m.to, me = %self.id, "dropping a raft message for another member");
            }
        }
        self.maybe_ready(ctx);
    }
}

impl Handler<Propose> for RaftActor {
    type Result = ResponseFuture<Result<Option<Response>, ProposeFailure>>;

    fn handle(&mut self, msg: Propose, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        match self.node.propose(wire::encode_command_entry(&msg.command)) {
            Ok(index) => {
                self.register(index, Waiter::Command(tx));
                self.maybe_ready(ctx);
            }
            Err(err) => {
                let _ = tx.send(Err(self.map_propose_error(err)));
            }
        }
        Box::pin(async move { rx.await.unwrap_or(Err(ProposeFailure::Shutdown)) })
    }
}

impl Handler<ReadBarrier> for RaftActor {
    type Result = ResponseFuture<Result<LogIndex, ProposeFailure>>;

    fn handle(&mut self, _msg: ReadBarrier, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let tag = self.next_read_ctx;
        self.next_read_ctx += 1;
        match self.node.read_index(tag.to_be_bytes().to_vec()) {
            Ok(()) => {
                let deadline_tick = self.ticks + self.options.read_timeout_ticks;
                self.reads_pending.insert(
                    tag,
                    ReadWaiter {
                        deadline_tick,
                        respond: tx,
                    },
                );
                self.maybe_ready(ctx);
            }
            Err(err) => {
                let _ = tx.send(Err(self.map_propose_error(err)));
            }
        }
        Box::pin(async move { rx.await.unwrap_or(Err(ProposeFailure::Shutdown)) })
    }
}

impl Handler<SubscribeLeadership> for RaftActor {
    type Result = ();

    fn handle(&mut self, msg: SubscribeLeadership, _ctx: &mut Self::Context) {
        msg.subscriber.do_send(self.leadership());
        self.subscribers.push(msg.subscriber);
    }
}

impl Handler<GetRaftStatus> for RaftActor {
    type Result = MessageResult<GetRaftStatus>;

    fn handle(&mut self, _msg: GetRaftStatus, _ctx: &mut Self::Context) -> Self::Result {
        let status = self.node.status();
        let leader_address = status
            .soft
            .leader
            .and_then(|l| self.addresses.get(&l).cloned());
        let stats = self.writer.stats();
        MessageResult(RaftStatus {
            status,
            leader_address,
            applied: self.applied,
            durable_index: self.durable_last,
            snapshot_index: self.snapshot_index,
            addresses: self.addresses.clone(),
            log_write_requests: stats.requests.load(Ordering::Relaxed),
            log_syncs: stats.syncs.load(Ordering::Relaxed),
            log_entries: stats.entries.load(Ordering::Relaxed),
        })
    }
}

impl Handler<TransferLeader> for RaftActor {
    type Result = Result<NodeId, ProposeFailure>;

    fn handle(&mut self, msg: TransferLeader, ctx: &mut Self::Context) -> Self::Result {
        let status = self.node.status();
        if status.soft.role != Role::Leader {
            return Err(self.not_leader(status.soft.leader));
        }
        let target = match msg.to {
            Some(t) => t,
            None => status
                .peers
                .iter()
                .filter(|(id, p)| **id != self.id && !p.learner)
                .max_by_key(|(id, p)| (p.match_index, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id)
                .ok_or_else(|| ProposeFailure::Refused("no other voter to transfer to".into()))?,
        };
        self.node
            .transfer_leader(target)
            .map_err(|e| self.map_propose_error(e))?;
        self.maybe_ready(ctx);
        Ok(target)
    }
}

impl Handler<ChangeMembership> for RaftActor {
    type Result = ResponseFuture<Result<Membership, ProposeFailure>>;

    fn handle(&mut self, msg: ChangeMembership, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let reply = |rx: oneshot::Receiver<_>| -> Self::Result {
            Box::pin(async move { rx.await.unwrap_or(Err(ProposeFailure::Shutdown)) })
        };
        let status = self.node.status();
        if status.soft.role != Role::Leader {
            let _ = tx.send(Err(self.not_leader(status.soft.leader)));
            return reply(rx);
        }
        let change = match &msg.change {
            MemberChange::AddLearner { id, .. } => ConfChange::AddLearner(*id),
            MemberChange::Promote { id } => ConfChange::PromoteLearner(*id),
            MemberChange::Remove { id } => ConfChange::RemoveNode(*id),
        };
        // Refuse an invalid change before anything (such as an address record) is proposed.
        if let Err(err) = status.membership.apply(&change) {
            let _ = tx.send(Err(ProposeFailure::Rejected(err.to_string())));
            return reply(rx);
        }
        let change = match msg.change {
            MemberChange::AddLearner { id, address } => {
                if address.is_empty() {
                    let _ = tx.send(Err(ProposeFailure::Rejected(format!(
                        "member {id} needs a gRPC address"
                    ))));
                    return Box::pin(
                        async move { rx.await.unwrap_or(Err(ProposeFailure::Shutdown)) },
                    );
                }
                // The address record commits before the change, so every controller can reach
                // the learner by the time it replicates to it.
                if let Err(err) = self
                    .node
                    .propose(wire::encode_member_address_entry(id, &address))
                {
                    let _ = tx.send(Err(self.map_propose_error(err)));
                    return Box::pin(
                        async move { rx.await.unwrap_or(Err(ProposeFailure::Shutdown)) },
                    );
                }
                self.learn_address(id, address);
                ConfChange::AddLearner(id)
            }
            MemberChange::Promote { id } => ConfChange::PromoteLearner(id),
            MemberChange::Remove { id } => ConfChange::RemoveNode(id),
        };
        match self.node.propose_conf_change(change) {
            Ok(index) => self.register(index, Waiter::ConfChange(tx)),
            Err(err) => {
                let _ = tx.send(Err(self.map_propose_error(err)));
            }
        }
        self.maybe_ready(ctx);
        reply(rx)
    }
}

impl Handler<TriggerSnapshot> for RaftActor {
    type Result = ResponseFuture<Result<SnapshotInfo, SnapshotFailure>>;

    fn handle(&mut self, _msg: TriggerSnapshot, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.snapshot_waiters.push(tx);
        self.maybe_ready(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(SnapshotFailure::Shutdown)) })
    }
}

impl Handler<StopRaft> for RaftActor {
    type Result = ();

    fn handle(&mut self, _msg: StopRaft, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
