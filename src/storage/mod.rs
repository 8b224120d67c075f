//! Durable storage for the Raft log: the read side is [`crate::raft::Storage`]; the write
//! side is [`LogStore::write`], called by the shell with what a [`crate::raft::Ready`] asks
//! to persist.
//!
//! Two implementations, one set of rules (`check.rs`) and one conformance suite
//! ([`conformance`]) that both pass:
//! - [`MemStorage`]: in memory, for tests and as the durable part of the simulator's
//!   crashing disk (`simulations/src/disk.rs`, which passes the suite too);
//! - [`RedbStore`]: the durable store a server runs on (one redb file plus snapshot data
//!   files; see its docs for the layout and the record format). Open it for a server's data
//!   dir with [`open_data_dir`].
//!
//! Both refuse (with [`StorageError::Invalid`]) a write that would break a Raft storage
//! invariant — a gap, a term or vote going back, a committed entry rewritten — rather than
//! store a log the core could not trust.

mod check;
mod codec;
#[doc(hidden)]
pub mod conformance;
mod mem;
mod redb_store;

use std::path::Path;

pub use mem::MemStorage;
pub use redb_store::{DB_FILE_NAME, RedbStore, SNAPSHOT_DIR_NAME};

use crate::raft::{Entry, HardState, LogIndex, NodeId, Snapshot, Storage, StorageError};

/// Opens (creating it and the directory if missing) the durable log of node `node_id` of
/// cluster `cluster_name` in the server data dir `dir`.
///
/// The first open records the identity; later opens refuse a dir recorded for another node
/// or cluster, so a misconfigured server cannot join a cluster with someone else's log.
/// Every record is validated before this returns (see [`RedbStore::open`]).
///
/// # Errors
/// [`StorageError::Invalid`] if `dir` belongs to another node or cluster or is locked by
/// another process; [`StorageError::Corrupt`] naming the file and index of the first bad
/// record; [`StorageError::Io`] if the dir or database cannot be created or read.
pub fn open_data_dir(
    dir: impl AsRef<Path>,
    cluster_name: &str,
    node_id: NodeId,
) -> Result<RedbStore, StorageError> {
    RedbStore::open_with_identity(dir, cluster_name, node_id)
}

/// One atomic, durable write: everything a single Ready (or a group of Readies merged by
/// group commit) asks to persist.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    /// A snapshot received from the leader: replaces the whole log (every stored entry is
    /// dropped) and becomes the latest snapshot. Applied before `entries`.
    pub snapshot: Option<Snapshot>,
    /// Entries to append. If `entries[0].index` is at or below the last stored index, the
    /// stored suffix from that index on is removed first, in the same transaction (Raft
    /// §5.3; docs/failures.md C3).
    pub entries: Vec<Entry>,
    /// Hard state to store (term, vote and commit in one record; docs/failures.md C2).
    pub hard_state: Option<HardState>,
}

impl WriteBatch {
    /// True if there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }

    /// Folds `later` into this batch so that writing the result once stores the same thing
    /// as writing `self` and then `later` (group commit: several Readies, one transaction,
    /// one fsync). A snapshot in `later` supersedes everything `self` held but its hard
    /// state; entries of `later` replace those of `self` from `later.entries[0].index` on;
    /// the later hard state wins.
    ///
    /// The write rules are then checked once, against the merged batch: an intermediate
    /// hard state that `later` overrides is not checked on its own.
    pub fn merge(&mut self, later: WriteBatch) {
        if let Some(snapshot) = later.snapshot {
            self.snapshot = Some(snapshot);
            self.entries.clear();
        }
        if let Some(first) = later.entries.first() {
            let first_index = first.index;
            self.entries.retain(|e| e.index < first_index);
        }
        self.entries.extend(later.entries);
        if later.hard_state.is_some() {
            self.hard_state = later.hard_state;
        }
    }
}

/// The write side of a durable log. Methods take `&self` so the store can be shared between
/// the core (reads) and a writer thread (writes) behind an `Arc`.
pub trait LogStore: Storage + Send + Sync {
    /// Persists `batch` atomically and durably (fsync before returning). On error nothing of
    /// the batch is visible.
    fn write(&self, batch: &WriteBatch) -> Result<(), StorageError>;
    /// Installs a snapshot the local state machine took at `snapshot.meta.index` (which must
    /// be applied and so stored) and drops entries up to that index. Durable on return.
    fn compact(&self, snapshot: Snapshot) -> Result<(), StorageError>;
    /// Highest index whose entry is stored. Convenience for status pages.
    fn last_stored_index(&self) -> Result<LogIndex, StorageError> {
        self.last_index()
    }
}
