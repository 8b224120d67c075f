//! The one in-memory log store: the same rules as the durable store, no durability. Tests,
//! benchmarks, the Raft core's own tests and the simulator's crashing disk all build on it.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::check::{self, ByteBudget, LogView};
use super::{LogStore, WriteBatch};
use crate::raft::{
    Entry, HardState, InitialState, LogIndex, Ready, Snapshot, Storage, StorageError, Term,
};

#[derive(Debug, Default)]
struct MemState {
    hard_state: HardState,
    snapshot: Snapshot,
    /// Contiguous; `entries[0].index == snapshot.meta.index + 1` when not empty.
    entries: Vec<Entry>,
}

impl MemState {
    fn last_index(&self) -> LogIndex {
        self.entries
            .last()
            .map_or(self.snapshot.meta.index, |e| e.index)
    }

    /// Position of `index` in `entries`; the caller has checked it is stored.
    fn offset(&self, index: LogIndex) -> usize {
        usize::try_from(index.get() - self.snapshot.meta.index.get() - 1)
            .expect("log offset fits in usize")
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        check::check_term_index(index, self.snapshot.meta.index, self.last_index())?;
        if index == self.snapshot.meta.index {
            return Ok(self.snapshot.meta.term);
        }
        Ok(self.entries[self.offset(index)].term)
    }

    fn view(&self) -> LogView<'_> {
        LogView {
            snapshot: &self.snapshot.meta,
            last_index: self.last_index(),
            hard_state: self.hard_state,
        }
    }
}

/// A [`LogStore`] that keeps everything in memory behind a `RwLock`.
///
/// It applies the same write rules as [`super::RedbStore`] (and passes the same
/// conformance suite), so tests that use it exercise real storage behaviour minus the disk.
/// "Durable" here means "visible to every later read of this value": a `MemStorage` survives
/// nothing, not even being dropped. Share it between a core and a writer with
/// `Arc<MemStorage>`.
#[derive(Debug, Default)]
pub struct MemStorage {
    state: RwLock<MemState>,
}

impl MemStorage {
    /// An empty store: `first_index() == 1`, `last_index() == 0`, default hard state, no
    /// snapshot.
    pub fn new() -> Self {
        MemStorage::default()
    }

    /// A store holding `snapshot` (as if compacted to it), then `entries`, then
    /// `hard_state` — the state a node would restart from.
    ///
    /// # Errors
    /// [`StorageError::Invalid`] if the parts break a rule of [`LogStore::write`] (for
    /// example entries not contiguous from `snapshot.meta.index + 1`).
    pub fn from_parts(
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
        hard_state: HardState,
    ) -> Result<Self, StorageError> {
        let store = MemStorage::new();
        store.write(&WriteBatch {
            snapshot,
            entries,
            hard_state: Some(hard_state),
        })?;
        Ok(store)
    }

    /// Step 1 of a [`Ready`] in one write: its snapshot, entries and hard state — what a
    /// shell does before sending `persisted_messages`. For tests and benchmarks that drive a
    /// [`crate::raft::RawNode`] by hand.
    ///
    /// Panics if the store refuses the write: the core asked for something no store may do.
    pub fn persist(&self, rd: &Ready) {
        let batch = WriteBatch {
            snapshot: rd.snapshot.clone(),
            entries: rd.entries.clone(),
            hard_state: rd.hard_state,
        };
        if let Err(e) = self.write(&batch) {
            panic!("the core asked for a write no store may make: {e}");
        }
    }

    /// Every stored entry after the snapshot, in order.
    pub fn all_entries(&self) -> Vec<Entry> {
        self.read().entries.clone()
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> HardState {
        self.read().hard_state
    }

    fn read(&self) -> RwLockReadGuard<'_, MemState> {
        // A panic while holding the lock leaves the state consistent (every mutation is
        // planned first and then applied without a fallible step), so poisoning is ignored.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, MemState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        let s = self.read();
        Ok(InitialState {
            hard_state: s.hard_state,
            snapshot_membership: (s.snapshot.meta.index > LogIndex(0))
                .then(|| s.snapshot.meta.membership.clone()),
        })
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let s = self.read();
        check::check_range(low, high, s.snapshot.meta.index.next(), s.last_index())?;
        if low == high {
            return Ok(Vec::new());
        }
        let mut budget = ByteBudget::new(max_bytes);
        Ok(s.entries[s.offset(low)..s.offset(high)]
            .iter()
            .take_while(|e| budget.admit(e))
            .cloned()
            .collect())
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.read().term(index)
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.read().snapshot.meta.index.next())
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.read().last_index())
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.read().snapshot.clone())
    }
}

impl LogStore for MemStorage {
    /// Applies `batch` under the write lock: readers see all of it or none of it.
    ///
    /// # Errors
    /// [`StorageError::Invalid`] if the batch breaks a write rule (gap, terms going back, a
    /// committed entry rewritten, the hard-state term or vote going back, an older
    /// snapshot); nothing is changed then.
    fn write(&self, batch: &WriteBatch) -> Result<(), StorageError> {
        let mut s = self.write_lock();
        let plan = check::plan_write(&s.view(), |i| s.term(i), batch)?;
        if plan.install_snapshot {
            let snap = batch
                .snapshot
                .clone()
                .expect("plan installs only a given snapshot");
            s.entries.clear();
            s.snapshot = snap;
        }
        if let Some(from) = plan.truncate_from {
            let offset = s.offset(from);
            s.entries.truncate(offset);
        }
        s.entries.extend_from_slice(plan.append);
        if let Some(hs) = batch.hard_state {
            s.hard_state = hs;
        }
        Ok(())
    }

    /// Makes `snapshot` the latest and drops entries up to its index.
    ///
    /// # Errors
    /// [`StorageError::Compacted`] if the stored snapshot is at or past `snapshot.meta.index`;
    /// [`StorageError::Unavailable`] if that index is not stored; [`StorageError::Invalid`]
    /// if the stored entry there has another term.
    fn compact(&self, snapshot: Snapshot) -> Result<(), StorageError> {
        let mut s = self.write_lock();
        check::check_compact(&s.view(), |i| s.term(i), &snapshot.meta)?;
        let keep_from = s.offset(snapshot.meta.index.next());
        s.entries.drain(..keep_from);
        s.snapshot = snapshot;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{EntryKind, Membership, NodeId, SnapshotMeta};

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: vec![index as u8],
        }
    }

    #[test]
    fn passes_the_conformance_suite() {
        crate::storage::conformance::run_all(|old: Option<MemStorage>| old.unwrap_or_default());
    }

    #[test]
    fn truncates_conflicting_suffix_and_appends_in_one_write() {
        let s = MemStorage::new();
        s.write(&WriteBatch {
            entries: (1..=5).map(|i| entry(i, 1)).collect(),
            ..Default::default()
        })
        .unwrap();
        s.write(&WriteBatch {
            entries: vec![entry(3, 2), entry(4, 2)],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.last_index().unwrap(), LogIndex(4));
        assert_eq!(s.term(LogIndex(2)).unwrap(), Term(1));
        assert_eq!(s.term(LogIndex(3)).unwrap(), Term(2));
    }

    #[test]
    fn snapshot_then_entries_in_one_batch() {
        let meta = SnapshotMeta {
            index: LogIndex(10),
            term: Term(3),
            membership: Membership::with_voters([NodeId(1)]),
        };
        let s = MemStorage::from_parts(
            Some(Snapshot {
                meta: meta.clone(),
                data: b"state".to_vec(),
            }),
            vec![entry(11, 3)],
            HardState {
                term: Term(3),
                vote: None,
                commit: LogIndex(10),
            },
        )
        .unwrap();
        assert_eq!(s.first_index().unwrap(), LogIndex(11));
        assert_eq!(s.term(LogIndex(10)).unwrap(), Term(3));
        assert_eq!(
            s.initial_state().unwrap().snapshot_membership,
            Some(meta.membership)
        );
    }
}
