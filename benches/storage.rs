//! Durable-log throughput: redb log appends with group commit.
//!
//! For batch sizes 1, 16, 64 and 256 of 128-byte entries (each batch also carries a hard
//! state, as a merged Ready does), appends for a fixed time budget to a fresh `RedbStore` on
//! the real disk and reports entries/s, syncs/s (one redb transaction with immediate
//! durability, i.e. one fsync, per batch) and per-batch latency percentiles. Then measures
//! what `RedbStore::open` costs on a 100,000-entry log (every record validated).
//!
//! Run: `cargo bench --bench storage`. The data goes to `$MLCP_BENCH_DIR` if set, else to
//! Cargo's target tmp dir (on the same disk as the build).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mlcp::raft::{Entry, EntryKind, HardState, LogIndex, NodeId, Storage, Term};
use mlcp::storage::{LogStore, RedbStore, WriteBatch};

const ENTRY_DATA_BYTES: usize = 128;
const BATCH_SIZES: [u64; 4] = [1, 16, 64, 256];
const RUN_TIME_BUDGET: Duration = Duration::from_secs(3);
const RUN_BATCHES_MAX: u64 = 200_000;
const OPEN_LOG_ENTRIES: u64 = 100_000;
const OPEN_FILL_BATCH_ENTRIES: u64 = 1_000;
const OPEN_REPEATS: usize = 3;

fn bench_dir() -> PathBuf {
    std::env::var_os("MLCP_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

fn batch(first: u64, len: u64) -> WriteBatch {
    let entries = (first..first + len)
        .map(|i| Entry {
            term: Term(1),
            index: LogIndex(i),
            kind: EntryKind::Normal,
            data: vec![(i % 251) as u8; ENTRY_DATA_BYTES],
        })
        .collect();
    WriteBatch {
        snapshot: None,
        entries,
        hard_state: Some(HardState {
            term: Term(1),
            vote: Some(NodeId(1)),
            commit: LogIndex(first - 1),
        }),
    }
}

fn append_throughput(base: &PathBuf) {
    println!(
        "redb log appends, group commit: {ENTRY_DATA_BYTES}-byte entries, Durability::Immediate, \
         {}s per batch size, dir {}",
        RUN_TIME_BUDGET.as_secs(),
        base.display()
    );
    println!(
        "{:>6} {:>9} {:>12} {:>10} {:>12} {:>12} {:>12}",
        "batch", "batches", "entries/s", "syncs/s", "p50 us", "p99 us", "max us"
    );
    for batch_len in BATCH_SIZES {
        let dir = tempfile::tempdir_in(base).expect("bench temp dir");
        let store = RedbStore::open(dir.path()).expect("open store");
        let mut latency_us = Histogram::<u64>::new(3).expect("histogram");
        let mut next = 1;
        let mut batches = 0;
        let start = Instant::now();
        while start.elapsed() < RUN_TIME_BUDGET && batches < RUN_BATCHES_MAX {
            let b = batch(next, batch_len);
            let t = Instant::now();
            store.write(&b).expect("write batch");
            latency_us
                .record(t.elapsed().as_micros() as u64)
                .expect("record latency");
            next += batch_len;
            batches += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        let entries = batches * batch_len;
        println!(
            "{:>6} {:>9} {:>12.0} {:>10.0} {:>12} {:>12} {:>12}",
            batch_len,
            batches,
            entries as f64 / secs,
            batches as f64 / secs,
            latency_us.value_at_quantile(0.5),
            latency_us.value_at_quantile(0.99),
            latency_us.max()
        );
    }
}

fn open_validation_cost(base: &PathBuf) {
    let dir = tempfile::tempdir_in(base).expect("bench temp dir");
    {
        let store = RedbStore::open(dir.path()).expect("open store");
        let mut next = 1;
        while next <= OPEN_LOG_ENTRIES {
            store
                .write(&batch(next, OPEN_FILL_BATCH_ENTRIES))
                .expect("fill");
            next += OPEN_FILL_BATCH_ENTRIES;
        }
    }
    let db_bytes = std::fs::metadata(dir.path().join(mlcp::storage::DB_FILE_NAME))
        .map(|m| m.len())
        .unwrap_or(0);
    let mut best = Duration::MAX;
    for _ in 0..OPEN_REPEATS {
        let t = Instant::now();
        let store = RedbStore::open(dir.path()).expect("reopen");
        let took = t.elapsed();
        assert_eq!(
            store.last_index().expect("last index"),
            LogIndex(OPEN_LOG_ENTRIES)
        );
        best = best.min(took);
    }
    println!(
        "open + validate every record of a {OPEN_LOG_ENTRIES}-entry log ({:.1} MiB file): \
         best of {OPEN_REPEATS} {:.1} ms ({:.0} ns/entry)",
        db_bytes as f64 / (1024.0 * 1024.0),
        best.as_secs_f64() * 1e3,
        best.as_nanos() as f64 / OPEN_LOG_ENTRIES as f64
    );
}

fn main() {
    let base = bench_dir();
    std::fs::create_dir_all(&base).expect("bench dir");
    append_throughput(&base);
    open_validation_cost(&base);
}
