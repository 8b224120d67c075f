//! The public driving API of the core: [`RawNode`] and [`Ready`].
#![allow(unused_variables, dead_code)]

use std::collections::BTreeMap;

use super::storage::{Storage, StorageError};
use super::types::{
    ConfChange, ConfChangeError, Entry, HardState, LogIndex, Membership, Message, NodeId,
    ReadState, Snapshot, SnapshotMeta, SoftState,
};

/// Tunables of one member. Times are in ticks; the shell decides how long a tick is.
#[derive(Clone, Debug)]
pub struct Config {
    /// This member's id (never 0).
    pub id: NodeId,
    /// Voters of a brand-new cluster, used only when storage holds no snapshot.
    pub initial_voters: Vec<NodeId>,
    /// Election timeout is drawn uniformly from `[min, max)` ticks each time it is reset.
    pub election_timeout_ticks_min: u64,
    /// Upper bound (exclusive) of the election timeout.
    pub election_timeout_ticks_max: u64,
    /// Leader sends a heartbeat every this many ticks.
    pub heartbeat_interval_ticks: u64,
    /// Largest total entry bytes in one AppendEntries.
    pub append_bytes_max: u64,
    /// Most AppendEntries in flight to one follower before waiting for acknowledgements.
    pub inflight_msgs_max: usize,
    /// Most entry bytes in flight to one follower.
    pub inflight_bytes_max: u64,
    /// Size of one InstallSnapshot chunk.
    pub snapshot_chunk_bytes: u64,
    /// A learner may be promoted once it is at most this many entries behind the leader.
    pub learner_catch_up_entries_max: u64,
    /// Most uncommitted proposal bytes the leader accepts before refusing new ones.
    pub uncommitted_bytes_max: u64,
    /// PreVote (thesis §9.6). On by default.
    pub pre_vote: bool,
    /// CheckQuorum (thesis §6.2): a leader that has not heard from a quorum within an
    /// election timeout steps down. On by default.
    pub check_quorum: bool,
    /// Seed for the election-timeout randomness (the core's only randomness).
    pub seed: u64,
}

impl Config {
    /// Defaults for `id` in a cluster whose initial voters are `voters`.
    pub fn new(id: NodeId, voters: impl IntoIterator<Item = NodeId>) -> Config {
        Config {
            id,
            initial_voters: voters.into_iter().collect(),
            election_timeout_ticks_min: 10,
            election_timeout_ticks_max: 20,
            heartbeat_interval_ticks: 2,
            append_bytes_max: 1 << 20,
            inflight_msgs_max: 64,
            inflight_bytes_max: 8 << 20,
            snapshot_chunk_bytes: 1 << 20,
            learner_catch_up_entries_max: 100,
            uncommitted_bytes_max: 64 << 20,
            pre_vote: true,
            check_quorum: true,
            seed: id.0,
        }
    }
}

/// Why a proposal (or ReadIndex, transfer, conf change) was refused. Nothing was appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is the one it follows, if known.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// Best guess of the current leader.
        leader: Option<NodeId>,
    },
    /// A leadership transfer is in progress; retry after it ends.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// A membership change is already pending (one at a time, thesis §4.1).
    #[error("a membership change is already pending")]
    ConfChangePending,
    /// The membership change is invalid.
    #[error(transparent)]
    ConfChange(#[from] ConfChangeError),
    /// The learner is not caught up enough to promote.
    #[error("learner {0} is not caught up")]
    LearnerBehind(NodeId),
    /// Too many uncommitted bytes; back off.
    #[error("too many uncommitted proposals")]
    Backpressure,
}

/// Everything the shell must do after feeding input to the core, in this order:
///
/// 1. persist `snapshot` (if any), then `entries` (an append that first truncates any stored
///    suffix from `entries[0].index` on) and `hard_state` — one atomic, durable write;
/// 2. send `messages` — these may go before step 1 completes;
/// 3. once step 1 is durable, send `persisted_messages` (votes, append acknowledgements);
/// 4. restore the state machine from `snapshot` (if any), then apply `committed_entries` in
///    order, then serve `read_states` whose index is applied;
/// 5. call [`RawNode::advance`] with this Ready's `number`.
#[derive(Debug, Default)]
pub struct Ready {
    /// Sequence number of this Ready (for [`RawNode::advance`]).
    pub number: u64,
    /// Role/leader/term, when changed since the last Ready.
    pub soft_state: Option<SoftState>,
    /// Hard state to persist, when changed.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader to persist and restore.
    pub snapshot: Option<Snapshot>,
    /// Entries to append durably.
    pub entries: Vec<Entry>,
    /// Messages that may be sent immediately.
    pub messages: Vec<Message>,
    /// Messages that may be sent only after this Ready's writes are durable.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Linearizable read points that became ready.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// True if the Ready asks for a durable write.
    pub fn must_sync(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }
}

/// Replication progress of one peer as seen by the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Highest index known replicated on the peer.
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    /// Whether the peer has been heard from within the last election timeout.
    pub recent_active: bool,
    /// Whether the peer is a learner.
    pub learner: bool,
}

/// A snapshot of the node's state for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This member.
    pub id: NodeId,
    /// Role, leader and term.
    pub soft: SoftState,
    /// Durable state.
    pub hard: HardState,
    /// Last index handed to the shell to apply.
    pub applied: LogIndex,
    /// Last index in the log (stable or not).
    pub last_index: LogIndex,
    /// Current configuration.
    pub membership: Membership,
    /// Per-peer progress (leader only), ascending by id.
    pub peers: BTreeMap<NodeId, PeerStatus>,
}

/// The Raft state machine of one member, driven by its shell.
pub struct RawNode<S: Storage> {
    storage: S,
}

impl<S: Storage> RawNode<S> {
    /// Starts (or restarts) a member from `storage`.
    ///
    /// Errors: a storage error while reading the initial state.
    pub fn new(config: Config, storage: S) -> Result<Self, StorageError> {
        todo!()
    }
    /// Advances logical time by one tick (drives elections and heartbeats).
    pub fn tick(&mut self) {
        todo!()
    }
    /// Feeds a message from a peer.
    pub fn step(&mut self, msg: Message) {
        todo!()
    }
    /// Appends a state-machine command (leader only). Returns the index it will occupy.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<LogIndex, ProposeError> {
        todo!()
    }
    /// Proposes a membership change (leader only, one at a time).
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<LogIndex, ProposeError> {
        todo!()
    }
    /// Requests a linearizable read point tagged `ctx` (thesis §6.4); it appears in a later
    /// [`Ready::read_states`]. On a follower the request is forwarded to the leader.
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), ProposeError> {
        todo!()
    }
    /// Starts handing leadership to `to` (thesis §3.10).
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        todo!()
    }
    /// Starts an election now (tests and single-member bootstrap).
    pub fn campaign(&mut self) {
        todo!()
    }
    /// Whether there is anything for the shell to do.
    pub fn has_ready(&self) -> bool {
        todo!()
    }
    /// Takes the pending work. Call [`RawNode::advance`] before the next `ready`.
    pub fn ready(&mut self) -> Ready {
        todo!()
    }
    /// Confirms that the writes of Ready `number` are durable and its committed entries
    /// applied. Panics if `number` is not the last Ready handed out.
    pub fn advance(&mut self, number: u64) {
        todo!()
    }
    /// Metadata for a snapshot of the state machine as of `index` (which must be applied):
    /// the entry's term and the membership in force at `index`.
    pub fn snapshot_meta(&self, index: LogIndex) -> Result<SnapshotMeta, StorageError> {
        todo!()
    }
    /// Tells the core a local snapshot now covers everything up to `index` (the shell has
    /// written it to storage and compacted the log), so lagging peers get the snapshot.
    pub fn on_snapshot_taken(&mut self, index: LogIndex) {
        todo!()
    }
    /// Current status.
    pub fn status(&self) -> Status {
        todo!()
    }
    /// Read access to the storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }
}
