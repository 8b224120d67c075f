//! The read-only view of durable Raft state that the core consults.
//!
//! The core never writes: everything to persist leaves through [`crate::raft::Ready`] and
//! the shell writes it (see `crate::storage::LogStore`). Once the shell reports a Ready
//! durable with [`crate::raft::RawNode::advance`], the storage must return what was written.

use super::types::{Entry, HardState, LogIndex, Membership, Snapshot, Term};

/// Why a storage read failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The requested index is at or below the snapshot and its entry is gone.
    #[error("log index {index} is compacted (first index is {first_index})")]
    Compacted {
        /// The requested index.
        index: LogIndex,
        /// The first index still stored.
        first_index: LogIndex,
    },
    /// The requested index is past the last entry.
    #[error("log index {index} is unavailable (last index is {last_index})")]
    Unavailable {
        /// The requested index.
        index: LogIndex,
        /// The last index stored.
        last_index: LogIndex,
    },
    /// A stored record could not be decoded or has an unknown format version.
    #[error("corrupt record in {file} at {what} {index}: {reason}")]
    Corrupt {
        /// The file that holds the record.
        file: String,
        /// What kind of record ("log index", "hard state", "snapshot").
        what: &'static str,
        /// Index of the record (0 when not an entry).
        index: u64,
        /// What was wrong.
        reason: String,
    },
    /// The data directory belongs to another node or cluster, or is otherwise unusable.
    #[error("{0}")]
    Invalid(String),
    /// An I/O or database error.
    #[error("storage I/O error on {file}: {reason}")]
    Io {
        /// The file involved.
        file: String,
        /// The underlying error.
        reason: String,
    },
}

/// What a node restarts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    /// Last durable term, vote and commit index.
    pub hard_state: HardState,
    /// Membership recorded with the latest snapshot, if there is one; otherwise `None` and
    /// the core uses its configured initial voters.
    pub snapshot_membership: Option<Membership>,
}

/// A synchronous, read-only view of the durable log.
///
/// Contract (every implementation passes `crate::storage::conformance`):
/// - entries are contiguous: every index in `first_index()..=last_index()` is present;
/// - `term(first_index() - 1)` returns the snapshot's term (the log's "dummy" entry);
/// - after a snapshot at index `s`, `first_index() == s + 1` and `last_index() >= s`;
/// - an empty store has `first_index() == 1`, `last_index() == 0` and `term(0) == Term(0)`;
/// - an error other than `Compacted`/`Unavailable` makes the node inoperable: the core
///   panics rather than guess.
pub trait Storage {
    /// Durable hard state and the membership of the latest snapshot.
    fn initial_state(&self) -> Result<InitialState, StorageError>;
    /// Entries in `[low, high)`, stopping early once their total
    /// [`Entry::size_bytes`] would exceed `max_bytes` (but always at least one entry).
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError>;
    /// Term of the entry at `index`; valid for `first_index() - 1 ..= last_index()`.
    fn term(&self, index: LogIndex) -> Result<Term, StorageError>;
    /// Index of the first entry still stored (snapshot index + 1).
    fn first_index(&self) -> Result<LogIndex, StorageError>;
    /// Index of the last entry stored (the snapshot index if the log is empty after it).
    fn last_index(&self) -> Result<LogIndex, StorageError>;
    /// The latest snapshot, with its data.
    fn snapshot(&self) -> Result<Snapshot, StorageError>;
}

impl<S: Storage + ?Sized> Storage for std::sync::Arc<S> {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        (**self).initial_state()
    }
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        (**self).entries(low, high, max_bytes)
    }
    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        (**self).term(index)
    }
    fn first_index(&self) -> Result<LogIndex, StorageError> {
        (**self).first_index()
    }
    fn last_index(&self) -> Result<LogIndex, StorageError> {
        (**self).last_index()
    }
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        (**self).snapshot()
    }
}
