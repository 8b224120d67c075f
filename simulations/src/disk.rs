//! A simulated disk: the production in-memory store ([`MemStorage`], the same write rules and
//! conformance suite as the durable redb store) plus at most one write in flight.
//!
//! The in-flight write is the current Ready's snapshot + entries + hard state, applied as
//! one atomic batch as `Ready` requires. It is invisible to readers until it completes
//! ("fsync returned"). A crash while a write is in flight either loses it or keeps it whole
//! (the write may have reached the platter before the power went): both must be safe, and
//! the simulator draws which. A write the store refuses (a gap, a term going back, a
//! committed entry rewritten) is a core contract breach and fails the run.
//!
//! The shell side (`begin_write`, `complete_write`, `crash`, `install_local_snapshot`) is
//! used by the harnesses; the core sees only [`Storage`]. As a [`LogStore`] (a write is
//! begun and completed at once) it passes the storage conformance suite.

use std::sync::{Arc, Mutex, MutexGuard};

use mlcp::raft::{Entry, HardState, InitialState, LogIndex, Snapshot, Storage, StorageError, Term};
use mlcp::storage::{LogStore, MemStorage, WriteBatch};

/// A copy of what survives a crash, for the checkers.
#[derive(Clone, Debug, Default)]
pub struct Durable {
    /// Last durable term, vote and commit index.
    pub hard_state: HardState,
    /// Latest snapshot (index 0 when none).
    pub snapshot: Snapshot,
    /// Entries after the snapshot, contiguous from `snapshot.meta.index + 1`.
    pub entries: Vec<Entry>,
}

impl Durable {
    /// Index of the last entry (the snapshot index if there are none).
    pub fn last_index(&self) -> LogIndex {
        self.entries
            .last()
            .map_or(self.snapshot.meta.index, |e| e.index)
    }

    /// Index of the first stored entry.
    pub fn first_index(&self) -> LogIndex {
        self.snapshot.meta.index.next()
    }

    /// The entry at `index`, if stored.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let first = self.first_index();
        if index < first {
            return None;
        }
        self.entries.get((index.get() - first.get()) as usize)
    }

    /// Term at `index` (the snapshot's term at the snapshot index), if known.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.meta.index {
            return Some(self.snapshot.meta.term);
        }
        self.entry(index).map(|e| e.term)
    }
}

/// One Ready's writes, applied atomically when the write completes.
pub type Write = WriteBatch;

/// Why the shell could not carry out a write the core asked for (a core contract breach).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteError(pub String);

impl From<StorageError> for WriteError {
    fn from(e: StorageError) -> Self {
        WriteError(e.to_string())
    }
}

/// The disk itself.
#[derive(Debug, Default)]
pub struct Disk {
    /// What survives a crash.
    durable: MemStorage,
    /// The write in flight, if any.
    pending: Option<Write>,
}

/// Shared handle to a node's disk: the core reads through it, the harness writes through it.
#[derive(Clone, Debug, Default)]
pub struct SimStorage(Arc<Mutex<Disk>>);

impl SimStorage {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a write; it becomes visible (and durable) at [`SimStorage::complete_write`].
    pub fn begin_write(&self, write: Write) {
        let mut disk = self.disk();
        assert!(disk.pending.is_none(), "one write in flight at a time");
        disk.pending = Some(write);
    }

    /// Makes the write in flight durable. Returns it (for the checker) or why it is invalid.
    pub fn complete_write(&self) -> Result<Write, WriteError> {
        let mut disk = self.disk();
        let write = disk.pending.take().expect("a write in flight");
        disk.durable.write(&write)?;
        Ok(write)
    }

    /// Power loss: the write in flight is lost, unless `keep_pending` (it reached the disk).
    pub fn crash(&self, keep_pending: bool) -> Result<Option<Write>, WriteError> {
        let mut disk = self.disk();
        match disk.pending.take() {
            Some(write) if keep_pending => {
                disk.durable.write(&write)?;
                Ok(Some(write))
            }
            _ => Ok(None),
        }
    }

    /// Stores a snapshot the local state machine took and compacts the log through its index.
    /// The snapshot is written to a temporary name and renamed (atomic, durable at once).
    pub fn install_local_snapshot(&self, snapshot: Snapshot) {
        let disk = self.disk();
        assert!(
            disk.pending.is_none(),
            "local snapshot while a write is in flight"
        );
        let index = snapshot.meta.index;
        disk.durable
            .compact(snapshot)
            .unwrap_or_else(|e| panic!("local snapshot at index {index}: {e}"));
    }

    /// A copy of the durable state.
    pub fn durable(&self) -> Durable {
        let disk = self.disk();
        let d = &disk.durable;
        let read = || -> Result<Durable, StorageError> {
            let last = d.last_index()?;
            Ok(Durable {
                hard_state: d.initial_state()?.hard_state,
                snapshot: d.snapshot()?,
                entries: d.entries(d.first_index()?, last.next(), u64::MAX)?,
            })
        };
        read().expect("the in-memory store reads what it holds")
    }

    /// The hard state of the write in flight, if it carries one.
    pub fn pending_hard_state(&self) -> Option<HardState> {
        self.disk().pending.as_ref().and_then(|w| w.hard_state)
    }

    /// The durable snapshot (index 0 when none).
    pub fn durable_snapshot(&self) -> Snapshot {
        self.disk().durable.snapshot().expect("in memory")
    }
}

impl Storage for SimStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        self.disk().durable.initial_state()
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.disk().durable.entries(low, high, max_bytes)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.disk().durable.term(index)
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        self.disk().durable.first_index()
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        self.disk().durable.last_index()
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.disk().durable.snapshot()
    }
}

impl LogStore for SimStorage {
    /// A write begun and completed at once (no crash in between).
    fn write(&self, batch: &WriteBatch) -> Result<(), StorageError> {
        let disk = self.disk();
        assert!(disk.pending.is_none(), "a write is in flight");
        disk.durable.write(batch)
    }

    fn compact(&self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.disk().durable.compact(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlcp::raft::EntryKind;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: vec![],
        }
    }

    #[test]
    fn unsynced_write_is_lost_on_crash_and_invisible_before() {
        let disk = SimStorage::default();
        disk.begin_write(Write {
            entries: vec![entry(1, 1), entry(2, 1)],
            ..Write::default()
        });
        assert_eq!(disk.last_index().unwrap(), LogIndex(0));
        disk.crash(false).unwrap();
        assert_eq!(disk.last_index().unwrap(), LogIndex(0));
        disk.begin_write(Write {
            entries: vec![entry(1, 1), entry(2, 1)],
            ..Write::default()
        });
        disk.complete_write().unwrap();
        disk.begin_write(Write {
            entries: vec![entry(2, 2)],
            ..Write::default()
        });
        disk.crash(true).unwrap();
        assert_eq!(disk.term(LogIndex(2)).unwrap(), Term(2));
        assert_eq!(disk.entries(LogIndex(1), LogIndex(3), 0).unwrap().len(), 1);
    }

    #[test]
    fn passes_the_storage_conformance_suite() {
        mlcp::storage::conformance::run_all(|old: Option<SimStorage>| old.unwrap_or_default());
    }

    #[test]
    fn local_snapshot_compacts() {
        let disk = SimStorage::default();
        disk.begin_write(Write {
            entries: (1..=5).map(|i| entry(i, 1)).collect(),
            ..Write::default()
        });
        disk.complete_write().unwrap();
        let mut snap = Snapshot::default();
        snap.meta.index = LogIndex(3);
        snap.meta.term = Term(1);
        disk.install_local_snapshot(snap);
        assert_eq!(disk.first_index().unwrap(), LogIndex(4));
        assert_eq!(disk.term(LogIndex(3)).unwrap(), Term(1));
        assert!(matches!(
            disk.term(LogIndex(2)),
            Err(StorageError::Compacted { .. })
        ));
        assert_eq!(disk.last_index().unwrap(), LogIndex(5));
    }
}
