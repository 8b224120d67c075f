//! A simulated disk that implements the core's read-only [`Storage`] trait.
//!
//! The disk has a durable part and at most one write in flight (the current Ready's
//! snapshot + entries + hard state, written as one atomic batch as `Ready` requires). A write
//! in flight is invisible to readers until it completes ("fsync returned"). A crash while a
//! write is in flight either loses it or keeps it whole (the write may have reached the
//! platter before the power went): both must be safe, and the simulator draws which.
//!
//! The shell side (`begin_write`, `complete_write`, `crash`, `install_local_snapshot`) is
//! used by the cluster harness; the core sees only [`Storage`].

use std::cell::RefCell;
use std::rc::Rc;

use mlcp::raft::{Entry, HardState, InitialState, LogIndex, Snapshot, Storage, StorageError, Term};

/// The state that survives a crash.
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
#[derive(Clone, Debug, Default)]
pub struct Write {
    /// Hard state to store.
    pub hard_state: Option<HardState>,
    /// Snapshot received from a leader: replaces the snapshot and discards the whole log.
    pub snapshot: Option<Snapshot>,
    /// Entries to append after truncating any stored suffix from `entries[0].index`.
    pub entries: Vec<Entry>,
}

/// Why the shell could not carry out a write the core asked for (a core contract breach).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteError(pub String);

/// The disk itself.
#[derive(Debug, Default)]
pub struct Disk {
    /// What survives a crash.
    pub durable: Durable,
    /// The write in flight, if any.
    pub pending: Option<Write>,
}

/// Shared handle to a node's disk: the core reads through it, the harness writes through it.
#[derive(Clone, Debug, Default)]
pub struct SimStorage(pub Rc<RefCell<Disk>>);

impl SimStorage {
    /// Starts a write; it becomes visible (and durable) at [`SimStorage::complete_write`].
    pub fn begin_write(&self, write: Write) {
        let mut disk = self.0.borrow_mut();
        assert!(disk.pending.is_none(), "one write in flight at a time");
        disk.pending = Some(write);
    }

    /// Makes the write in flight durable. Returns it (for the checker) or why it is invalid.
    pub fn complete_write(&self) -> Result<Write, WriteError> {
        let mut disk = self.0.borrow_mut();
        let write = disk.pending.take().expect("a write in flight");
        apply_write(&mut disk.durable, &write)?;
        Ok(write)
    }

    /// Power loss: the write in flight is lost, unless `keep_pending` (it reached the disk).
    pub fn crash(&self, keep_pending: bool) -> Result<Option<Write>, WriteError> {
        let pending = self.0.borrow_mut().pending.take();
        match pending {
            Some(write) if keep_pending => {
                apply_write(&mut self.0.borrow_mut().durable, &write)?;
                Ok(Some(write))
            }
            _ => Ok(None),
        }
    }

    /// Stores a snapshot the local state machine took and compacts the log through its index.
    /// The snapshot is written to a temporary name and renamed (atomic, durable at once).
    pub fn install_local_snapshot(&self, snapshot: Snapshot) {
        let mut disk = self.0.borrow_mut();
        assert!(
            disk.pending.is_none(),
            "local snapshot while a write is in flight"
        );
        let d = &mut disk.durable;
        let index = snapshot.meta.index;
        assert!(
            index > d.snapshot.meta.index && index <= d.last_index(),
            "local snapshot index"
        );
        let keep_from = (index.get() + 1 - d.first_index().get()) as usize;
        d.entries.drain(..keep_from);
        d.snapshot = snapshot;
    }

    /// A copy of the durable state.
    pub fn durable(&self) -> Durable {
        self.0.borrow().durable.clone()
    }
}

fn apply_write(d: &mut Durable, write: &Write) -> Result<(), WriteError> {
    if let Some(snapshot) = &write.snapshot {
        if snapshot.meta.index <= d.snapshot.meta.index {
            return Err(WriteError(format!(
                "snapshot at index {} does not advance the stored snapshot at {}",
                snapshot.meta.index, d.snapshot.meta.index
            )));
        }
        d.snapshot = snapshot.clone();
        d.entries.clear();
    }
    let mut expected = None;
    for entry in &write.entries {
        if let Some(prev) = expected
            && entry.index != prev
        {
            return Err(WriteError(format!(
                "entries not contiguous at index {}",
                entry.index
            )));
        }
        expected = Some(entry.index.next());
        if entry.index <= d.snapshot.meta.index {
            // Already covered by the snapshot (and so committed); the checker compares it.
            continue;
        }
        if entry.index > d.last_index().next() {
            return Err(WriteError(format!(
                "append at index {} leaves a hole after last index {}",
                entry.index,
                d.last_index()
            )));
        }
        let keep = (entry.index.get() - d.first_index().get()) as usize;
        d.entries.truncate(keep);
        d.entries.push(entry.clone());
    }
    if let Some(hs) = write.hard_state {
        d.hard_state = hs;
    }
    if write.snapshot.is_some() {
        // A snapshot from the leader is committed through its index.
        d.hard_state.commit = d.hard_state.commit.max(d.snapshot.meta.index);
    }
    Ok(())
}

impl Storage for SimStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        let disk = self.0.borrow();
        let d = &disk.durable;
        Ok(InitialState {
            hard_state: d.hard_state,
            snapshot_membership: (d.snapshot.meta.index > LogIndex(0))
                .then(|| d.snapshot.meta.membership.clone()),
        })
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let disk = self.0.borrow();
        let d = &disk.durable;
        if low < d.first_index() {
            return Err(StorageError::Compacted {
                index: low,
                first_index: d.first_index(),
            });
        }
        if high > d.last_index().next() {
            return Err(StorageError::Unavailable {
                index: high.prev(),
                last_index: d.last_index(),
            });
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut index = low;
        while index < high {
            let entry = d.entry(index).expect("contiguous log");
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
            index = index.next();
        }
        Ok(out)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let disk = self.0.borrow();
        let d = &disk.durable;
        if index < d.snapshot.meta.index {
            return Err(StorageError::Compacted {
                index,
                first_index: d.first_index(),
            });
        }
        d.term_at(index).ok_or(StorageError::Unavailable {
            index,
            last_index: d.last_index(),
        })
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.0.borrow().durable.first_index())
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.0.borrow().durable.last_index())
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.0.borrow().durable.snapshot.clone())
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
