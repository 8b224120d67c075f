//! The storage conformance suite: every [`LogStore`] must pass it (the contract of
//! [`crate::raft::Storage`] and [`LogStore`], made executable).
//!
//! Each case is a `pub fn` taking a *factory*: a closure called with `None` for a new, empty
//! store, and with `Some(store)` to close that store and open it again from what is durable
//! (an in-memory store just returns it). Cases panic with a message naming what broke.
//!
//! ```
//! use mlcp::storage::{MemStorage, conformance};
//! conformance::run_all(|old: Option<MemStorage>| old.unwrap_or_default());
//! ```
//!
//! For a durable store, keep the directories alive in the closure:
//! ```no_run
//! use mlcp::storage::{RedbStore, conformance};
//! let mut dirs = Vec::new();
//! conformance::run_all(move |old: Option<RedbStore>| match old {
//!     None => {
//!         let dir = tempfile::tempdir().unwrap();
//!         let store = RedbStore::open(dir.path()).unwrap();
//!         dirs.push(dir);
//!         store
//!     }
//!     Some(store) => {
//!         let path = store.dir().to_owned();
//!         drop(store);
//!         RedbStore::open(&path).unwrap()
//!     }
//! });
//! ```

use super::{LogStore, WriteBatch};
use crate::raft::{
    Entry, EntryKind, HardState, InitialState, LogIndex, Membership, NodeId, Snapshot,
    SnapshotMeta, StorageError, Term,
};

/// Runs every case in order, printing each name to stderr first so a failure is located.
pub fn run_all<S: LogStore>(mut factory: impl FnMut(Option<S>) -> S) {
    type Case<F> = (&'static str, fn(&mut F));
    let cases: &[Case<_>] = &[
        ("empty_store", empty_store),
        ("empty_batch_is_a_no_op", empty_batch_is_a_no_op),
        ("append_and_read", append_and_read),
        (
            "append_refuses_gaps_and_disorder",
            append_refuses_gaps_and_disorder,
        ),
        (
            "truncate_conflicting_suffix_with_append",
            truncate_conflicting_suffix_with_append,
        ),
        (
            "committed_entries_are_never_rewritten",
            committed_entries_are_never_rewritten,
        ),
        (
            "hard_state_round_trip_and_rules",
            hard_state_round_trip_and_rules,
        ),
        (
            "one_batch_holds_entries_and_hard_state",
            one_batch_holds_entries_and_hard_state,
        ),
        (
            "snapshot_install_replaces_the_log",
            snapshot_install_replaces_the_log,
        ),
        ("snapshot_install_rules", snapshot_install_rules),
        ("compact_drops_the_prefix", compact_drops_the_prefix),
        ("compact_rules", compact_rules),
        ("entries_respects_max_bytes", entries_respects_max_bytes),
        ("range_errors", range_errors),
        ("reopen_keeps_every_write", reopen_keeps_every_write),
    ];
    for (name, case) in cases {
        eprintln!("storage conformance: {name}");
        case(&mut factory);
    }
}

/// An entry whose payload names its index and term, so a mix-up shows in a diff.
pub fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        kind: if index.is_multiple_of(7) {
            EntryKind::ConfChange
        } else {
            EntryKind::Normal
        },
        data: format!("i{index}t{term}").into_bytes(),
    }
}

fn entries_with_terms(first: u64, terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .zip(first..)
        .map(|(&t, i)| entry(i, t))
        .collect()
}

fn append(store: &impl LogStore, entries: Vec<Entry>) {
    store
        .write(&WriteBatch {
            entries,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("append failed: {e}"));
}

fn hard_state(term: u64, vote: Option<u64>, commit: u64) -> HardState {
    HardState {
        term: Term(term),
        vote: vote.map(NodeId),
        commit: LogIndex(commit),
    }
}

fn set_hard_state(store: &impl LogStore, hs: HardState) -> Result<(), StorageError> {
    store.write(&WriteBatch {
        hard_state: Some(hs),
        ..Default::default()
    })
}

fn snapshot(index: u64, term: u64, data: &[u8]) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(index),
            term: Term(term),
            membership: Membership {
                voters: [NodeId(1), NodeId(2), NodeId(3)].into(),
                learners: [NodeId(4)].into(),
            },
        },
        data: data.to_vec(),
    }
}

/// Everything a store shows through the read API, for before/after comparisons.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    first: LogIndex,
    last: LogIndex,
    /// `term(i)` for `first - 1 ..= last`.
    terms: Vec<Term>,
    entries: Vec<Entry>,
    initial: InitialState,
    snapshot: Snapshot,
}

fn observe(store: &impl LogStore) -> Observed {
    let first = store.first_index().expect("first_index");
    let last = store.last_index().expect("last_index");
    let terms = (first.prev().get()..=last.get())
        .map(|i| {
            store
                .term(LogIndex(i))
                .unwrap_or_else(|e| panic!("term({i}): {e}"))
        })
        .collect();
    let entries = store
        .entries(first, last.next(), u64::MAX)
        .expect("entries(first, last + 1)");
    Observed {
        first,
        last,
        terms,
        entries,
        initial: store.initial_state().expect("initial_state"),
        snapshot: store.snapshot().expect("snapshot"),
    }
}

#[track_caller]
fn assert_invalid(result: Result<(), StorageError>, what: &str) {
    match result {
        Err(StorageError::Invalid(_)) => {}
        other => panic!("{what}: expected Invalid, got {other:?}"),
    }
}

#[track_caller]
fn assert_compacted<T: std::fmt::Debug>(result: Result<T, StorageError>, what: &str) {
    match result {
        Err(StorageError::Compacted { .. }) => {}
        other => panic!("{what}: expected Compacted, got {other:?}"),
    }
}

#[track_caller]
fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, StorageError>, what: &str) {
    match result {
        Err(StorageError::Unavailable { .. }) => {}
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

/// An empty store: `first_index() == 1`, `last_index() == 0`, `term(0) == 0`, nothing else.
pub fn empty_store<S: LogStore>(factory: &mut impl FnMut(Option<S>) -> S) {
    let s = factory(None);
    assert_eq!(s.first_index().unwrap(), LogIndex(1));
    assert_eq!(s.last_index().unwrap(), LogIndex(0));
    assert_eq!(s.term(LogIndex(0)).unwrap(), Term(0));
    assert_unavailable(s.term(LogIndex(1)), "term(1) of an empty store");
    assert_eq!(
        s.entries(LogIndex(1), LogIndex(1), 0).unwrap(),
        Vec::<Entry>::new()
    );
    assert_unavailable(
        s.entries(LogIndex(1), LogIndex(2), u64::MAX),
        "entries(1, 2) of empty",
    );
    assert_eq!(s.initial_state().unwrap(), InitialState::default());
    assert_eq!(s.snapshot().unwrap().meta.index, LogIndex(0));
    assert_eq!(s.last_stored_index().unwrap(), LogIndex(0));
}

/// A batch with nothing in it changes nothing.
pub fn empty_batch_is_a_no_op<S: LogStore>(factory: &mut impl FnMut(Option<S>) -> S) {
    let s = factory(None);
    append(&s, entries_with_terms(1, &[1, 1]));
    let before = observe(&s);
    s.write(&WriteBatch::default()).unwrap();
    assert_eq!(observe(&s), before);
}

/// Appended entries read back exactly, with their terms, in any sub-range.
pub fn append_and_read<S: LogStore>(factory: &mut impl FnMut(Option<S>) -> S) {
    let s = factory(None);
    let all = entries_with_terms(1, &[1, 1, 2, 2, 3, 3, 3]);
    append(&s, all[..3].to_vec());
    append(&s, all[3..].to_vec());
    assert_eq!(s.first_index().unwrap(), LogIndex(1));
    assert_eq!(s.last_index().unwrap(), LogIndex(7));
    assert_eq!(s.entries(LogIndex(1), LogIndex(8), u64::MAX).unwrap(), all);
    assert_eq!(
        s.entries(LogIndex(3), LogIndex(5), u64::MAX).unwrap(),
        all[2..4].to_vec()
    );
    for e in &all {
        assert_eq!(s.term(e.index).unwrap(), e.term, "term({})", e.index);
    }
    assert_eq!(s.term(LogIndex(0)).unwrap(), Term(0));
}

/// A gap, a batch out of order, index 0, or terms going back are refused and change nothing.
pub fn append_refuses_gaps_and_disorder<S: LogStore>(factory: &mut impl FnMut(Option<S>) -> S) {
    let s = factory(None);
    append(&s, entries_with_terms(1, &[1, 2, 2]));
    let before = observe(&s);
    let bad: [(&str, Vec<Entry>); 5] = [
        ("gap after the last index", vec![entry(5, 2)]),
        ("batch not contiguous", vec![entry(4, 2), entry(6, 2)]),
        ("batch terms going back", vec![entry(4, 3), entry(5, 2)]),
        ("first term below the entry before it", vec![entry(4, 1)]),
        ("index 0", vec![entry(0, 2)]),
    ];
    for (what, entries) in bad {
        assert_invalid(
            s.write(&WriteBatch {
                entries,
                ..Default::default()
            }),
            what,
        );
        assert_eq!(
            observe(&s),
            before,
            "a refused batch ({what}) changed the store"
        );
    }
}

/// Appending at or below the last index removes the stored suffix from there on, in the
/// same write (Raft §5.3; docs/failures.md C3); a refused batch leaves the old suffix intact.
pub fn truncate_conflicting_suffix_with_append<S: LogStore>(
    factory: &mut impl FnMut(Option<S>) -> S,
) {
    let s = factory(None);
    append(&s, entries_with_terms(1, &[1, 1, 1, 1, 1]));
    append(&s, entries_with_terms(3, &[2, 2]));
    assert_eq!(s.last_index().unwrap(), LogIndex(4));
    assert_eq!(
        s.entries(LogIndex(1), LogIndex(5), u64::MAX).unwrap(),
        entries_with_terms(1, &[1, 1, 2, 2])
    );
    // A shorter replacement leaves nothing of the old tail behind.
    append(&s, entries_with_terms(2, &[3]));
    assert_eq!(s.last_index().unwrap(), LogIndex(2));
    assert_unavailable(s.term(LogIndex(3)), "term(3) after truncation to 2");
    assert_eq!(s.term(LogIndex(2)).unwrap(), Term(3));
    // A refused truncating batch must not have truncated anything.
    let before = observe(&s);
    let bad = vec![entry(2, 4), entry(4, 4)];
    assert_invalid(
        s.write(&WriteBatch {
            entries: bad,
            ..Default::default()
        }),
        "gap in batch",
    );
    assert_eq!(
        observe(&s),
        before,
        "a refused truncating batch changed the store"
    );
}

/// A committed entry may be re-appended only unchanged; the write rewriting it is refused.
pub fn committed_entries_are_never_rewritten<S: LogStore>(
    factory: &mut impl FnMut(Option<S>) -> S,
) {
    let s = factory(None);
    append(&s, entries_with_terms(1, &[1, 1, 1, 1]));
    set_hard_state(&s, hard_state(2, None, 3)).unwrap();
    let before = observe(&s);
    assert_invalid(
        s.write(&WriteBatch {
            entries: entries_with_terms(3, &[2]),
            ..Default::default()
        }),
        "rewriting committed entry 3 with another term",
    );
    assert_eq!(observe(&s), before);
    // The same entries again (a duplicated AppendEntries), then a new conflicting tail.
    append(&s, entries_with_terms(2, &[1, 1, 2, 2]));
    assert_eq!(s.last_index().unwrap(), LogIndex(5));
    assert_eq!(s.term(LogIndex(4)).unwrap(), Term(2));
}

/// Term, vote and commit are stored as one record and read back; the term never goes back,
/// a vote is never changed within a term (docs/failures.md C2), the commit index never goes back.
pub fn hard_state_round_trip_and_rules<S: LogStore>(factory: &mut impl FnMut(Option<S>) -> S) {
    let s = factory(None);
    append(&s, entries_with_terms(1, &[1, 1, 1]));
    set_hard_state(&s, hard_state(1, None, 0)).unwrap();
    set_hard_state(&s, hard_state(1, Some(2), 0)).unwrap();
    assert_eq!(
        s.initial_state().unwrap().hard_state,
        hard_state(1, Some(2), 0)
    );
    assert_invalid(
        set_hard_state(&s, hard_state(1, Some(3), 0)),
        "changing a cast vote",
    );
    assert_invalid(
        set_hard_state(&s, hard_state(1, None, 0)),
        "erasing a cast vote",
    );
    set_hard_state(&s, hard_state(5, None, 2)).unwrap();
    assert_invalid(
        set_hard_state(&s, hard_state(4, None, 2)),
        "term going back",
    );
    assert_invalid(
        set_hard_state(&s, hard_state(5, None, 1)),
        "commit going back",
    );
    set_hard_state(&s, hard_state(5, Some(1), 3)).unwrap();
    assert_eq!(
        s.initial_state().unwrap().hard_state,
        hard_state(5, Some(1), 3)
    );
    assert_eq!(s.initial_state().unwrap().snapshot_membership, None);
}

/// Group commit: several Readies merged into one batch land together.
pub fn one_batch_holds_entries_and_hard_state<S: LogStore>(
    factory: &mut impl FnMut(Option<S>) -> S,
) {
    let s = factory(None);
    let batch = WriteBatch {
        snapshot: None,
        entries: entries_with_terms(1, &[1; 256]),
        hard_state: Some(hard_state(1, Some(1), 200)),
    };
    s.write(&batch).unwrap();
    assert_eq!(s.last_index().unwrap(), LogIndex(256));
    assert_eq!(
        s.initial_state().unwrap().hard_state,
        hard_state(1, Some(1), 200)
    );
    assert_eq!(
        s.entries(LogIndex(1), LogIndex(257), u64::MAX).unwrap(),
        batch.entries
    );
}

/// [`WriteBatch::merge`]d batches written once leave the store exactly as writing them one
/// by one does: overlapping appends, a snapshot in the middle, hard states.
pub fn merged_batches_equal_sequential_writes<S: LogStore>(
    factory: &mut impl FnMut(Option<S>) -> S,
) {
    let base = entries_with_terms(1, &[1, 1, 1, 1, 1, 1]);
    let cases: Vec<Vec<WriteBatch>> = vec![
        vec![
            WriteBatch {
                entries: entries_with_terms(7, &[1, 1]),
                ..Default::default()
            },
            WriteBatch {
                entries: entries_with_terms(8, &[2, 2, 2]),
                hard_state: Some(hard_state(2, Some(1), 3)),
                ..Default::default()
            },
            WriteBatch {
                entries: entries_with_terms(5, &[3]),
                ..Default::default()
            },
            WriteBatch {
                hard_state: Some(hard_state(3, None, 4)),
                ..Default::default()
            },
        ],
        vec![
            WriteBatch {
                entries: entries_with_terms(7, &[2]),
                ..Default::default()
            },
            WriteBatch {
                snapshot: Some(snapshot(30, 4, b"thirty")),
                entries: entries_with_terms(31, &[4]),
                hard_state: Some(hard_state(4, None, 30)),
            },
            WriteBatch {
                entries: entries_with_terms(32, &[4, 5]),
                ..Default::default()
            },
        ],
    ];
    for batches in cases {
        let one_by_one = factory(None);
        let merged = factory(None);
        append(&one_by_one, base.clone());
        append(&merged, base.clone());
        let mut group = WriteBatch::default();
        for b in batches {
            one_by_one
                .write(&b)
                .unwrap_or_else(|e| panic!("sequential write: {e}"));
            group.merge(b);
        }
        merged
            .write(&group)
            .unwrap_or_else(|e| panic!("merged write: {e}"));
        assert_eq!(observe(&merged), observe(&one_by_one));
    }
}

/// A received snapshot drops every entry and moves `first_index` to `snapshot + 1`;
/// `term(snapshot index)` is the snapshot's term; entries in the same batch follow it.
pub fn snapshot_install_replaces_the_log<S: LogStore>(factory: &mut impl FnMut(Option<S>) -> S) {
    let s = factory(None);
    append(&s, entries_with_terms(1, &[1; 30]));
    set_hard_state(&s, hard_state(1, None, 3)).unwrap();
    let snap = snapshot(20, 4, b"state at 20");
    s.write(&WriteBatch {
        snapshot: Some(snap.clone()),
        entries: entries_with_terms(21, &[4, 5]),
        hard_state: Some(hard_state(5, None, 20)),
    })
    .unwrap();
    assert_eq!(s.first_index().unwrap(), LogIndex(21));
    assert_eq!(s.last_index().unwrap(), LogIndex(22));
    assert_eq!(
        s.term(LogIndex(20)).unwrap(),
        Term(4),
        "term(first - 1) is the snapshot term"
    );
    assert_eq!(s.term(LogIndex(22)).unwrap(), Term(5));
    assert_compacted(s.term(LogIndex(19)), "term below the snapshot");
    assert_compacted(
        s.entries(LogIndex(20), LogIndex(22), u64::MAX),
        "entries at the snapshot",
    );
    assert_eq!(s.snapshot().unwrap(), snap);
    let init = s.initial_state().unwrap();
    assert_eq!(init.snapshot_membership, Some(snap.meta.membership.clone()));
    assert_eq!(init.hard_state, hard_state(5, None, 20));

    // A snapshot alone leaves an empty log right after it.
    let s = factory(None);
    append(&s, entries_with_terms(1, &[1, 1]));
    let snap = snapshot(10, 2, b"ten");
    s.write(&WriteBatch {
        snapshot: Some(snap.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.first_index().unwrap(), LogIndex(11));
    assert_eq!(s.last_index().unwrap(), LogIndex(10));
    assert_eq!(s.term(LogIndex(10)).unwrap(), Term(2));
    assert_eq!(
        s.entries(LogIndex(11), LogIndex(11), 0).unwrap(),
        Vec::<Entry>::new()
    );
    // The next append is checked against the snapshot term.
    assert_invalid(
        s.write(&WriteBatch {
            entries: entries_with_terms(11, &[1]),
            ..Default::default()
        }),
        "entry after the snapshot with a lower term",
    );
    append(&s, entries_with_terms(11, &[2]));
    assert_eq!(s.last_index().unwrap(), LogIndex(11));
}

/// A snapshot older than the stored one, or below the stored commit index, or at index 0,
/// is refused and changes nothing.
pub fn snapshot_install_rules<S: LogStore>(factory: &mut impl FnMut(Option<S>) -> S) {
    let s = factory(None);
    append(&s, entries_with_terms(1, &[1; 10]));
    set_hard_state(&s, hard_state(2, None, 8)).unwrap();
    let before = observe(&s);
    let install = |snap: Snapshot| WriteBatch {
        snapshot: Some(snap),
        ..Default::default()
    };
    assert_invalid(
        s.write(&install(snapshot(5, 1, b"x"))),
        "snapshot below the commit index",
    );
    assert_invalid(
        s.write(&install(snapshot(0, 0, b""))),
        "snapshot at index 0",
    );
    assert_eq!(observe(&s), before);
    s.write(&install(snapshot(12, 2, b"twelve"))).unwrap();
    let before = observe(&s);
    assert_invalid(
        s.write(&install(snapshot(11, 2, b"x"))),
        "snapshot older than the stored",
    );
    assert_eq!(observe(&s), before);
}

/// `compact` makes the snapshot the latest and drops entries up to its index only.
pub fn compact_drops_the_prefix<S: LogStore>(factory: &mut impl FnMut(Option<S>) -> S) {
    let s = factory(None);
    let all = entries_with_terms(1, &[1, 1, 2, 2, 2, 3, 3, 3, 3, 3]);
    append(&s, all.clone());
    set_hard_state(&s, hard_state(3, None, 8)).unwrap();
    let snap = snapshot(4, 2, b"state at 4");
    s.compact(snap.clone()).unwrap();
    assert_eq!(s.first_index().unwrap(), LogIndex(5));
    assert_eq!(s.last_index().unwrap(), LogIndex(10));
    assert_eq!(s.term(LogIndex(4)).unwrap(), Term(2));
    assert_eq!(s.term(LogIndex(5)).unwrap(), Term(2));
    assert_compacted(s.term(LogIndex(3)), "term below the snapshot");
    assert_compacted(
        s.entries(LogIndex(4), LogIndex(6), u64::MAX),
        "entries at the snapshot",
    );
    assert_eq!(
        s.entries(LogIndex(5), LogIndex(11), u64::MAX).unwrap(),
        all[4..].to_vec()
    );
    assert_eq!(s.snapshot().unwrap(), snap);
    // Compacting everything leaves an empty log after the snapshot.
    let snap = snapshot(10, 3, b"state at 10");
    s.compact(snap.clone()).unwrap();
    assert_eq!(s.first_index().unwrap(), LogIndex(11));
    assert_eq!(s.last_index().unwrap(), LogIndex(10));
    assert_eq!(s.term(LogIndex(10)).unwrap(), Term(3));
    assert_eq!(s.snapshot().unwrap(), snap);
    append(&s, entries_with_terms(11, &[3]));
    assert_eq!(s.term(LogIndex(11)).unwrap(), Term(3));
}

/// `compact` at or below the stored snapshot is `Compacted`, past the log `Unavailable`, with
/// a wrong term `Invalid`; none of them changes anything.
pub fn compact_rules<S: LogStore>(factory: &mut impl FnMut(Option<S>) -> S) {
    let s = factory(None);
    append(&s, entries_with_terms(1, &[1, 1, 2, 2, 2]));
    s.compact(snapshot(2, 1, b"two")).unwrap();
    let before = observe(&s);
    assert_compacted(
        s.compact(snapshot(2, 1, b"two again")),
        "compact at the snapshot",
    );
    assert_compacted(
        s.compact(snapshot(1, 1, b"one")),
        "compact below the snapshot",
    );
    assert_unavailable(
        s.compact(snapshot(6, 2, b"six")),
        "compact past the last index",
    );
    assert_invalid(
        s.compact(snapshot(4, 1, b"four")),
        "compact with the wrong term",
    );
    assert_eq!(observe(&s), before);
}

/// `entries` stops before the entry that would exceed `max_bytes`, but always returns at
/// least one entry.
pub fn entries_respects_max_bytes<S: LogStore>(factory: &mut impl FnMut(Option<S>) -> S) {
    let s = factory(None);
    let all: Vec<Entry> = (1..=5)
        .map(|i| Entry {
            term: Term(1),
            index: LogIndex(i),
            kind: EntryKind::Normal,
            data: vec![0xAB; 100],
        })
        .collect();
    append(&s, all.clone());
    let size = all[0].size_bytes();
    let read = |max| s.entries(LogIndex(1), LogIndex(6), max).unwrap();
    assert_eq!(
        read(0),
        all[..1].to_vec(),
        "max_bytes 0 still returns one entry"
    );
    assert_eq!(read(size - 1), all[..1].to_vec());
    assert_eq!(read(size), all[..1].to_vec());
    assert_eq!(read(2 * size - 1), all[..1].to_vec());
    assert_eq!(read(2 * size), all[..2].to_vec());
    assert_eq!(read(5 * size), all);
    assert_eq!(read(u64::MAX), all);
}

/// Out-of-range reads name the right error.
pub fn range_errors<S: LogStore>(factory: &mut impl FnMut(Option<S>) -> S) {
    let s = factory(None);
    append(&s, entries_with_terms(1, &[1, 1, 1, 1, 1, 1]));
    s.compact(snapshot(3, 1, b"three")).unwrap();
    assert_compacted(
        s.entries(LogIndex(3), LogIndex(5), u64::MAX),
        "low below first",
    );
    assert_unavailable(
        s.entries(LogIndex(4), LogIndex(8), u64::MAX),
        "high past last + 1",
    );
    assert_unavailable(s.term(LogIndex(7)), "term past last");
    assert_compacted(s.term(LogIndex(2)), "term below snapshot");
    match s.entries(LogIndex(6), LogIndex(5), u64::MAX) {
        Err(StorageError::Invalid(_)) => {}
        other => panic!("reversed range: expected Invalid, got {other:?}"),
    }
    match s.term(LogIndex(2)) {
        Err(StorageError::Compacted { index, first_index }) => {
            assert_eq!((index, first_index), (LogIndex(2), LogIndex(4)));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    match s.term(LogIndex(9)) {
        Err(StorageError::Unavailable { index, last_index }) => {
            assert_eq!((index, last_index), (LogIndex(9), LogIndex(6)));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// Everything acknowledged before a close is there after reopening, for every kind of
/// write: appends, truncation, hard state, a received snapshot, a compaction.
pub fn reopen_keeps_every_write<S: LogStore>(factory: &mut impl FnMut(Option<S>) -> S) {
    let s = factory(None);
    let reopen = |s: S, factory: &mut dyn FnMut(Option<S>) -> S| {
        let before = observe(&s);
        let s = factory(Some(s));
        assert_eq!(observe(&s), before, "reopen lost or changed something");
        s
    };
    append(&s, entries_with_terms(1, &[1, 1, 1, 1, 1, 1]));
    let s = reopen(s, factory);
    append(&s, entries_with_terms(4, &[2, 2]));
    set_hard_state(&s, hard_state(2, Some(2), 3)).unwrap();
    let s = reopen(s, factory);
    s.compact(snapshot(2, 1, b"two")).unwrap();
    let s = reopen(s, factory);
    s.write(&WriteBatch {
        snapshot: Some(snapshot(40, 6, b"forty")),
        entries: entries_with_terms(41, &[6, 7, 7]),
        hard_state: Some(hard_state(7, Some(3), 40)),
    })
    .unwrap();
    let s = reopen(s, factory);
    assert_eq!(s.first_index().unwrap(), LogIndex(41));
    assert_eq!(s.last_index().unwrap(), LogIndex(43));
    assert_eq!(s.snapshot().unwrap().data, b"forty");
    append(&s, entries_with_terms(43, &[8]));
    let s = reopen(s, factory);
    assert_eq!(s.term(LogIndex(43)).unwrap(), Term(8));
    // Reopening twice in a row changes nothing either.
    let s = reopen(s, factory);
    drop(reopen(s, factory));
}
