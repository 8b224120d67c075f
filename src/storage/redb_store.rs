//! The durable log: one redb database plus snapshot data files.
//!
//! Layout of a data dir:
//! ```text
//! <dir>/raft.redb                  redb database, tables:
//!     entries: u64 -> record        one record per log entry, key = log index
//!     meta:    &str -> record       "hard_state" (term + vote + commit in ONE record),
//!                                   "snapshot" (metadata of the latest snapshot),
//!                                   "identity" (cluster name + node id)
//! <dir>/snapshots/snap-<index>-<term>-<seq>.bin
//!                                   data of the latest snapshot (one file at rest)
//! ```
//! Every record is versioned and checksummed (see `codec.rs`: 1 version byte, a
//! hand-written little-endian payload, CRC-32C over key + version + payload). The snapshot
//! record carries the data file's name, length and CRC-32C.
//!
//! Write order for anything that installs a snapshot: the data file is written to
//! `<name>.tmp`, fsynced, renamed to `<name>`, and the directory fsynced; only then does the
//! redb transaction that points the snapshot record at `<name>` commit. The previous file is
//! removed after that commit, so a crash at any point leaves the committed record pointing at
//! a complete file; unreferenced files are removed on the next open.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::check::{self, ByteBudget, LogView};
use super::codec::{self, Identity, SnapshotRecord};
use super::{LogStore, WriteBatch};
use crate::raft::{
    Entry, HardState, InitialState, LogIndex, NodeId, Snapshot, SnapshotMeta, Storage,
    StorageError, Term,
};

/// Name of the database file inside a data dir.
pub const DB_FILE_NAME: &str = "raft.redb";
/// Name of the snapshot-data directory inside a data dir.
pub const SNAPSHOT_DIR_NAME: &str = "snapshots";

pub(crate) const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const HARD_STATE_RECORD: &str = "hard_state";
pub(crate) const SNAPSHOT_RECORD: &str = "snapshot";
pub(crate) const IDENTITY_RECORD: &str = "identity";

/// Term of every stored entry, kept as runs: `start index -> term`, one run per term change.
/// Terms change rarely, so this stays tiny and makes `term()` a map lookup with no I/O.
#[derive(Debug, Default)]
struct TermRuns(BTreeMap<LogIndex, Term>);

impl TermRuns {
    fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.0.range(..=index).next_back().map(|(_, t)| *t)
    }

    /// Records the entry after the current last one.
    fn push(&mut self, index: LogIndex, term: Term) {
        if self.0.last_key_value().map(|(_, t)| *t) != Some(term) {
            self.0.insert(index, term);
        }
    }

    fn truncate_from(&mut self, index: LogIndex) {
        self.0.split_off(&index);
    }

    /// Forgets entries below `first`, keeping the run that covers `first` if it is stored.
    fn compact_to(&mut self, first: LogIndex, last_index: LogIndex) {
        let covering = (first <= last_index).then(|| self.term_at(first)).flatten();
        let mut rest = self.0.split_off(&first);
        if let Some(term) = covering {
            rest.entry(first).or_insert(term);
        }
        self.0 = rest;
    }
}

/// What reads are answered from without touching the disk. Updated only after a
/// transaction commits, so it never shows something that is not durable.
#[derive(Debug, Default)]
struct Cache {
    hard_state: HardState,
    snapshot: SnapshotRecord,
    last_index: LogIndex,
    terms: TermRuns,
}

impl Cache {
    fn view(&self) -> LogView<'_> {
        LogView {
            snapshot: &self.snapshot.meta,
            last_index: self.last_index,
            hard_state: self.hard_state,
        }
    }

    fn first_index(&self) -> LogIndex {
        self.snapshot.meta.index.next()
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        check::check_term_index(index, self.snapshot.meta.index, self.last_index)?;
        if index == self.snapshot.meta.index {
            return Ok(self.snapshot.meta.term);
        }
        Ok(self
            .terms
            .term_at(index)
            .expect("every stored index is covered by a term run"))
    }

    /// The error for an index a read expected but did not find (a concurrent write changed
    /// it after the bounds were checked).
    fn missing(&self, index: LogIndex) -> StorageError {
        if index < self.first_index() {
            StorageError::Compacted {
                index,
                first_index: self.first_index(),
            }
        } else {
            StorageError::Unavailable {
                index,
                last_index: self.last_index,
            }
        }
    }
}

/// The durable Raft log on redb (see the module docs for the on-disk layout).
///
/// - **Atomic:** each [`LogStore::write`] and [`LogStore::compact`] is one redb write
///   transaction; a crash leaves all of it or none of it.
/// - **Durable on return:** every transaction commits with [`Durability::Immediate`]
///   (one fsync of the database file per call, however many entries the batch holds — group
///   commit), and snapshot data files are fsynced and renamed before it.
/// - **Validated on open:** redb's page checksums (integrity check on open), then every
///   record's version and checksum, entry contiguity, terms never decreasing, and the
///   snapshot file's length and checksum; the first bad one makes
///   [`RedbStore::open`] fail with [`StorageError::Corrupt`] naming the file and index.
///   Nothing is ever truncated to "repair" a log.
/// - **Reads:** `first_index`, `last_index`, `term` and `initial_state` come from an
///   in-memory cache updated after each commit (no I/O); `entries` and `snapshot` read the
///   database / snapshot file.
///
/// Writers are serialized by an internal mutex; reads may run concurrently with a write and
/// see the state before or after it (never a mix within one call).
#[derive(Debug)]
pub struct RedbStore {
    dir: PathBuf,
    db_path: PathBuf,
    snapshot_dir: PathBuf,
    db: Database,
    /// Held for a whole write or compaction; holds the next snapshot file sequence number.
    writer: Mutex<u64>,
    cache: RwLock<Cache>,
}

fn io_error(file: &Path, err: impl std::fmt::Display) -> StorageError {
    StorageError::Io {
        file: file.display().to_string(),
        reason: err.to_string(),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// Sequence number in a snapshot file name `snap-<index>-<term>-<seq>.bin`.
fn snapshot_file_seq(name: &str) -> Option<u64> {
    let stem = name.strip_prefix("snap-")?.strip_suffix(".bin")?;
    stem.rsplit('-').next()?.parse().ok()
}

impl RedbStore {
    /// Opens the log in `dir`, creating `dir`, its database and its snapshot directory if
    /// missing, and validates every record before returning (see the type docs; the cost is
    /// one sequential read of the log, measured in the storage bench).
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] naming the file, the kind of record and its index when a
    /// record is unreadable, has an unknown format version or a wrong checksum, an entry is
    /// missing or out of order, or the snapshot file does not match its record;
    /// [`StorageError::Invalid`] if another process holds the database open;
    /// [`StorageError::Io`] on any other file or database error.
    pub fn open(dir: impl AsRef<Path>) -> Result<RedbStore, StorageError> {
        Self::open_inner(dir.as_ref(), None)
    }

    /// Like [`RedbStore::open`], and also binds the dir to one node of one cluster: the first
    /// open stores `(cluster_name, node_id)`; later opens with a different pair fail.
    ///
    /// # Errors
    /// As [`RedbStore::open`], plus [`StorageError::Invalid`] (`data dir <dir> belongs to
    /// node 2 of cluster 'x', not node 1 of cluster 'y'`) on a mismatch, checked before the
    /// log is validated; nothing is written then.
    pub fn open_with_identity(
        dir: impl AsRef<Path>,
        cluster_name: &str,
        node_id: NodeId,
    ) -> Result<RedbStore, StorageError> {
        let identity = Identity {
            cluster_name: cluster_name.to_owned(),
            node_id,
            bootstrap_voters: Vec::new(),
        };
        Self::open_inner(dir.as_ref(), Some(identity))
    }

    /// The voters this data dir was bootstrapped with, as recorded in its identity; `None`
    /// before they are recorded (a new dir, or one written before they were kept there).
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] naming the identity record if it does not decode.
    pub fn bootstrap_voters(&self) -> Result<Option<Vec<NodeId>>, StorageError> {
        Ok(self
            .identity()?
            .map(|id| id.bootstrap_voters)
            .filter(|v| !v.is_empty()))
    }

    /// Records the bootstrap voters in the identity record (durable on return). A dir opened
    /// without an identity ([`RedbStore::open`]) has nowhere to keep them.
    ///
    /// # Errors
    /// [`StorageError::Invalid`] without an identity or with no voters; as any write.
    pub fn record_bootstrap_voters(&self, voters: &[NodeId]) -> Result<(), StorageError> {
        let Some(mut identity) = self.identity()? else {
            return Err(StorageError::Invalid(format!(
                "data dir {} has no identity to record bootstrap voters in",
                self.dir.display()
            )));
        };
        if voters.is_empty() {
            return Err(StorageError::Invalid(
                "no bootstrap voters to record".into(),
            ));
        }
        identity.bootstrap_voters = voters.to_vec();
        let mut txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.db_err(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
            meta.insert(
                IDENTITY_RECORD,
                codec::encode_identity(&identity).as_slice(),
            )
            .map_err(|e| self.db_err(e))?;
        }
        txn.commit().map_err(|e| self.db_err(e))
    }

    fn identity(&self) -> Result<Option<Identity>, StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
        let stored = meta.get(IDENTITY_RECORD).map_err(|e| self.db_err(e))?;
        stored
            .map(|g| codec::decode_identity(g.value()))
            .transpose()
            .map_err(|reason| self.corrupt("identity", 0, reason))
    }

    /// The data dir this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the database file (`<dir>/raft.redb`).
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    fn open_inner(dir: &Path, identity: Option<Identity>) -> Result<RedbStore, StorageError> {
        let snapshot_dir = dir.join(SNAPSHOT_DIR_NAME);
        fs::create_dir_all(&snapshot_dir).map_err(|e| io_error(&snapshot_dir, e))?;
        let db_path = dir.join(DB_FILE_NAME);
        // Without the integrity check a damaged page can make redb panic while reading it;
        // with it every committed page's checksum is verified first (cost: one read of the
        // file, included in the open time the storage bench reports).
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(&db_path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StorageError::Invalid(format!(
                    "database {} is already open in another process or store",
                    db_path.display()
                )),
                other => db_error(&db_path, other),
            })?;
        // redb fsyncs the file's contents, not the directory entries that make the file (and
        // a freshly created data dir) findable after a power loss; without this a node could
        // acknowledge a vote and come back with no database at all.
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let mut store = RedbStore {
            dir: dir.to_owned(),
            db_path,
            snapshot_dir,
            db,
            writer: Mutex::new(1),
            cache: RwLock::new(Cache::default()),
        };
        store.prepare_tables(identity.as_ref())?;
        let cache = store.load()?;
        store.verify_snapshot_file(&cache.snapshot)?;
        let next_seq = store.remove_unreferenced_snapshot_files(&cache.snapshot.file)?;
        *store.writer.get_mut().unwrap_or_else(|e| e.into_inner()) = next_seq;
        *store.cache.get_mut().unwrap_or_else(|e| e.into_inner()) = cache;
        Ok(store)
    }

    fn db_err(&self, err: impl Into<redb::Error>) -> StorageError {
        db_error(&self.db_path, err)
    }

    fn corrupt(&self, what: &'static str, index: u64, reason: String) -> StorageError {
        StorageError::Corrupt {
            file: self.db_path.display().to_string(),
            what,
            index,
            reason,
        }
    }

    /// Creates the tables on first open and checks (or records) the identity.
    fn prepare_tables(&self, identity: Option<&Identity>) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.db_err(e))?;
        {
            txn.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
            if let Some(want) = identity {
                let stored = meta.get(IDENTITY_RECORD).map_err(|e| self.db_err(e))?;
                match stored.map(|g| codec::decode_identity(g.value())) {
                    Some(Ok(have))
                        if have.node_id == want.node_id
                            && have.cluster_name == want.cluster_name => {}
                    Some(Ok(have)) => {
                        return Err(StorageError::Invalid(format!(
                            "data dir {} belongs to node {} of cluster '{}', not node {} of \
                             cluster '{}'",
                            self.dir.display(),
                            have.node_id,
                            have.cluster_name,
                            want.node_id,
                            want.cluster_name
                        )));
                    }
                    Some(Err(reason)) => return Err(self.corrupt("identity", 0, reason)),
                    None => {
                        meta.insert(IDENTITY_RECORD, codec::encode_identity(want).as_slice())
                            .map_err(|e| self.db_err(e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| self.db_err(e))
    }

    /// Reads and validates every record into a fresh cache.
    fn load(&self) -> Result<Cache, StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
        let hard_state = match meta.get(HARD_STATE_RECORD).map_err(|e| self.db_err(e))? {
            Some(g) => codec::decode_hard_state(g.value())
                .map_err(|reason| self.corrupt("hard state", 0, reason))?,
            None => HardState::default(),
        };
        let snapshot = match meta.get(SNAPSHOT_RECORD).map_err(|e| self.db_err(e))? {
            Some(g) => codec::decode_snapshot(g.value())
                .map_err(|reason| self.corrupt("snapshot", 0, reason))?,
            None => SnapshotRecord::default(),
        };
        let entries = txn.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
        let mut terms = TermRuns::default();
        let mut expected = snapshot.meta.index.next();
        let mut prev_term = snapshot.meta.term;
        for item in entries.iter().map_err(|e| self.db_err(e))? {
            let (key, value) = item.map_err(|e| self.db_err(e))?;
            let index = key.value();
            if index != expected.get() {
                let reason = if index < expected.get() {
                    format!(
                        "entry {index} is at or below the snapshot index {}",
                        snapshot.meta.index
                    )
                } else {
                    format!("entry {expected} is missing: the next stored entry is {index}")
                };
                return Err(self.corrupt("log index", expected.get().min(index), reason));
            }
            let entry = codec::decode_entry(index, value.value())
                .map_err(|reason| self.corrupt("log index", index, reason))?;
            if entry.term < prev_term {
                return Err(self.corrupt(
                    "log index",
                    index,
                    format!(
                        "term {} is below term {prev_term} of the entry before",
                        entry.term
                    ),
                ));
            }
            terms.push(entry.index, entry.term);
            prev_term = entry.term;
            expected = expected.next();
        }
        Ok(Cache {
            hard_state,
            snapshot,
            last_index: expected.prev(),
            terms,
        })
    }

    fn snapshot_path(&self, file: &str) -> PathBuf {
        self.snapshot_dir.join(file)
    }

    /// Reads a snapshot's data and checks it against its record.
    fn read_snapshot_data(&self, rec: &SnapshotRecord) -> Result<Vec<u8>, StorageError> {
        let path = self.snapshot_path(&rec.file);
        let corrupt = |reason: String| StorageError::Corrupt {
            file: path.display().to_string(),
            what: "snapshot",
            index: rec.meta.index.get(),
            reason,
        };
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(corrupt("the snapshot data file is missing".into()));
            }
            Err(e) => return Err(io_error(&path, e)),
        };
        if data.len() as u64 != rec.data_len {
            return Err(corrupt(format!(
                "data is {} bytes, the record says {}",
                data.len(),
                rec.data_len
            )));
        }
        let crc = codec::crc32c(&data);
        if crc != rec.data_crc {
            return Err(corrupt(format!(
                "checksum mismatch: recorded {:#010x}, computed {crc:#010x}",
                rec.data_crc
            )));
        }
        Ok(data)
    }

    fn verify_snapshot_file(&self, rec: &SnapshotRecord) -> Result<(), StorageError> {
        if rec.meta.index == LogIndex(0) {
            return Ok(());
        }
        self.read_snapshot_data(rec).map(drop)
    }

    /// Removes temp files and snapshot files the record does not point at (left by a crash
    /// between rename and commit, or between commit and removal). Returns the next free
    /// file sequence number.
    fn remove_unreferenced_snapshot_files(&self, current: &str) -> Result<u64, StorageError> {
        let dir = &self.snapshot_dir;
        let mut max_seq = 0;
        let mut names: Vec<String> = Vec::new();
        for item in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
            let item = item.map_err(|e| io_error(dir, e))?;
            if let Ok(name) = item.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let ours = name.starts_with("snap-");
            if let Some(seq) = snapshot_file_seq(name.trim_end_matches(".tmp")) {
                max_seq = max_seq.max(seq);
            }
            if ours && name != current {
                let path = dir.join(&name);
                fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
            }
        }
        Ok(max_seq + 1)
    }

    /// Writes `snap`'s data to a new file (temp name, fsync, rename, fsync dir) and returns
    /// the record that points at it.
    fn write_snapshot_file(
        &self,
        seq: &mut u64,
        snap: &Snapshot,
    ) -> Result<SnapshotRecord, StorageError> {
        let name = format!("snap-{}-{}-{}.bin", snap.meta.index, snap.meta.term, *seq);
        *seq += 1;
        let tmp = self.snapshot_path(&format!("{name}.tmp"));
        let path = self.snapshot_path(&name);
        let mut file = File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
        file.write_all(&snap.data).map_err(|e| io_error(&tmp, e))?;
        file.sync_all().map_err(|e| io_error(&tmp, e))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(|e| io_error(&path, e))?;
        sync_dir(&self.snapshot_dir)?;
        Ok(SnapshotRecord {
            meta: snap.meta.clone(),
            file: name,
            data_len: snap.data.len() as u64,
            data_crc: codec::crc32c(&snap.data),
        })
    }

    /// Best effort: a file left behind is removed by the next open.
    fn remove_snapshot_file(&self, file: &str) {
        if file.is_empty() {
            return;
        }
        let path = self.snapshot_path(file);
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %e, "could not remove old snapshot file");
        }
    }

    fn read_cache(&self) -> RwLockReadGuard<'_, Cache> {
        // The cache is replaced field by field only after a commit, with no fallible step in
        // between, so a poisoned lock still guards a consistent cache.
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_cache(&self) -> RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_writer(&self) -> MutexGuard<'_, u64> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One transaction: snapshot record + drop all entries, truncate, append, hard state.
    fn commit_batch(
        &self,
        snapshot: Option<&SnapshotRecord>,
        truncate_from: Option<LogIndex>,
        append: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.db_err(e))?;
        {
            let mut entries = txn.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
            if let Some(rec) = snapshot {
                entries.retain(|_, _| false).map_err(|e| self.db_err(e))?;
                meta.insert(SNAPSHOT_RECORD, codec::encode_snapshot(rec).as_slice())
                    .map_err(|e| self.db_err(e))?;
            }
            if let Some(from) = truncate_from {
                entries
                    .retain_in(from.get().., |_, _| false)
                    .map_err(|e| self.db_err(e))?;
            }
            for entry in append {
                entries
                    .insert(entry.index.get(), codec::encode_entry(entry).as_slice())
                    .map_err(|e| self.db_err(e))?;
            }
            if let Some(hs) = hard_state {
                meta.insert(HARD_STATE_RECORD, codec::encode_hard_state(hs).as_slice())
                    .map_err(|e| self.db_err(e))?;
            }
        }
        txn.commit().map_err(|e| self.db_err(e))
    }

    /// One transaction: new snapshot record, entries up to its index removed.
    fn commit_compaction(&self, rec: &SnapshotRecord) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.db_err(e))?;
        {
            let mut entries = txn.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
            meta.insert(SNAPSHOT_RECORD, codec::encode_snapshot(rec).as_slice())
                .map_err(|e| self.db_err(e))?;
            entries
                .retain_in(..=rec.meta.index.get(), |_, _| false)
                .map_err(|e| self.db_err(e))?;
        }
        txn.commit().map_err(|e| self.db_err(e))
    }
}

fn db_error(db_path: &Path, err: impl Into<redb::Error>) -> StorageError {
    match err.into() {
        redb::Error::Corrupted(reason) => StorageError::Corrupt {
            file: db_path.display().to_string(),
            what: "database page",
            index: 0,
            reason,
        },
        redb::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            StorageError::Corrupt {
                file: db_path.display().to_string(),
                what: "database header",
                index: 0,
                reason: e.to_string(),
            }
        }
        other => io_error(db_path, other),
    }
}

impl Storage for RedbStore {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        let c = self.read_cache();
        Ok(InitialState {
            hard_state: c.hard_state,
            snapshot_membership: (c.snapshot.meta.index > LogIndex(0))
                .then(|| c.snapshot.meta.membership.clone()),
        })
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        {
            let c = self.read_cache();
            check::check_range(low, high, c.first_index(), c.last_index)?;
        }
        if low == high {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
        let mut budget = ByteBudget::new(max_bytes);
        let mut out = Vec::new();
        let mut expected = low;
        for item in table
            .range(low.get()..high.get())
            .map_err(|e| self.db_err(e))?
        {
            let (key, value) = item.map_err(|e| self.db_err(e))?;
            let index = key.value();
            if index != expected.get() {
                break;
            }
            let entry = codec::decode_entry(index, value.value())
                .map_err(|reason| self.corrupt("log index", index, reason))?;
            if !budget.admit(&entry) {
                return Ok(out);
            }
            out.push(entry);
            expected = expected.next();
        }
        if expected != high {
            return Err(self.read_cache().missing(expected));
        }
        Ok(out)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.read_cache().term(index)
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.read_cache().first_index())
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.read_cache().last_index)
    }

    /// Reads the latest snapshot's data file and checks its length and checksum.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] naming the snapshot file if it is missing or does not match
    /// its record; [`StorageError::Io`] if it cannot be read.
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        // Holding the read lock keeps a concurrent write from removing the file mid-read.
        let c = self.read_cache();
        if c.snapshot.meta.index == LogIndex(0) {
            return Ok(Snapshot {
                meta: SnapshotMeta::default(),
                data: Vec::new(),
            });
        }
        let data = self.read_snapshot_data(&c.snapshot)?;
        Ok(Snapshot {
            meta: c.snapshot.meta.clone(),
            data,
        })
    }
}

impl LogStore for RedbStore {
    /// One redb write transaction with immediate durability: installs `batch.snapshot`
    /// (after its data file is durable), removes the stored suffix from
    /// `batch.entries[0].index` on and appends `batch.entries`, and stores
    /// `batch.hard_state` — all or nothing, fsynced on return. An empty batch writes nothing.
    ///
    /// # Errors
    /// [`StorageError::Invalid`] if the batch breaks a write rule (see [`super`]); nothing is
    /// written then. [`StorageError::Io`] if the file or transaction fails; the transaction
    /// is then not committed (a snapshot file already written is removed).
    fn write(&self, batch: &WriteBatch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut seq = self.lock_writer();
        let plan = {
            let c = self.read_cache();
            check::plan_write(&c.view(), |i| c.term(i), batch)?
        };
        let new_snapshot = match (&batch.snapshot, plan.install_snapshot) {
            (Some(snap), true) => Some(self.write_snapshot_file(&mut seq, snap)?),
            _ => None,
        };
        let committed = self.commit_batch(
            new_snapshot.as_ref(),
            plan.truncate_from,
            plan.append,
            batch.hard_state.as_ref(),
        );
        if let Err(e) = committed {
            if let Some(rec) = &new_snapshot {
                self.remove_snapshot_file(&rec.file);
            }
            return Err(e);
        }
        let mut c = self.write_cache();
        if let Some(rec) = new_snapshot {
            c.terms = TermRuns::default();
            c.last_index = rec.meta.index;
            let old = std::mem::replace(&mut c.snapshot, rec);
            self.remove_snapshot_file(&old.file);
        }
        if let Some(from) = plan.truncate_from {
            c.terms.truncate_from(from);
            c.last_index = from.prev();
        }
        for entry in plan.append {
            c.terms.push(entry.index, entry.term);
            c.last_index = entry.index;
        }
        if let Some(hs) = batch.hard_state {
            c.hard_state = hs;
        }
        Ok(())
    }

    /// Writes the snapshot's data file (temp name, fsync, rename, fsync dir), then one
    /// transaction that stores its record and removes every entry up to its index; the old
    /// snapshot file is removed after the commit. Durable on return.
    ///
    /// # Errors
    /// [`StorageError::Compacted`] if the stored snapshot is at or past
    /// `snapshot.meta.index`; [`StorageError::Unavailable`] if that index is not stored;
    /// [`StorageError::Invalid`] if the stored entry there has another term;
    /// [`StorageError::Io`] on a file or transaction failure (nothing changes then).
    fn compact(&self, snapshot: Snapshot) -> Result<(), StorageError> {
        let mut seq = self.lock_writer();
        {
            let c = self.read_cache();
            check::check_compact(&c.view(), |i| c.term(i), &snapshot.meta)?;
        }
        let rec = self.write_snapshot_file(&mut seq, &snapshot)?;
        if let Err(e) = self.commit_compaction(&rec) {
            self.remove_snapshot_file(&rec.file);
            return Err(e);
        }
        let mut c = self.write_cache();
        let last_index = c.last_index;
        c.terms.compact_to(rec.meta.index.next(), last_index);
        let old = std::mem::replace(&mut c.snapshot, rec);
        self.remove_snapshot_file(&old.file);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{EntryKind, Membership};

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: format!("cmd-{index}").into_bytes(),
        }
    }

    fn append(store: &RedbStore, range: std::ops::RangeInclusive<u64>, term: u64) {
        let entries = range.map(|i| entry(i, term)).collect();
        store
            .write(&WriteBatch {
                entries,
                ..Default::default()
            })
            .unwrap();
    }

    /// Overwrites one record with raw bytes through redb itself (bypassing the store).
    fn poke_raw(dir: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
        let db = Database::open(dir.join(DB_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        f(&txn);
        txn.commit().unwrap();
    }

    fn expect_corrupt(dir: &Path) -> (String, &'static str, u64, String) {
        match RedbStore::open(dir) {
            Err(StorageError::Corrupt {
                file,
                what,
                index,
                reason,
            }) => (file, what, index, reason),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn passes_the_conformance_suite() {
        let mut dirs = Vec::new();
        crate::storage::conformance::run_all(move |old: Option<RedbStore>| match old {
            None => {
                let dir = tempfile::tempdir().unwrap();
                let store = RedbStore::open(dir.path()).unwrap();
                dirs.push(dir);
                store
            }
            Some(store) => {
                let path = store.dir().to_owned();
                drop(store);
                RedbStore::open(&path).unwrap()
            }
        });
    }

    #[test]
    fn reopen_sees_every_committed_write() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RedbStore::open(dir.path()).unwrap();
            append(&s, 1..=10, 1);
            append(&s, 8..=12, 2);
            let hs = HardState {
                term: Term(2),
                vote: Some(NodeId(3)),
                commit: LogIndex(9),
            };
            s.write(&WriteBatch {
                hard_state: Some(hs),
                ..Default::default()
            })
            .unwrap();
            let meta = SnapshotMeta {
                index: LogIndex(5),
                term: Term(1),
                membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
            };
            s.compact(Snapshot {
                meta,
                data: b"five".to_vec(),
            })
            .unwrap();
        }
        let s = RedbStore::open(dir.path()).unwrap();
        assert_eq!(s.first_index().unwrap(), LogIndex(6));
        assert_eq!(s.last_index().unwrap(), LogIndex(12));
        assert_eq!(s.term(LogIndex(5)).unwrap(), Term(1));
        assert_eq!(s.term(LogIndex(7)).unwrap(), Term(1));
        assert_eq!(s.term(LogIndex(8)).unwrap(), Term(2));
        assert_eq!(s.snapshot().unwrap().data, b"five");
        let st = s.initial_state().unwrap();
        assert_eq!(st.hard_state.vote, Some(NodeId(3)));
        assert_eq!(st.snapshot_membership.unwrap().voters.len(), 3);
        let files: Vec<_> = fs::read_dir(dir.path().join(SNAPSHOT_DIR_NAME))
            .unwrap()
            .collect();
        assert_eq!(files.len(), 1, "old snapshot files are removed");
    }

    #[test]
    fn identity_mismatch_is_refused_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        drop(RedbStore::open_with_identity(dir.path(), "x", NodeId(2)).unwrap());
        let err = RedbStore::open_with_identity(dir.path(), "y", NodeId(1)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("belongs to node 2 of cluster 'x', not node 1 of cluster 'y'"),
            "{msg}"
        );
        drop(RedbStore::open_with_identity(dir.path(), "x", NodeId(2)).unwrap());
    }

    #[test]
    fn corrupt_entry_fails_open_naming_file_and_index() {
        let dir = tempfile::tempdir().unwrap();
        drop({
            let s = RedbStore::open(dir.path()).unwrap();
            append(&s, 1..=5, 1);
            s
        });
        poke_raw(dir.path(), |txn| {
            let mut t = txn.open_table(ENTRIES).unwrap();
            let mut rec = t.get(3).unwrap().unwrap().value().to_vec();
            rec[3] ^= 0x40;
            t.insert(3, rec.as_slice()).unwrap();
        });
        let (file, what, index, reason) = expect_corrupt(dir.path());
        assert!(file.ends_with(DB_FILE_NAME), "{file}");
        assert_eq!((what, index), ("log index", 3));
        assert!(reason.contains("checksum mismatch"), "{reason}");
    }

    /// A store with entries 1..=8, a snapshot at 3 (so entries 4..=8 remain) and a hard
    /// state, closed again.
    fn populated_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(dir.path()).unwrap();
        append(&s, 1..=8, 1);
        let hs = HardState {
            term: Term(1),
            vote: Some(NodeId(1)),
            commit: LogIndex(6),
        };
        s.write(&WriteBatch {
            hard_state: Some(hs),
            ..Default::default()
        })
        .unwrap();
        let meta = SnapshotMeta {
            index: LogIndex(3),
            term: Term(1),
            membership: Membership::with_voters([NodeId(1)]),
        };
        s.compact(Snapshot {
            meta,
            data: vec![7; 4096],
        })
        .unwrap();
        dir
    }

    fn flip_meta_record(dir: &Path, key: &str, byte: usize) {
        poke_raw(dir, |txn| {
            let mut t = txn.open_table(META).unwrap();
            let mut rec = t.get(key).unwrap().unwrap().value().to_vec();
            rec[byte] ^= 0x01;
            t.insert(key, rec.as_slice()).unwrap();
        });
    }

    fn snapshot_file(dir: &Path) -> PathBuf {
        let mut files: Vec<_> = fs::read_dir(dir.join(SNAPSHOT_DIR_NAME))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files.pop().unwrap()
    }

    #[test]
    fn corrupt_hard_state_fails_open() {
        let dir = populated_dir();
        flip_meta_record(dir.path(), HARD_STATE_RECORD, 9);
        let (file, what, _, reason) = expect_corrupt(dir.path());
        assert!(file.ends_with(DB_FILE_NAME), "{file}");
        assert_eq!(what, "hard state");
        assert!(reason.contains("checksum mismatch"), "{reason}");
    }

    #[test]
    fn corrupt_snapshot_record_fails_open() {
        let dir = populated_dir();
        flip_meta_record(dir.path(), SNAPSHOT_RECORD, 2);
        let (_, what, _, reason) = expect_corrupt(dir.path());
        assert_eq!(what, "snapshot");
        assert!(reason.contains("checksum mismatch"), "{reason}");
    }

    #[test]
    fn unknown_record_version_fails_open() {
        let dir = populated_dir();
        poke_raw(dir.path(), |txn| {
            let mut t = txn.open_table(ENTRIES).unwrap();
            let mut rec = t.get(6).unwrap().unwrap().value().to_vec();
            rec[0] = 2;
            t.insert(6, rec.as_slice()).unwrap();
        });
        let (_, what, index, reason) = expect_corrupt(dir.path());
        assert_eq!((what, index), ("log index", 6));
        assert!(reason.contains("unknown format version 2"), "{reason}");
    }

    #[test]
    fn missing_entry_fails_open_instead_of_truncating() {
        let dir = populated_dir();
        poke_raw(dir.path(), |txn| {
            txn.open_table(ENTRIES).unwrap().remove(6).unwrap();
        });
        let (_, what, index, reason) = expect_corrupt(dir.path());
        assert_eq!((what, index), ("log index", 6));
        assert!(reason.contains("entry 6 is missing"), "{reason}");
    }

    #[test]
    fn entry_moved_to_another_index_fails_open() {
        let dir = populated_dir();
        poke_raw(dir.path(), |txn| {
            let mut t = txn.open_table(ENTRIES).unwrap();
            let rec = t.get(8).unwrap().unwrap().value().to_vec();
            t.insert(9, rec.as_slice()).unwrap();
        });
        let (_, what, index, _) = expect_corrupt(dir.path());
        assert_eq!((what, index), ("log index", 9));
    }

    #[test]
    fn corrupt_snapshot_file_fails_open_naming_it() {
        let dir = populated_dir();
        let path = snapshot_file(dir.path());
        let mut data = fs::read(&path).unwrap();
        data[100] ^= 0x10;
        fs::write(&path, &data).unwrap();
        let (file, what, index, reason) = expect_corrupt(dir.path());
        assert_eq!(file, path.display().to_string());
        assert_eq!((what, index), ("snapshot", 3));
        assert!(reason.contains("checksum mismatch"), "{reason}");

        data.truncate(10);
        fs::write(&path, &data).unwrap();
        let (_, _, _, reason) = expect_corrupt(dir.path());
        assert!(
            reason.contains("10 bytes, the record says 4096"),
            "{reason}"
        );

        fs::remove_file(&path).unwrap();
        let (_, _, _, reason) = expect_corrupt(dir.path());
        assert!(reason.contains("missing"), "{reason}");
    }

    #[test]
    fn stray_snapshot_files_are_removed_on_open() {
        let dir = populated_dir();
        let kept = snapshot_file(dir.path());
        let snapshots = dir.path().join(SNAPSHOT_DIR_NAME);
        fs::write(snapshots.join("snap-9-1-77.bin.tmp"), b"half written").unwrap();
        fs::write(snapshots.join("snap-2-1-5.bin"), b"superseded").unwrap();
        let s = RedbStore::open(dir.path()).unwrap();
        assert_eq!(snapshot_file(dir.path()), kept);
        // New files are numbered past every name seen, so none is ever reused.
        let meta = SnapshotMeta {
            index: LogIndex(5),
            term: Term(1),
            membership: Membership::default(),
        };
        s.compact(Snapshot {
            meta,
            data: b"five".to_vec(),
        })
        .unwrap();
        assert!(snapshot_file(dir.path()).ends_with("snap-5-1-78.bin"));
    }

    #[test]
    fn second_open_of_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RedbStore::open(dir.path()).unwrap();
        match RedbStore::open(dir.path()) {
            Err(StorageError::Invalid(msg)) => assert!(msg.contains("already open"), "{msg}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// Raw damage to the database file (as a bad disk would do it) must make open fail
    /// cleanly or, when it hits unused space, leave every entry as written: never a panic,
    /// never a silently changed log.
    #[test]
    fn raw_byte_flips_in_the_database_file_never_go_unnoticed() {
        let base = populated_dir();
        {
            let s = RedbStore::open(base.path()).unwrap();
            append(&s, 9..=2000, 1);
        }
        let expected = {
            let s = RedbStore::open(base.path()).unwrap();
            s.entries(LogIndex(4), LogIndex(2001), u64::MAX).unwrap()
        };
        let db = base.path().join(DB_FILE_NAME);
        let orig = fs::read(&db).unwrap();
        let (mut refused, mut intact) = (0, 0);
        for offset in (0..orig.len()).step_by(orig.len() / 61) {
            let mut bad = orig.clone();
            bad[offset] ^= 0x5A;
            fs::write(&db, &bad).unwrap();
            let opened = std::panic::catch_unwind(|| RedbStore::open(base.path()));
            match opened {
                Err(_) => panic!("open panicked on a flipped byte at offset {offset}"),
                Ok(Err(StorageError::Corrupt { file, .. })) => {
                    assert!(file.ends_with(DB_FILE_NAME), "{file}");
                    refused += 1;
                }
                Ok(Err(other)) => panic!("offset {offset}: expected Corrupt, got {other:?}"),
                Ok(Ok(s)) => {
                    let got = s.entries(LogIndex(4), LogIndex(2001), u64::MAX).unwrap();
                    assert!(
                        got == expected,
                        "offset {offset}: open succeeded with a changed log"
                    );
                    intact += 1;
                }
            }
        }
        fs::write(&db, &orig).unwrap();
        assert!(
            refused > 0 && intact > 0,
            "refused {refused}, intact {intact}"
        );
    }

    /// A reader running beside the writer (the core reading while the shell persists) sees
    /// only whole, correct entries and snapshots, or a `Compacted`/`Unavailable` race — never
    /// a corrupt record or a snapshot file removed under it.
    #[test]
    fn reads_concurrent_with_writes_and_compactions_stay_consistent() {
        use crate::storage::conformance::entry as tagged;
        use std::sync::atomic::{AtomicBool, Ordering};

        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let done = AtomicBool::new(false);
        let reads_max = 1_000_000;
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut reads = 0;
                while !done.load(Ordering::Acquire) && reads < reads_max {
                    reads += 1;
                    let first = store.first_index().unwrap();
                    let last = store.last_index().unwrap();
                    match store.entries(first, last.next(), u64::MAX) {
                        Ok(entries) => {
                            for e in entries {
                                assert_eq!(e, tagged(e.index.get(), e.term.get()));
                            }
                        }
                        Err(StorageError::Compacted { .. } | StorageError::Unavailable { .. }) => {}
                        Err(other) => panic!("read failed during a write: {other}"),
                    }
                    let snap = store.snapshot().unwrap();
                    if snap.meta.index > LogIndex(0) {
                        assert_eq!(snap.data, format!("snap{}", snap.meta.index).into_bytes());
                    }
                }
                reads
            });
            let mut term = 1;
            for round in 0..60u64 {
                let last = store.last_index().unwrap().get();
                if round % 5 == 4 {
                    // A new leader overwrites the last two entries.
                    term += 1;
                    let entries = (last - 1..=last + 3).map(|i| tagged(i, term)).collect();
                    store
                        .write(&WriteBatch {
                            entries,
                            ..Default::default()
                        })
                        .unwrap();
                } else {
                    let entries = (last + 1..=last + 10).map(|i| tagged(i, term)).collect();
                    store
                        .write(&WriteBatch {
                            entries,
                            ..Default::default()
                        })
                        .unwrap();
                }
                if round % 7 == 6 {
                    let index = store.last_index().unwrap().get() - 5;
                    let meta = SnapshotMeta {
                        index: LogIndex(index),
                        term: store.term(LogIndex(index)).unwrap(),
                        membership: Membership::default(),
                    };
                    let data = format!("snap{index}").into_bytes();
                    store.compact(Snapshot { meta, data }).unwrap();
                }
            }
            done.store(true, Ordering::Release);
            assert!(reader.join().unwrap() > 0);
        });
    }

    #[test]
    fn open_data_dir_creates_missing_dirs_and_binds_identity() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("var").join("mlcp").join("node-1");
        let s = crate::storage::open_data_dir(&dir, "prod", NodeId(1)).unwrap();
        assert!(dir.join(DB_FILE_NAME).is_file());
        assert!(dir.join(SNAPSHOT_DIR_NAME).is_dir());
        append(&s, 1..=3, 1);
        drop(s);
        let err = crate::storage::open_data_dir(&dir, "prod", NodeId(2)).unwrap_err();
        assert!(matches!(err, StorageError::Invalid(_)), "{err:?}");
        let s = crate::storage::open_data_dir(&dir, "prod", NodeId(1)).unwrap();
        assert_eq!(s.last_index().unwrap(), LogIndex(3));
    }
}
