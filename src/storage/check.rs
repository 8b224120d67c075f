//! Rules every store applies before it writes, shared so that `MemStorage` and `RedbStore`
//! refuse exactly the same batches. These are the write-path assertions of Raft's storage
//! invariants: a store that accepted a batch breaking them would turn a core bug into a
//! silently corrupted log, so they are refused with [`StorageError::Invalid`] instead.

use super::WriteBatch;
use crate::raft::{Entry, HardState, LogIndex, SnapshotMeta, StorageError, Term};

/// What a store holds, as far as the rules need it.
pub(crate) struct LogView<'a> {
    pub snapshot: &'a SnapshotMeta,
    pub last_index: LogIndex,
    pub hard_state: HardState,
}

/// How to apply a batch that passed the rules, in this order.
#[derive(Debug)]
pub(crate) struct WritePlan<'a> {
    /// Drop every entry and make the batch's snapshot the latest.
    pub install_snapshot: bool,
    /// Remove stored entries from this index on before appending.
    pub truncate_from: Option<LogIndex>,
    /// Entries to append (those already covered by the snapshot are trimmed off).
    pub append: &'a [Entry],
}

fn invalid(msg: String) -> StorageError {
    StorageError::Invalid(msg)
}

/// Checks `batch` against the stored log; `term_at` answers for indexes in
/// `snapshot.index ..= last_index` of the stored (pre-batch) log.
pub(crate) fn plan_write<'a>(
    view: &LogView<'_>,
    term_at: impl Fn(LogIndex) -> Result<Term, StorageError>,
    batch: &'a WriteBatch,
) -> Result<WritePlan<'a>, StorageError> {
    if let Some(hs) = &batch.hard_state {
        check_hard_state(&view.hard_state, hs)?;
    }
    let mut snap_index = view.snapshot.index;
    let mut snap_term = view.snapshot.term;
    let mut last_index = view.last_index;
    if let Some(snap) = &batch.snapshot {
        let meta = &snap.meta;
        if meta.index == LogIndex(0) {
            return Err(invalid("received snapshot has index 0".into()));
        }
        if meta.index < view.snapshot.index {
            return Err(invalid(format!(
                "received snapshot at index {} is older than the stored snapshot at index {}",
                meta.index, view.snapshot.index
            )));
        }
        if meta.index < view.hard_state.commit {
            return Err(invalid(format!(
                "received snapshot at index {} would drop entries up to the stored commit index {}",
                meta.index, view.hard_state.commit
            )));
        }
        snap_index = meta.index;
        snap_term = meta.term;
        last_index = meta.index;
    }
    check_batch_shape(&batch.entries)?;
    // Entries at or below the snapshot are committed and already in it; only the one at the
    // snapshot index itself can be compared (its term must be the snapshot's).
    let skip = batch
        .entries
        .iter()
        .take_while(|e| e.index <= snap_index)
        .count();
    if let Some(at_snap) = batch.entries[..skip]
        .last()
        .filter(|e| e.index == snap_index)
        && at_snap.term != snap_term
    {
        return Err(invalid(format!(
            "entry at snapshot index {snap_index} has term {}, the snapshot has term {snap_term}",
            at_snap.term
        )));
    }
    let append = &batch.entries[skip..];
    let Some(first) = append.first() else {
        return Ok(WritePlan {
            install_snapshot: batch.snapshot.is_some(),
            truncate_from: None,
            append,
        });
    };
    if first.index > last_index.next() {
        return Err(invalid(format!(
            "append at index {} would leave a gap after last index {last_index}",
            first.index
        )));
    }
    let term_before = |index: LogIndex| {
        if index == snap_index {
            Ok(snap_term)
        } else {
            term_at(index)
        }
    };
    let prev_term = term_before(first.index.prev())?;
    if first.term < prev_term {
        return Err(invalid(format!(
            "entry {} has term {}, below term {prev_term} of the entry before it",
            first.index, first.term
        )));
    }
    // A committed entry may be rewritten only with itself (Raft's Log Matching property).
    let committed_end = view.hard_state.commit.min(last_index);
    for e in append.iter().take_while(|e| e.index <= committed_end) {
        let stored = term_at(e.index)?;
        if stored != e.term {
            return Err(invalid(format!(
                "append would replace committed entry {} (term {stored}) with term {}",
                e.index, e.term
            )));
        }
    }
    Ok(WritePlan {
        install_snapshot: batch.snapshot.is_some(),
        truncate_from: (first.index <= last_index).then_some(first.index),
        append,
    })
}

/// Entries in one batch must be contiguous with non-decreasing terms.
fn check_batch_shape(entries: &[Entry]) -> Result<(), StorageError> {
    for pair in entries.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.index != a.index.next() {
            return Err(invalid(format!(
                "batch entries are not contiguous: index {} follows index {}",
                b.index, a.index
            )));
        }
        if b.term < a.term {
            return Err(invalid(format!(
                "batch entry {} has term {}, below term {} of entry {}",
                b.index, b.term, a.term, a.index
            )));
        }
    }
    if entries.first().is_some_and(|e| e.index == LogIndex(0)) {
        return Err(invalid("batch entry has index 0".into()));
    }
    Ok(())
}

/// The term never goes back, a vote once cast in a term is never changed (Raft §5.2,
/// docs/failures.md C2), and the commit index never goes back.
fn check_hard_state(stored: &HardState, new: &HardState) -> Result<(), StorageError> {
    if new.term < stored.term {
        return Err(invalid(format!(
            "hard state term would go back from {} to {}",
            stored.term, new.term
        )));
    }
    if new.term == stored.term
        && let Some(voted) = stored.vote
        && new.vote != Some(voted)
    {
        return Err(invalid(format!(
            "hard state would change the vote of term {} from node {voted} to {:?}",
            stored.term, new.vote
        )));
    }
    if new.commit < stored.commit {
        return Err(invalid(format!(
            "hard state commit index would go back from {} to {}",
            stored.commit, new.commit
        )));
    }
    Ok(())
}

/// Checks a compaction request: the snapshot must be newer than the stored one, its index
/// stored, and its term the stored term at that index.
pub(crate) fn check_compact(
    view: &LogView<'_>,
    term_at: impl Fn(LogIndex) -> Result<Term, StorageError>,
    meta: &SnapshotMeta,
) -> Result<(), StorageError> {
    if meta.index <= view.snapshot.index {
        return Err(StorageError::Compacted {
            index: meta.index,
            first_index: view.snapshot.index.next(),
        });
    }
    if meta.index > view.last_index {
        return Err(StorageError::Unavailable {
            index: meta.index,
            last_index: view.last_index,
        });
    }
    let stored = term_at(meta.index)?;
    if stored != meta.term {
        return Err(invalid(format!(
            "snapshot at index {} claims term {}, the stored entry has term {stored}",
            meta.index, meta.term
        )));
    }
    Ok(())
}

/// Checks an `entries(low, high)` request against `first ..= last`.
pub(crate) fn check_range(
    low: LogIndex,
    high: LogIndex,
    first_index: LogIndex,
    last_index: LogIndex,
) -> Result<(), StorageError> {
    if low > high {
        return Err(invalid(format!(
            "entries range is reversed: low {low} > high {high}"
        )));
    }
    if low < first_index {
        return Err(StorageError::Compacted {
            index: low,
            first_index,
        });
    }
    if high > last_index.next() {
        return Err(StorageError::Unavailable {
            index: high.prev(),
            last_index,
        });
    }
    Ok(())
}

/// Checks a `term(index)` request against the snapshot and last index.
pub(crate) fn check_term_index(
    index: LogIndex,
    snapshot_index: LogIndex,
    last_index: LogIndex,
) -> Result<(), StorageError> {
    if index < snapshot_index {
        return Err(StorageError::Compacted {
            index,
            first_index: snapshot_index.next(),
        });
    }
    if index > last_index {
        return Err(StorageError::Unavailable { index, last_index });
    }
    Ok(())
}

/// Accumulates entries while their total [`Entry::size_bytes`] stays within `max_bytes`,
/// always taking the first one.
pub(crate) struct ByteBudget {
    max_bytes: u64,
    used_bytes: u64,
    taken: usize,
}

impl ByteBudget {
    pub(crate) fn new(max_bytes: u64) -> Self {
        ByteBudget {
            max_bytes,
            used_bytes: 0,
            taken: 0,
        }
    }

    /// Whether `entry` fits; if so it is counted.
    pub(crate) fn admit(&mut self, entry: &Entry) -> bool {
        let next = self.used_bytes.saturating_add(entry.size_bytes());
        if self.taken > 0 && next > self.max_bytes {
            return false;
        }
        self.used_bytes = next;
        self.taken += 1;
        true
    }
}
