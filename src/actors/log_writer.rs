//! The log writer: owns the only thread that writes the Raft log, so a slow fsync never
//! stalls the actor system.
//!
//! Requests arrive on a bounded channel. When several writes are already waiting, they are
//! merged into one [`WriteBatch`] and made durable with one sync (group commit); each waiter
//! is answered only after that sync. A compaction is a barrier: writes queued before it are
//! flushed first, writes after it wait for it.
//!
//! A storage error is fatal: the error (which names the file) is logged and the process
//! exits. Continuing after a failed fsync could acknowledge entries that are not on disk
//! (the PostgreSQL "fsyncgate" lesson), and the Raft core assumes every acknowledged write
//! is durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use tokio::sync::{mpsc, oneshot};

use crate::raft::{Snapshot, StorageError};
use crate::storage::{LogStore, WriteBatch};

/// Requests waiting for the writer thread, at most (each holds one Ready's writes).
pub const WRITER_QUEUE_REQUESTS_MAX: usize = 256;

/// The writer thread is gone (it only stops when every handle is dropped, or the process is
/// exiting after a fatal storage error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the log writer has stopped")]
pub struct WriterStopped;

/// Counters of the writer, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct LogWriterStats {
    /// Write requests received (one per Ready that must sync).
    pub requests: AtomicU64,
    /// Durable writes performed (each one sync); `requests / syncs` is the group-commit factor.
    pub syncs: AtomicU64,
    /// Entries appended.
    pub entries: AtomicU64,
    /// Compactions performed.
    pub compactions: AtomicU64,
}

enum Request {
    Write {
        batch: WriteBatch,
        done: oneshot::Sender<()>,
    },
    Compact {
        snapshot: Snapshot,
        done: oneshot::Sender<()>,
    },
}

/// What the writer does when a write fails. Production exits the process; the default is
/// [`exit_on_storage_error`].
pub type FatalHandler = Arc<dyn Fn(&StorageError) + Send + Sync>;

/// Logs `err` (naming the file) and exits the process with status 1.
pub fn exit_on_storage_error(err: &StorageError) {
    tracing::error!(error = %err, "durable write of the Raft log failed; stopping the controller");
    eprintln!("fatal: durable write of the Raft log failed: {err}");
    std::process::exit(1);
}

/// Handle to the writer thread. Cheap to clone; the thread ends when the last handle drops.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::Sender<Request>,
    stats: Arc<LogWriterStats>,
}

impl LogWriter {
    /// Starts the writer thread over `store`; storage errors exit the process.
    pub fn start(store: Arc<dyn LogStore>) -> LogWriter {
        Self::start_with_fatal_handler(store, Arc::new(exit_on_storage_error))
    }

    /// Starts the writer thread; `on_fatal` is called on a storage error, after which the
    /// thread stops answering (every waiter sees [`WriterStopped`]).
    pub fn start_with_fatal_handler(store: Arc<dyn LogStore>, on_fatal: FatalHandler) -> LogWriter {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE_REQUESTS_MAX);
        let stats = Arc::new(LogWriterStats::default());
        let thread_stats = stats.clone();
        thread::Builder::new()
            .name("mlcp-log-writer".into())
            .spawn(move || run(store, rx, &thread_stats, &*on_fatal))
            .expect("spawning the log writer thread");
        LogWriter { tx, stats }
    }

    /// Makes `batch` durable. Resolves once it is synced.
    pub async fn write(&self, batch: WriteBatch) -> Result<(), WriterStopped> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Request::Write { batch, done })
            .await
            .map_err(|_| WriterStopped)?;
        wait.await.map_err(|_| WriterStopped)
    }

    /// Installs a locally taken snapshot and compacts the log up to it
    /// ([`LogStore::compact`]), after every write queued before it.
    pub async fn compact(&self, snapshot: Snapshot) -> Result<(), WriterStopped> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Request::Compact { snapshot, done })
            .await
            .map_err(|_| WriterStopped)?;
        wait.await.map_err(|_| WriterStopped)
    }

    /// The writer's counters.
    pub fn stats(&self) -> &LogWriterStats {
        &self.stats
    }
}

fn run(
    store: Arc<dyn LogStore>,
    mut rx: mpsc::Receiver<Request>,
    stats: &LogWriterStats,
    on_fatal: &(dyn Fn(&StorageError) + Send + Sync),
) {
    // A compaction taken off the queue while gathering writes; it runs after them.
    let mut held: Option<Request> = None;
    loop {
        let first = match held.take() {
            Some(r) => r,
            None => match rx.blocking_recv() {
                Some(r) => r,
                None => return,
            },
        };
        let result = match first {
            Request::Compact { snapshot, done } => {
                let r = store.compact(snapshot);
                if r.is_ok() {
                    stats.compactions.fetch_add(1, Ordering::Relaxed);
                    let _ = done.send(());
                }
                r
            }
            Request::Write { batch, done } => {
                let mut merged = batch;
                let mut waiters = vec![done];
                while let Ok(next) = rx.try_recv() {
                    match next {
                        Request::Write { batch, done } => {
                            merge_into(&mut merged, batch);
                            waiters.push(done);
                        }
                        compact @ Request::Compact { .. } => {
                            held = Some(compact);
                            break;
                        }
                    }
                }
                stats
                    .requests
                    .fetch_add(waiters.len() as u64, Ordering::Relaxed);
                let r = if merged.is_empty() {
                    Ok(())
                } else {
                    store.write(&merged)
                };
                if r.is_ok() {
                    stats
                        .syncs
                        .fetch_add(u64::from(!merged.is_empty()), Ordering::Relaxed);
                    stats
                        .entries
                        .fetch_add(merged.entries.len() as u64, Ordering::Relaxed);
                    for w in waiters {
                        let _ = w.send(());
                    }
                }
                r
            }
        };
        if let Err(err) = result {
            on_fatal(&err);
            return;
        }
    }
}

/// Appends `next` to `acc` so that writing `acc` once has the effect of writing the two in
/// order: a later snapshot replaces everything before it; later entries truncate any
/// conflicting suffix (Raft §5.3) before appending; the later hard state wins.
pub fn merge_into(acc: &mut WriteBatch, next: WriteBatch) {
    let WriteBatch {
        snapshot,
        entries,
        hard_state,
    } = next;
    if let Some(snap) = snapshot {
        acc.entries.clear();
        acc.snapshot = Some(snap);
    }
    if let Some(first) = entries.first() {
        let keep = acc
            .entries
            .iter()
            .take_while(|e| e.index < first.index)
            .count();
        acc.entries.truncate(keep);
        acc.entries.extend(entries);
    }
    if hard_state.is_some() {
        acc.hard_state = hard_state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{
        Entry, EntryKind, HardState, InitialState, LogIndex, SnapshotMeta, Storage, Term,
    };
    use crate::storage::MemStorage;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    /// A store whose writes can be held at a gate (so requests queue up) or made to fail.
    #[derive(Default)]
    struct GatedStore {
        inner: MemStorage,
        gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
        fail: AtomicBool,
    }

    impl Storage for GatedStore {
        fn initial_state(&self) -> Result<InitialState, StorageError> {
            self.inner.initial_state()
        }
        fn entries(
            &self,
            lo: LogIndex,
            hi: LogIndex,
            max: u64,
        ) -> Result<Vec<Entry>, StorageError> {
            self.inner.entries(lo, hi, max)
        }
        fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
            self.inner.term(index)
        }
        fn first_index(&self) -> Result<LogIndex, StorageError> {
            self.inner.first_index()
        }
        fn last_index(&self) -> Result<LogIndex, StorageError> {
            self.inner.last_index()
        }
        fn snapshot(&self) -> Result<Snapshot, StorageError> {
            self.inner.snapshot()
        }
    }

    impl LogStore for GatedStore {
        fn write(&self, batch: &WriteBatch) -> Result<(), StorageError> {
            // Take the gate out first: the lock must not be held while waiting at it.
            let gate = self.gate.lock().unwrap().take();
            if let Some(gate) = gate {
                let _ = gate.recv();
            }
            if self.fail.load(Ordering::SeqCst) {
                return Err(StorageError::Io {
                    file: "log.redb".into(),
                    reason: "EIO on fsync".into(),
                });
            }
            self.inner.write(batch)
        }
        fn compact(&self, snapshot: Snapshot) -> Result<(), StorageError> {
            self.inner.compact(snapshot)
        }
    }

    fn append(i: u64) -> WriteBatch {
        WriteBatch {
            entries: vec![e(1, i)],
            hard_state: Some(HardState {
                term: Term(1),
                vote: None,
                commit: LogIndex(0),
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn writes_queued_behind_a_slow_sync_share_one_sync() {
        let (release, gate) = std::sync::mpsc::channel();
        let store = Arc::new(GatedStore {
            gate: Mutex::new(Some(gate)),
            ..Default::default()
        });
        let writer = LogWriter::start(store.clone());
        // The first write holds the thread; the next four queue behind it.
        let first = tokio::spawn({
            let w = writer.clone();
            async move { w.write(append(1)).await }
        });
        // Wait until the writer thread is inside the first write, holding the gate.
        while store.gate.lock().unwrap().is_some() {
            tokio::task::yield_now().await;
        }
        let rest: Vec<_> = (2..=5)
            .map(|i| {
                let w = writer.clone();
                tokio::spawn(async move { w.write(append(i)).await })
            })
            .collect();
        while writer.tx.capacity() > WRITER_QUEUE_REQUESTS_MAX - 4 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        for r in rest {
            r.await.unwrap().unwrap();
        }
        let stats = writer.stats();
        assert_eq!(stats.requests.load(Ordering::Relaxed), 5);
        assert_eq!(
            stats.syncs.load(Ordering::Relaxed),
            2,
            "4 queued writes merged into 1 sync"
        );
        assert_eq!(store.last_index().unwrap(), LogIndex(5));
    }

    #[tokio::test]
    async fn a_failed_write_is_fatal_and_nothing_after_it_is_acknowledged() {
        let store = Arc::new(GatedStore::default());
        store.fail.store(true, Ordering::SeqCst);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let on_fatal: FatalHandler = {
            let seen = seen.clone();
            Arc::new(move |err: &StorageError| seen.lock().unwrap().push(err.to_string()))
        };
        let writer = LogWriter::start_with_fatal_handler(store.clone(), on_fatal);
        assert_eq!(writer.write(append(1)).await, Err(WriterStopped));
        store.fail.store(false, Ordering::SeqCst);
        assert_eq!(
            writer.write(append(1)).await,
            Err(WriterStopped),
            "writer kept going"
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(
            seen[0].contains("log.redb"),
            "the error names the file: {}",
            seen[0]
        );
        assert_eq!(store.last_index().unwrap(), LogIndex(0));
    }

    fn e(term: u64, index: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: vec![],
        }
    }

    fn ids(b: &WriteBatch) -> Vec<(u64, u64)> {
        b.entries.iter().map(|e| (e.term.0, e.index.0)).collect()
    }

    #[test]
    fn merge_appends_contiguous_batches() {
        let mut acc = WriteBatch {
            entries: vec![e(1, 1), e(1, 2)],
            ..Default::default()
        };
        merge_into(
            &mut acc,
            WriteBatch {
                entries: vec![e(1, 3)],
                ..Default::default()
            },
        );
        assert_eq!(ids(&acc), [(1, 1), (1, 2), (1, 3)]);
    }

    #[test]
    fn merge_truncates_a_conflicting_suffix_like_the_store_would() {
        let mut acc = WriteBatch {
            entries: vec![e(1, 4), e(1, 5), e(1, 6)],
            ..Default::default()
        };
        merge_into(
            &mut acc,
            WriteBatch {
                entries: vec![e(2, 5)],
                ..Default::default()
            },
        );
        assert_eq!(ids(&acc), [(1, 4), (2, 5)]);
    }

    #[test]
    fn merge_keeps_the_latest_hard_state_and_lets_a_snapshot_reset_entries() {
        let hs = |t| HardState {
            term: Term(t),
            vote: None,
            commit: LogIndex(0),
        };
        let mut acc = WriteBatch {
            entries: vec![e(1, 1)],
            hard_state: Some(hs(1)),
            ..Default::default()
        };
        merge_into(
            &mut acc,
            WriteBatch {
                hard_state: None,
                ..Default::default()
            },
        );
        assert_eq!(acc.hard_state, Some(hs(1)));
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(10),
                term: Term(2),
                ..Default::default()
            },
            data: vec![],
        };
        merge_into(
            &mut acc,
            WriteBatch {
                snapshot: Some(snap),
                entries: vec![e(2, 11)],
                hard_state: Some(hs(2)),
            },
        );
        assert_eq!(ids(&acc), [(2, 11)]);
        assert_eq!(
            acc.snapshot.as_ref().map(|s| s.meta.index),
            Some(LogIndex(10))
        );
        assert_eq!(acc.hard_state, Some(hs(2)));
    }
}
