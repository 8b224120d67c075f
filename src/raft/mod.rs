//! The sans-IO Raft consensus core.
//!
//! [`RawNode`] is a deterministic state machine in the style of etcd-io/raft and
//! tikv/raft-rs: it never reads a clock, draws no global randomness (election timeouts come
//! from a SplitMix64 seeded by [`Config::seed`]), does no I/O and iterates only ordered maps.
//! The shell feeds it input and executes the [`Ready`] values it hands back.
//!
//! # The driving loop
//!
//! Inputs: [`RawNode::tick`] on a timer (the shell decides how long a tick is),
//! [`RawNode::step`] for each message from a peer, [`RawNode::propose`] /
//! [`RawNode::propose_conf_change`] / [`RawNode::read_index`] / [`RawNode::transfer_leader`]
//! for clients. Then, whenever [`RawNode::has_ready`] is true:
//!
//! 1. persist `snapshot`, `entries` (truncating the stored suffix from the first new index)
//!    and `hard_state` in one atomic, durable write;
//! 2. send `messages` (they may go before step 1 finishes);
//! 3. once the write is durable, send `persisted_messages`;
//! 4. restore the state machine from `snapshot`, apply `committed_entries`, serve the
//!    `read_states` whose index is applied;
//! 5. call [`RawNode::advance`] with the Ready's number.
//!
//! A single-member cluster, driven over the in-memory store (`mlcp::storage::MemStorage`):
//!
//! ```
//! use std::sync::Arc;
//! use mlcp::raft::{Config, EntryKind, NodeId, RawNode, Role};
//! use mlcp::storage::MemStorage;
//!
//! let log = Arc::new(MemStorage::new());
//! let mut node = RawNode::new(Config::new(NodeId(1), [NodeId(1)]), log.clone()).unwrap();
//! let mut applied = Vec::new();
//! let mut proposed = false;
//! for _tick in 0..100 {
//!     node.tick();
//!     if node.status().soft.role == Role::Leader && !proposed {
//!         node.propose(b"set x = 1".to_vec()).unwrap();
//!         proposed = true;
//!     }
//!     while node.has_ready() {
//!         let rd = node.ready();
//!         log.persist(&rd); // 1. one durable write (instantly "durable" in memory)
//!         assert!(rd.messages.is_empty() && rd.persisted_messages.is_empty()); // 2, 3: no peers
//!         for e in &rd.committed_entries {
//!             // 4. apply; an empty Normal entry is a new leader's no-op
//!             if e.kind == EntryKind::Normal && !e.data.is_empty() {
//!                 applied.push(e.data.clone());
//!             }
//!         }
//!         node.advance(rd.number); // 5.
//!     }
//! }
//! assert_eq!(applied, vec![b"set x = 1".to_vec()]);
//! ```
//!
//! # Rules the shell can rely on
//!
//! - **Durability before acknowledgement** (docs/failures.md C2, C4): votes, vote requests,
//!   AppendEntries and InstallSnapshot acknowledgements leave only in `persisted_messages`.
//!   A leader counts itself toward commit only for entries whose Ready was advanced, so a
//!   single-member cluster never commits (and never acknowledges) before the local write.
//! - **Committed entries** are handed out up to the commit index. Each one is either already
//!   durable locally or in the same Ready's `entries`, which step 1 persists before step 4
//!   applies it. At most 32 MiB of committed entries per Ready; the rest follow.
//! - **One Ready at a time**: after [`RawNode::ready`], `has_ready` is false until
//!   [`RawNode::advance`]. Input may be fed in between; it shows up in the next Ready.
//!   Proposals made between two Readies go out together (batching).
//! - **Applied never moves backwards** (C8): a snapshot from the leader is handed out only if
//!   it is newer than the commit index; a stale one is acknowledged and dropped.
//! - **Restart**: the applied index restarts at the snapshot index; the shell restores the
//!   state machine from [`Storage::snapshot`] and receives the committed entries after it
//!   again. Membership = snapshot membership (or `Config::initial_voters`) + every conf
//!   change entry up to the durable commit index. A joining node must be started with the
//!   cluster's original `initial_voters` (or receive a snapshot), since the bootstrap
//!   configuration is not itself a log entry.
//! - **Storage errors** other than `Compacted`/`Unavailable` make the core panic (the
//!   storage contract: the node is inoperable).
//!
//! # Deviations from the Raft paper and Ongaro's thesis
//!
//! 1. **Membership changes take effect when committed**, not when appended (thesis §4.1
//!    applies them on append). With one change at a time this keeps every pair of adjacent
//!    configurations overlapping; it is what etcd-io/raft does. A conf change entry that is
//!    truncated before it commits never takes effect, so there is nothing to roll back.
//! 2. **Conf changes need a current-term commit first**: a new leader refuses conf changes
//!    until it has committed an entry of its own term (Ongaro, raft-dev, 2015, the fix for
//!    the single-server change bug), and refuses a second change while one is uncommitted.
//! 3. **PreVote and CheckQuorum are on by default** (thesis §9.6, §6.2), and a node that
//!    heard from a leader within the minimum election timeout ignores (pre-)vote requests of
//!    a higher term unless they come from a leadership transfer (thesis §4.2.3's rule, applied
//!    with CheckQuorum as in etcd). A stale leader's AppendEntries/heartbeat is answered with
//!    the newer term so it steps down.
//! 4. **Followers answer an AppendEntries that starts below their commit index** by
//!    reporting their commit index as matched (instead of checking each entry).
//! 5. **Fast back-off** (§5.3 sketches it): a rejection carries the largest index at or below
//!    the refused one whose term is at most the leader's `prev_log_term`; the leader then
//!    skips to the last index of its own log with a term at most the follower's.
//! 6. **Heartbeats are their own message** (not empty AppendEntries) and carry
//!    `min(commit, follower's match)`, so a heartbeat never makes a follower commit entries
//!    it may not hold.
//! 7. **Snapshots** (§7, Figure 13): chunks are acknowledged one at a time (the follower
//!    answers with the next offset it expects, and the leader resumes there); the
//!    follower keeps partial chunks in memory only; a snapshot whose last entry is already
//!    in the follower's log only advances the commit index. A lost chunk is resent after an
//!    election timeout without an answer.
//! 8. **ReadIndex** (thesis §6.4) uses one heartbeat round per read request (tagged with a
//!    leader-local sequence number; a later round also confirms earlier reads); reads that
//!    arrive before the leader committed in its term wait for that commit. A follower's
//!    forwarded read the leader cannot answer is dropped (the client retries). There are no
//!    lease-based reads.
//! 9. **Leadership transfer** (thesis §3.10) is abandoned after one minimum election
//!    timeout; proposals are refused while it runs. TimeoutNow starts an election that skips
//!    PreVote.
//! 10. **A removed leader** steps down when the removal commits (after announcing the new
//!     commit index) and, no longer a voter, never campaigns (thesis §4.2.2, C9).
//! 11. **Flow control** follows etcd: per-follower Probe/Replicate/Snapshot states, a window
//!     of `inflight_msgs_max` messages and `inflight_bytes_max` bytes; a heartbeat answer
//!     frees one slot of a full window so lost acknowledgements cannot stall replication.
//! 12. **Backpressure**: a leader refuses proposals once `uncommitted_bytes_max` bytes of
//!     proposals are uncommitted (always accepting one when none is).

mod codec;
mod config;
mod core;
mod error;
mod log;
mod node;
mod progress;
mod storage;
mod types;

#[cfg(test)]
mod tests;

pub use codec::DecodeError;
pub use config::Config;
pub use error::ProposeError;
pub use node::{PeerStatus, RawNode, Ready, Status};
pub use storage::{InitialState, Storage, StorageError};
pub use types::{
    ConfChange, ConfChangeError, Entry, EntryKind, HardState, LogIndex, Membership, Message,
    MessageBody, NodeId, ReadState, Role, Snapshot, SnapshotMeta, SoftState, Term,
};
