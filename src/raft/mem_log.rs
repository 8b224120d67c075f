//! [`MemLog`]: a small in-memory [`Storage`] for the core's own tests, doctests and
//! benchmarks. It is not the production store (see `crate::storage`); it keeps everything in
//! a `Vec` behind a mutex and "persists" instantly.

use std::sync::{Arc, Mutex, MutexGuard};

use super::node::Ready;
use super::storage::{InitialState, Storage, StorageError};
use super::types::{Entry, HardState, LogIndex, Snapshot, Term};

#[derive(Debug, Default)]
struct Inner {
    hard_state: HardState,
    snapshot: Snapshot,
    /// Entries after the snapshot, contiguous from `snapshot.meta.index + 1`.
    entries: Vec<Entry>,
}

/// An in-memory log shared between a [`crate::raft::RawNode`] (reads) and its test driver
/// (writes). Cloning gives another handle to the same log.
#[derive(Clone, Debug, Default)]
pub struct MemLog {
    inner: Arc<Mutex<Inner>>,
}

impl MemLog {
    /// An empty log.
    pub fn new() -> MemLog {
        MemLog::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("MemLog mutex poisoned")
    }

    /// Performs step 1 of a [`Ready`]: stores its snapshot, entries and hard state.
    pub fn persist(&self, rd: &Ready) {
        if let Some(s) = &rd.snapshot {
            self.apply_snapshot(s.clone());
        }
        self.append(&rd.entries);
        if let Some(hs) = rd.hard_state {
            self.lock().hard_state = hs;
        }
    }

    /// Appends `entries`, first truncating any stored suffix from `entries[0].index` on.
    ///
    /// Panics if the entries would leave a gap or overwrite the snapshot.
    pub fn append(&self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let mut g = self.lock();
        let base = g.snapshot.meta.index.0;
        assert!(
            first.index.0 > base,
            "MemLog: append at {} overwrites snapshot {base}",
            first.index
        );
        let keep = (first.index.0 - base - 1) as usize;
        assert!(
            keep <= g.entries.len(),
            "MemLog: append at {} leaves a gap",
            first.index
        );
        g.entries.truncate(keep);
        g.entries.extend_from_slice(entries);
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub fn apply_snapshot(&self, snapshot: Snapshot) {
        let mut g = self.lock();
        g.entries.clear();
        if g.hard_state.commit < snapshot.meta.index {
            g.hard_state.commit = snapshot.meta.index;
        }
        g.snapshot = snapshot;
    }

    /// Installs a snapshot the local state machine took and drops entries up to its index.
    ///
    /// Panics if `snapshot.meta.index` is not stored.
    pub fn compact(&self, snapshot: Snapshot) {
        let mut g = self.lock();
        let base = g.snapshot.meta.index.0;
        let index = snapshot.meta.index.0;
        if index <= base {
            return;
        }
        let drop = (index - base) as usize;
        assert!(
            drop <= g.entries.len(),
            "MemLog: compact to {index} past last entry"
        );
        g.entries.drain(..drop);
        g.snapshot = snapshot;
    }

    /// Replaces everything with `snapshot` (bootstrapping a store for tests).
    pub fn compact_fresh(&self, snapshot: Snapshot) {
        let mut g = self.lock();
        g.entries.clear();
        g.hard_state.commit = g.hard_state.commit.max(snapshot.meta.index);
        g.snapshot = snapshot;
    }

    /// Overwrites the stored hard state (tests).
    pub fn set_hard_state(&self, hs: HardState) {
        self.lock().hard_state = hs;
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> HardState {
        self.lock().hard_state
    }

    /// Every stored entry after the snapshot.
    pub fn all_entries(&self) -> Vec<Entry> {
        self.lock().entries.clone()
    }
}

impl Storage for MemLog {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        let g = self.lock();
        let snapshot_membership =
            (g.snapshot.meta.index.0 > 0).then(|| g.snapshot.meta.membership.clone());
        Ok(InitialState {
            hard_state: g.hard_state,
            snapshot_membership,
        })
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let g = self.lock();
        let base = g.snapshot.meta.index.0;
        let last = LogIndex(base + g.entries.len() as u64);
        if low.0 <= base {
            return Err(StorageError::Compacted {
                index: low,
                first_index: LogIndex(base + 1),
            });
        }
        if high.0 > last.0 + 1 {
            return Err(StorageError::Unavailable {
                index: high.prev(),
                last_index: last,
            });
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in &g.entries[(low.0 - base - 1) as usize..(high.0 - base - 1) as usize] {
            if !out.is_empty() && bytes + e.size_bytes() > max_bytes {
                break;
            }
            bytes += e.size_bytes();
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let g = self.lock();
        let base = g.snapshot.meta.index.0;
        if index.0 < base {
            return Err(StorageError::Compacted {
                index,
                first_index: LogIndex(base + 1),
            });
        }
        if index.0 == base {
            return Ok(g.snapshot.meta.term);
        }
        match g.entries.get((index.0 - base - 1) as usize) {
            Some(e) => Ok(e.term),
            None => Err(StorageError::Unavailable {
                index,
                last_index: LogIndex(base + g.entries.len() as u64),
            }),
        }
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        Ok(LogIndex(self.lock().snapshot.meta.index.0 + 1))
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        let g = self.lock();
        Ok(LogIndex(g.snapshot.meta.index.0 + g.entries.len() as u64))
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.lock().snapshot.clone())
    }
}
