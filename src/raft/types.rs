//! Value types shared by the Raft core, its storage and its shell.
//!
//! Everything here is plain data: ids and indexes are newtypes so two arguments of the same
//! raw type cannot be swapped, collections are ordered (`BTreeSet`) so iteration order never
//! depends on a hash seed, and nothing reads a clock or does I/O.

use std::collections::BTreeSet;
use std::fmt;

macro_rules! u64_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw value.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                Self(v)
            }
        }
    };
}

u64_newtype!(
    /// Identity of a Raft member. `0` is never a valid id (it means "none" on the wire).
    NodeId
);
u64_newtype!(
    /// A Raft term (§5.1). Terms only grow; `0` is the term before any election.
    Term
);
u64_newtype!(
    /// A position in the replicated log, starting at 1. `0` is the empty prefix.
    LogIndex
);

impl LogIndex {
    /// The index after this one.
    pub const fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }
    /// The index before this one (saturating at 0).
    pub const fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    /// An opaque command for the state machine. An empty `data` is the no-op a new leader
    /// appends to commit entries from earlier terms (§8, thesis §6.4).
    Normal,
    /// An encoded [`ConfChange`] (thesis §4.1). It takes effect when committed.
    ConfChange,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: Term,
    /// Position of the entry in the log.
    pub index: LogIndex,
    /// How `data` is to be read.
    pub kind: EntryKind,
    /// Opaque payload (a state-machine command or an encoded [`ConfChange`]).
    pub data: Vec<u8>,
}

impl Entry {
    /// Bytes this entry counts for in flow control: payload plus a fixed 24-byte header.
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + 24
    }
}

/// The state that must be durable before the node answers a vote or append (§5.1, Figure 2
/// "Persistent state on all servers"). `commit` is persisted too so that a node's commit
/// index never goes backwards across restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: Term,
    /// Candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// Highest index known committed.
    pub commit: LogIndex,
}

/// The configuration of the cluster: who votes and who only replicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Members whose votes and acknowledgements count toward a quorum.
    pub voters: BTreeSet<NodeId>,
    /// Members that receive the log but neither vote nor count toward commit (thesis §4.2.1).
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// A configuration of voters only.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }
    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }
    /// Votes needed for a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
    /// Every member, voters then learners, each in ascending id order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }
    /// The configuration after `change`, or why it cannot be made.
    pub fn apply(&self, change: &ConfChange) -> Result<Membership, ConfChangeError> {
        let mut next = self.clone();
        match *change {
            ConfChange::AddLearner(id) => {
                if self.contains(id) {
                    return Err(ConfChangeError::AlreadyMember(id));
                }
                next.learners.insert(id);
            }
            ConfChange::PromoteLearner(id) => {
                if !next.learners.remove(&id) {
                    return Err(ConfChangeError::NotALearner(id));
                }
                next.voters.insert(id);
            }
            ConfChange::RemoveNode(id) => {
                if !self.contains(id) {
                    return Err(ConfChangeError::NotAMember(id));
                }
                next.learners.remove(&id);
                next.voters.remove(&id);
                if next.voters.is_empty() {
                    return Err(ConfChangeError::WouldRemoveLastVoter(id));
                }
            }
        }
        Ok(next)
    }
}

/// A single-server membership change (thesis §4.1): at most one is in flight at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChange {
    /// Start replicating to a new, non-voting member.
    AddLearner(NodeId),
    /// Make a caught-up learner a voter.
    PromoteLearner(NodeId),
    /// Remove a voter or learner. A leader that removes itself steps down once the change
    /// commits.
    RemoveNode(NodeId),
}

/// Why a [`ConfChange`] is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    /// Adding a node that is already a voter or learner.
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    /// Promoting a node that is not a learner.
    #[error("node {0} is not a learner")]
    NotALearner(NodeId),
    /// Removing a node that is not in the configuration.
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    /// Removing the only voter would leave a cluster that can never commit again.
    #[error("removing node {0} would leave no voters")]
    WouldRemoveLastVoter(NodeId),
}

/// Describes a snapshot: the state machine after applying every entry up to `index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Last index included in the snapshot (0 for "no snapshot").
    pub index: LogIndex,
    /// Term of the entry at `index`.
    pub term: Term,
    /// Configuration in force at `index`.
    pub membership: Membership,
}

/// A snapshot of the state machine (§7) with its metadata. `data` is opaque to the core.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Where the snapshot sits in the log.
    pub meta: SnapshotMeta,
    /// The state machine's serialized state.
    pub data: Vec<u8>,
}

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes without raising its term (thesis §9.6).
    PreCandidate,
    /// Asking for votes in a new term (§5.2).
    Candidate,
    /// Replicates the log to everyone else (§5.3).
    Leader,
}

/// Volatile state the shell may want to show; reported in [`crate::raft::Ready`] when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// This node's role.
    pub role: Role,
    /// The leader this node currently follows, if known.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: Term,
}

/// A linearizable read point: once the state machine has applied `index`, a read tagged
/// `ctx` may be served (thesis §6.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's tag from [`crate::raft::RawNode::read_index`].
    pub ctx: Vec<u8>,
    /// Commit index the read must wait for.
    pub index: LogIndex,
}

/// A message between two Raft members. Every message carries the sender's term (§5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Sender's term. For a PreVote request this is the term the sender *would* use
    /// (its term + 1); its real term is not raised (thesis §9.6).
    pub term: Term,
    /// What is being said.
    pub body: MessageBody,
}

/// The kinds of message the core exchanges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// PreVote request (thesis §9.6): would you vote for me in `Message::term`?
    PreVote {
        /// Index of the candidate's last entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last entry.
        last_log_term: Term,
    },
    /// Answer to [`MessageBody::PreVote`].
    PreVoteResponse {
        /// True if the pre-vote is refused.
        reject: bool,
    },
    /// RequestVote (§5.2).
    RequestVote {
        /// Index of the candidate's last entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last entry.
        last_log_term: Term,
        /// Set when the election follows a leadership transfer (TimeoutNow), so voters do
        /// not refuse it for having heard from the old leader recently (thesis §3.10).
        transfer: bool,
    },
    /// Answer to [`MessageBody::RequestVote`].
    RequestVoteResponse {
        /// True if the vote is refused.
        reject: bool,
    },
    /// AppendEntries (§5.3). An empty `entries` is still a consistency probe.
    AppendEntries {
        /// Index of the entry before `entries`.
        prev_log_index: LogIndex,
        /// Term of the entry at `prev_log_index`.
        prev_log_term: Term,
        /// Entries to store, contiguous from `prev_log_index + 1`.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
    },
    /// Answer to [`MessageBody::AppendEntries`].
    AppendEntriesResponse {
        /// True if the consistency check failed.
        reject: bool,
        /// On success: the last index now known to match the leader. On reject: the
        /// `prev_log_index` that was refused.
        index: LogIndex,
        /// On reject, a hint for fast back-off (§5.3, "the follower can include the term of
        /// the conflicting entry and the first index it stores for that term"): the largest
        /// index at or below the refused one whose term is at most `reject_hint_term`.
        reject_hint_index: LogIndex,
        /// Term of the follower's entry at `reject_hint_index`.
        reject_hint_term: Term,
    },
    /// Leader heartbeat: asserts leadership and carries the commit index (bounded by what the
    /// follower is known to hold). `context` is set when confirming a ReadIndex round.
    Heartbeat {
        /// min(leader commit, follower's match index).
        commit: LogIndex,
        /// ReadIndex round tag (empty if none).
        context: Vec<u8>,
    },
    /// Answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// Echo of the heartbeat's `context`.
        context: Vec<u8>,
    },
    /// One chunk of a snapshot (§7, Figure 13).
    InstallSnapshot {
        /// Which snapshot this chunk belongs to.
        meta: SnapshotMeta,
        /// Byte offset of `data` in the snapshot.
        offset: u64,
        /// The chunk's bytes.
        data: Vec<u8>,
        /// True on the last chunk.
        done: bool,
    },
    /// Answer to [`MessageBody::InstallSnapshot`].
    InstallSnapshotResponse {
        /// Snapshot index being acknowledged.
        index: LogIndex,
        /// Next byte offset the follower expects (the whole size once installed).
        next_offset: u64,
        /// True if the chunk was refused (unexpected offset); `next_offset` says where to
        /// resume.
        reject: bool,
        /// True once the snapshot is durable and restored on the follower.
        done: bool,
    },
    /// Leadership transfer (thesis §3.10): start an election now, ignoring timeouts.
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of its client.
    ReadIndex {
        /// The follower's read tag.
        context: Vec<u8>,
    },
    /// The leader's answer to [`MessageBody::ReadIndex`]. `index` 0 with `reject` means the
    /// leader could not serve it (for example it has not committed in its term yet).
    ReadIndexResponse {
        /// The follower's read tag.
        context: Vec<u8>,
        /// Commit index to wait for.
        index: LogIndex,
        /// True if the leader refused.
        reject: bool,
    },
}
