//! The public driving API of the core: [`RawNode`] and [`Ready`].

use std::collections::BTreeMap;

use super::config::Config;
use super::core::{COMMITTED_BYTES_PER_READY_MAX, Raft};
use super::error::ProposeError;
use super::progress::ProgressState;
use super::storage::{Storage, StorageError};
use super::types::{
    ConfChange, Entry, EntryKind, HardState, LogIndex, Membership, Message, NodeId, ReadState,
    Role, Snapshot, SnapshotMeta, SoftState, Term,
};

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
    /// Leader only: a quorum of voters (itself included) was heard from within the current
    /// election-timeout window — the condition CheckQuorum checks (thesis §6.2).
    pub quorum_active: bool,
}

impl Status {
    /// True if this member is leader and has heard from a quorum of voters (itself
    /// included) within the current election-timeout window — CheckQuorum's view (thesis
    /// §6.2). A leader for which this is false may already be deposed without knowing it, so
    /// the shell must not let it make decisions that assume it is current, such as declaring
    /// nodes lost (docs/failures.md S3). Right after each window starts only the leader itself
    /// counts, so this can be briefly false on a healthy leader: callers retry later.
    pub fn leader_has_active_quorum(&self) -> bool {
        if self.soft.role != Role::Leader {
            return false;
        }
        self.quorum_active
    }
}

/// What the shell was handed in the Ready not yet advanced.
#[derive(Debug)]
struct InFlight {
    number: u64,
    last_entry: Option<(LogIndex, Term)>,
    snapshot_index: Option<LogIndex>,
    hard_state: Option<HardState>,
    applied_to: LogIndex,
}

/// The Raft state machine of one member, driven by its shell.
///
/// One [`Ready`] is outstanding at a time: after [`RawNode::ready`], [`RawNode::has_ready`]
/// is false until [`RawNode::advance`] is called with that Ready's number. Input
/// ([`RawNode::step`], [`RawNode::tick`], proposals) may be fed meanwhile; its effects come
/// in the next Ready.
pub struct RawNode<S: Storage> {
    raft: Raft<S>,
    prev_soft: Option<SoftState>,
    prev_hard: HardState,
    in_flight: Option<InFlight>,
    next_number: u64,
}

impl<S: Storage> RawNode<S> {
    /// Starts (or restarts) a member from `storage`.
    ///
    /// On restart the membership is the snapshot's (or `config.initial_voters` without a
    /// snapshot) plus every conf change entry up to the durable commit index; the applied
    /// index starts at the snapshot index, so the shell restores its state machine from
    /// [`Storage::snapshot`] and then receives the committed entries after it again.
    ///
    /// Errors: a storage error while reading the initial state; `StorageError::Invalid` for a
    /// bad `config` (id 0, empty election-timeout range, heartbeat interval not below the
    /// election timeout, zero limits) or a durable commit index past the stored log.
    pub fn new(config: Config, storage: S) -> Result<Self, StorageError> {
        let raft = Raft::new(config, storage)?;
        let prev_hard = raft.hard_state();
        Ok(RawNode {
            raft,
            prev_soft: None,
            prev_hard,
            in_flight: None,
            next_number: 1,
        })
    }
    /// Advances logical time by one tick (drives elections and heartbeats).
    pub fn tick(&mut self) {
        self.raft.tick();
    }
    /// Feeds a message from a peer. Messages addressed to another node are ignored.
    pub fn step(&mut self, msg: Message) {
        self.raft.step(msg);
    }
    /// Appends a state-machine command (leader only). Returns the index it will occupy.
    ///
    /// The entry is sent to followers with the next [`Ready`] (so proposals made between two
    /// Readies travel in one AppendEntries batch).
    ///
    /// Errors: `NotLeader`, `TransferInProgress`, `Backpressure` (more than
    /// `uncommitted_bytes_max` bytes of proposals not yet committed).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<LogIndex, ProposeError> {
        self.raft.propose(EntryKind::Normal, data)
    }
    /// Proposes a membership change (leader only, one at a time).
    ///
    /// Errors: `NotLeader`, `TransferInProgress`; `ConfChangePending` while another conf
    /// change is uncommitted or before this leader has committed an entry of its own term;
    /// `ConfChange(_)` for a change the current membership refuses; `LearnerBehind` when
    /// promoting a learner more than `learner_catch_up_entries_max` entries behind.
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<LogIndex, ProposeError> {
        self.raft.propose_conf_change(change)
    }
    /// Requests a linearizable read point tagged `ctx` (thesis §6.4); it appears in a later
    /// [`Ready::read_states`]. On a follower the request is forwarded to the leader.
    ///
    /// A leader confirms it still leads with a heartbeat round to a quorum and answers only
    /// once it has committed an entry of its own term (docs/failures.md C5, C6). A read the leader
    /// cannot answer (it stepped down) is dropped: the caller times out and retries.
    ///
    /// Errors: `NotLeader { leader: None }` on a follower that knows no leader.
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), ProposeError> {
        self.raft.read_index(ctx)
    }
    /// Starts handing leadership to `to` (thesis §3.10). Proposals are refused with
    /// `TransferInProgress` until it ends: when `to` wins its election, or after an election
    /// timeout.
    ///
    /// Errors: `NotLeader`; `ConfChange(NotAMember(to))` when `to` is not a voter;
    /// `TransferInProgress` when a transfer to another node is under way.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        self.raft.transfer_leader(to)
    }
    /// Starts an election now (tests and single-member bootstrap). Learners and non-members
    /// ignore it.
    pub fn campaign(&mut self) {
        self.raft.campaign(false);
    }
    /// Whether there is anything for the shell to do. O(1). False while a Ready is
    /// outstanding (not yet advanced).
    pub fn has_ready(&self) -> bool {
        if self.in_flight.is_some() {
            return false;
        }
        let r = &self.raft;
        self.prev_soft != Some(r.soft_state())
            || self.prev_hard != r.hard_state()
            || r.log.has_unhanded()
            || !r.msgs.is_empty()
            || !r.persisted_msgs.is_empty()
            || r.pending_broadcast
            || !r.read_states.is_empty()
            || r.log.has_next_committed()
    }
    /// Takes the pending work. Call [`RawNode::advance`] before the next `ready`.
    ///
    /// Committed entries are handed out up to the commit index; each is durable locally or
    /// carried in this Ready's `entries`, which the shell persists before applying (step 1
    /// before step 4 of [`Ready`]). At most 32 MiB of committed entries per Ready.
    ///
    /// Panics if the previous Ready was not advanced.
    pub fn ready(&mut self) -> Ready {
        assert!(
            self.in_flight.is_none(),
            "raft: ready() called before advance() of the previous Ready"
        );
        if self.raft.pending_broadcast {
            self.raft.bcast_append();
        }
        let number = self.next_number;
        self.next_number += 1;
        let r = &mut self.raft;
        let soft = r.soft_state();
        let soft_state = (self.prev_soft != Some(soft)).then_some(soft);
        self.prev_soft = Some(soft);
        let hs = r.hard_state();
        let hard_state = (self.prev_hard != hs).then_some(hs);
        self.prev_hard = hs;
        let (snapshot, entries) = r.log.take_unhanded();
        let committed_entries = r.log.next_committed(COMMITTED_BYTES_PER_READY_MAX);
        let snapshot_index = snapshot.as_ref().map(|s| s.meta.index);
        let applied_floor = r.log.applied.max(snapshot_index.unwrap_or(LogIndex(0)));
        let applied_to = committed_entries
            .last()
            .map(|e| e.index)
            .unwrap_or(applied_floor);
        self.in_flight = Some(InFlight {
            number,
            last_entry: entries.last().map(|e| (e.index, e.term)),
            snapshot_index,
            hard_state,
            applied_to,
        });
        Ready {
            number,
            soft_state,
            hard_state,
            snapshot,
            entries,
            messages: std::mem::take(&mut r.msgs),
            persisted_messages: std::mem::take(&mut r.persisted_msgs),
            committed_entries,
            read_states: std::mem::take(&mut r.read_states),
        }
    }
    /// Confirms that the writes of Ready `number` are durable and its committed entries
    /// applied. Panics if `number` is not the last Ready handed out.
    pub fn advance(&mut self, number: u64) {
        let f = self
            .in_flight
            .take()
            .unwrap_or_else(|| panic!("raft: advance({number}) with no Ready outstanding"));
        assert_eq!(
            f.number, number,
            "raft: advance({number}) but Ready {} is outstanding",
            f.number
        );
        let r = &mut self.raft;
        if let Some(index) = f.snapshot_index {
            r.log.stable_snapshot(index);
        }
        if let Some((index, term)) = f.last_entry {
            r.log.stable_to(index, term);
        }
        if let Some(hs) = f.hard_state {
            r.durable_term = hs.term;
        }
        assert!(
            f.applied_to >= r.log.applied,
            "raft: applied index would move backwards"
        );
        r.log.applied = f.applied_to;
        r.on_persisted();
    }
    /// Metadata for a snapshot of the state machine as of `index` (which must be applied):
    /// the entry's term and the membership in force at `index`.
    ///
    /// Errors: `Unavailable` if `index` is not applied yet; `Compacted` if `index` is below
    /// the latest snapshot.
    pub fn snapshot_meta(&self, index: LogIndex) -> Result<SnapshotMeta, StorageError> {
        self.raft.snapshot_meta(index)
    }
    /// Tells the core a local snapshot now covers everything up to `index` (the shell has
    /// written it to storage and compacted the log), so lagging peers get the snapshot.
    pub fn on_snapshot_taken(&mut self, index: LogIndex) {
        self.raft.on_snapshot_taken(index);
    }
    /// Current status.
    pub fn status(&self) -> Status {
        let r = &self.raft;
        let peers = r
            .progress
            .iter()
            .filter(|(id, _)| **id != r.id)
            .map(|(&id, p)| {
                let status = PeerStatus {
                    match_index: p.match_index,
                    next_index: p.next_index,
                    recent_active: p.recent_active,
                    learner: p.learner,
                };
                (id, status)
            })
            .collect();
        Status {
            id: r.id,
            soft: r.soft_state(),
            hard: r.hard_state(),
            applied: r.log.applied,
            last_index: r.log.last_index(),
            membership: r.membership.clone(),
            peers,
            quorum_active: r.role == Role::Leader && r.quorum_active(),
        }
    }
    /// Read access to the storage.
    pub fn storage(&self) -> &S {
        &self.raft.log.storage
    }
    /// Replication state of `peer` as the leader sees it: `"probe"`, `"replicate"` or
    /// `"snapshot"` (for tests and status pages); `None` if not leader or unknown peer.
    pub fn peer_state(&self, peer: NodeId) -> Option<&'static str> {
        self.raft.progress.get(&peer).map(|p| match p.state {
            ProgressState::Probe => "probe",
            ProgressState::Replicate => "replicate",
            ProgressState::Snapshot => "snapshot",
        })
    }
}
