//! The core's view of the log: what storage holds durably plus an in-memory "unstable" tail
//! (entries and possibly a snapshot received from the leader) that the shell has not yet
//! confirmed durable through [`crate::raft::RawNode::advance`].
//!
//! Invariants (checked with `assert!`):
//! - `applied <= committed <= last_index()`;
//! - `persisted <= last_index()` and every entry up to `persisted` is durable and equal to
//!   the entry this view returns;
//! - nothing at or below `committed` is ever truncated (Raft §5.3/§5.4: committed entries
//!   are never overwritten).

use super::storage::{Storage, StorageError};
use super::types::{Entry, LogIndex, Snapshot, Term};

/// Entries (and a snapshot) known to the core but not yet durable.
#[derive(Debug, Default)]
struct Unstable {
    /// A snapshot from the leader waiting to be persisted and restored.
    snapshot: Option<Snapshot>,
    /// Whether `snapshot` was already handed to the shell in a Ready.
    snapshot_handed: bool,
    /// Entries from `offset` on, contiguous.
    entries: Vec<Entry>,
    /// Index of `entries[0]` (or where the next entry goes when empty).
    offset: LogIndex,
}

/// Stable storage plus the unstable tail, with commit/apply/persist bookkeeping.
pub(crate) struct RaftLog<S: Storage> {
    pub(crate) storage: S,
    unstable: Unstable,
    /// Highest index known committed (§5.3).
    pub(crate) committed: LogIndex,
    /// Highest index handed to the shell to apply and confirmed by `advance`.
    pub(crate) applied: LogIndex,
    /// Highest index known durable locally and matching this log.
    pub(crate) persisted: LogIndex,
    /// Highest unstable index already handed out in a Ready.
    handed: LogIndex,
}

/// Panics on a storage error that is not "compacted"/"unavailable": the storage contract
/// says such an error makes the node inoperable.
fn fatal(err: StorageError) -> ! {
    panic!("raft: storage failed, node is inoperable: {err}")
}

impl<S: Storage> RaftLog<S> {
    /// A view over `storage`, whose durable commit index is `committed`.
    pub(crate) fn new(storage: S, committed: LogIndex) -> Result<Self, StorageError> {
        let first = storage.first_index()?;
        let last = storage.last_index()?;
        if committed > last {
            return Err(StorageError::Invalid(format!(
                "hard state commit index {committed} is past the last stored log index {last}"
            )));
        }
        let snapshot_index = first.prev();
        Ok(RaftLog {
            storage,
            unstable: Unstable {
                offset: last.next(),
                ..Unstable::default()
            },
            committed: committed.max(snapshot_index),
            applied: snapshot_index,
            persisted: last,
            handed: last,
        })
    }

    /// Index of the first entry still available (snapshot index + 1).
    pub(crate) fn first_index(&self) -> LogIndex {
        match &self.unstable.snapshot {
            Some(s) => s.meta.index.next(),
            None => self.storage.first_index().unwrap_or_else(|e| fatal(e)),
        }
    }

    /// Index of the last entry (stable or not).
    pub(crate) fn last_index(&self) -> LogIndex {
        if let Some(last) = self.unstable.entries.last() {
            return last.index;
        }
        match &self.unstable.snapshot {
            Some(s) => s.meta.index,
            None => self.storage.last_index().unwrap_or_else(|e| fatal(e)),
        }
    }

    /// Term of the last entry.
    pub(crate) fn last_term(&self) -> Term {
        self.term_or_zero(self.last_index())
    }

    /// Term of the entry at `index`; `Compacted`/`Unavailable` outside the log.
    pub(crate) fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if let Some(s) = &self.unstable.snapshot
            && index == s.meta.index
        {
            return Ok(s.meta.term);
        }
        if index >= self.unstable.offset {
            let pos = (index.0 - self.unstable.offset.0) as usize;
            if let Some(e) = self.unstable.entries.get(pos) {
                return Ok(e.term);
            }
            return Err(StorageError::Unavailable {
                index,
                last_index: self.last_index(),
            });
        }
        let first = self.first_index();
        if index < first.prev() {
            return Err(StorageError::Compacted {
                index,
                first_index: first,
            });
        }
        if self.unstable.snapshot.is_some() {
            // Below the unstable snapshot nothing is readable.
            return Err(StorageError::Compacted {
                index,
                first_index: first,
            });
        }
        match self.storage.term(index) {
            Ok(t) => Ok(t),
            Err(e @ (StorageError::Compacted { .. } | StorageError::Unavailable { .. })) => Err(e),
            Err(e) => fatal(e),
        }
    }

    /// Term at `index`, or `Term(0)` if the entry is compacted or missing.
    pub(crate) fn term_or_zero(&self, index: LogIndex) -> Term {
        self.term(index).unwrap_or(Term(0))
    }

    /// Whether the log holds an entry at `index` with `term` (the §5.3 consistency check).
    pub(crate) fn match_term(&self, index: LogIndex, term: Term) -> bool {
        self.term(index).map(|t| t == term).unwrap_or(false)
    }

    /// Whether a candidate whose log ends at (`last_term`, `last_index`) is at least as
    /// up to date as this log (§5.4.1).
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// Entries in `[low, high)`, at most `max_bytes` (but at least one entry).
    pub(crate) fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if low >= high {
            return Ok(Vec::new());
        }
        let first = self.first_index();
        if low < first {
            return Err(StorageError::Compacted {
                index: low,
                first_index: first,
            });
        }
        let last = self.last_index();
        assert!(
            high.0 <= last.0 + 1,
            "raft: entries [{low}, {high}) past last index {last}"
        );
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let off = self.unstable.offset;
        if low < off {
            let stable_high = high.min(off);
            out = match self.storage.entries(low, stable_high, max_bytes) {
                Ok(v) => v,
                Err(e @ StorageError::Compacted { .. }) => return Err(e),
                Err(e) => fatal(e),
            };
            assert!(
                !out.is_empty(),
                "raft: storage returned no entries for [{low}, {stable_high})"
            );
            for (i, e) in out.iter().enumerate() {
                assert_eq!(
                    e.index.0,
                    low.0 + i as u64,
                    "raft: storage entries not contiguous"
                );
            }
            bytes = out.iter().map(Entry::size_bytes).sum();
            if (out.len() as u64) < stable_high.0 - low.0 {
                return Ok(out); // storage stopped at max_bytes
            }
        }
        let from = low.max(off);
        if from < high {
            let start = (from.0 - off.0) as usize;
            let end = (high.0 - off.0) as usize;
            for e in &self.unstable.entries[start..end] {
                let size = e.size_bytes();
                if !out.is_empty() && bytes + size > max_bytes {
                    break;
                }
                bytes += size;
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    /// Largest index `<= index` whose term is `<= term` (fast back-off, §5.3). Stops at the
    /// first unreadable index and returns it.
    pub(crate) fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> LogIndex {
        let mut i = index;
        loop {
            match self.term(i) {
                Ok(t) if t > term && i.0 > 0 => i = i.prev(),
                _ => return i,
            }
        }
    }

    /// Appends `entries` (contiguous, first index `<= last_index() + 1`), truncating any
    /// conflicting suffix from `entries[0].index` on. Returns the new last index.
    pub(crate) fn append(&mut self, entries: Vec<Entry>) -> LogIndex {
        let Some(first) = entries.first().map(|e| e.index) else {
            return self.last_index();
        };
        assert!(
            first > self.committed,
            "raft: append at {first} would overwrite committed index {}",
            self.committed
        );
        assert!(
            first.0 <= self.last_index().0 + 1,
            "raft: append at {first} leaves a gap"
        );
        let u = &mut self.unstable;
        let end = LogIndex(u.offset.0 + u.entries.len() as u64);
        if first == end {
            u.entries.extend(entries);
        } else if first <= u.offset {
            u.offset = first;
            u.entries = entries;
        } else {
            u.entries.truncate((first.0 - u.offset.0) as usize);
            u.entries.extend(entries);
        }
        let truncated_to = first.prev();
        self.persisted = self.persisted.min(truncated_to);
        self.handed = self.handed.min(truncated_to);
        self.last_index()
    }

    /// The §5.3 receiver rule: if the entry at `prev_index` has `prev_term`, append the new
    /// part of `entries` (truncating only from the first real conflict, docs/failures.md C3) and
    /// commit up to `min(leader_commit, last new index)`. Returns the last index known to
    /// match the leader, or `None` on a consistency-check failure.
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        leader_commit: LogIndex,
        entries: Vec<Entry>,
    ) -> Option<LogIndex> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = LogIndex(prev_index.0 + entries.len() as u64);
        let conflict = entries
            .iter()
            .position(|e| !self.match_term(e.index, e.term));
        if let Some(pos) = conflict {
            let at = entries[pos].index;
            assert!(
                at > self.committed,
                "raft: entry at {at} conflicts with committed index {} (leader completeness violated)",
                self.committed
            );
            let mut entries = entries;
            self.append(entries.split_off(pos));
        }
        self.commit_to(leader_commit.min(last_new));
        Some(last_new)
    }

    /// Raises the commit index to `index` (never lowers it).
    pub(crate) fn commit_to(&mut self, index: LogIndex) {
        if index > self.committed {
            let last = self.last_index();
            assert!(
                index <= last,
                "raft: commit index {index} past last index {last}"
            );
            self.committed = index;
        }
    }

    /// Replaces the whole log with `snapshot` (a newer snapshot from the leader, §7).
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        assert!(
            index > self.committed,
            "raft: restoring stale snapshot {index}"
        );
        self.committed = index;
        self.persisted = LogIndex(0);
        self.handed = index;
        self.unstable = Unstable {
            snapshot: Some(snapshot),
            snapshot_handed: false,
            entries: Vec::new(),
            offset: index.next(),
        };
    }

    /// Whether there is an unstable snapshot or entries not yet handed to the shell.
    pub(crate) fn has_unhanded(&self) -> bool {
        (self.unstable.snapshot.is_some() && !self.unstable.snapshot_handed)
            || self
                .unstable
                .entries
                .last()
                .is_some_and(|e| e.index > self.handed)
    }

    /// Takes the unstable snapshot and entries not yet handed out.
    pub(crate) fn take_unhanded(&mut self) -> (Option<Snapshot>, Vec<Entry>) {
        let snap = match &self.unstable.snapshot {
            Some(s) if !self.unstable.snapshot_handed => {
                self.unstable.snapshot_handed = true;
                Some(s.clone())
            }
            _ => None,
        };
        let from = self.handed.next().max(self.unstable.offset);
        let start = (from.0 - self.unstable.offset.0) as usize;
        let entries = self
            .unstable
            .entries
            .get(start..)
            .map(<[Entry]>::to_vec)
            .unwrap_or_default();
        if let Some(last) = entries.last() {
            self.handed = last.index;
        }
        (snap, entries)
    }

    /// Entries `(index, term)` and before are durable: drop them from the unstable tail
    /// (unless the log changed under them since they were handed out).
    pub(crate) fn stable_to(&mut self, index: LogIndex, term: Term) {
        let u = &mut self.unstable;
        if index < u.offset {
            return;
        }
        let pos = (index.0 - u.offset.0) as usize;
        if u.entries.get(pos).is_some_and(|e| e.term == term) {
            u.entries.drain(..=pos);
            u.offset = index.next();
            self.persisted = self.persisted.max(index);
        }
    }

    /// The unstable snapshot at `index` is durable.
    pub(crate) fn stable_snapshot(&mut self, index: LogIndex) {
        if self
            .unstable
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.index == index)
        {
            self.unstable.snapshot = None;
            self.unstable.snapshot_handed = false;
            if self.unstable.entries.is_empty() {
                self.persisted = self.persisted.max(index);
            }
            self.persisted = self.persisted.max(index);
        }
    }

    /// Index of the unstable snapshot, if one is pending.
    pub(crate) fn pending_snapshot_index(&self) -> Option<LogIndex> {
        self.unstable.snapshot.as_ref().map(|s| s.meta.index)
    }

    /// Committed entries after `applied`, at most `max_bytes` (at least one). Entries are
    /// handed out even when not yet durable locally: they are in the same Ready's `entries`
    /// (or an earlier one), which the shell persists before applying.
    pub(crate) fn next_committed(&self, max_bytes: u64) -> Vec<Entry> {
        let from = self
            .applied
            .max(self.pending_snapshot_index().unwrap_or(LogIndex(0)))
            .next();
        if from > self.committed {
            return Vec::new();
        }
        self.entries(from, self.committed.next(), max_bytes)
            .unwrap_or_else(|e| fatal(e))
    }

    /// Whether committed entries wait to be applied.
    pub(crate) fn has_next_committed(&self) -> bool {
        let floor = self
            .applied
            .max(self.pending_snapshot_index().unwrap_or(LogIndex(0)));
        self.committed > floor
    }
}
