//! On-disk record format for the durable log.
//!
//! Every record is `[format version: u8][payload][crc32c: u32 LE]`. The checksum covers a
//! record key (the log index for entries, a fixed tag for the other records) followed by the
//! version byte and the payload, so a record that is intact but stored under the wrong key
//! is caught as well as a flipped bit. Integers are little-endian and fixed-width; the
//! encoding is hand-written (not prost) so that its exact bytes are pinned here and a change
//! of layout must come with a new version number.
//!
//! The checksum is CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`), computed with a
//! 256-entry table built at compile time: it is the checksum used by ext4, iSCSI and
//! RocksDB, and needs no dependency.

use crate::raft::{Entry, EntryKind, HardState, LogIndex, Membership, NodeId, SnapshotMeta, Term};

/// The only record layout this build reads and writes.
pub(crate) const FORMAT_VERSION: u8 = 1;

/// Checksum key of the hard-state record.
pub(crate) const HARD_STATE_KEY: u64 = u64::MAX - 1;
/// Checksum key of the snapshot-metadata record.
pub(crate) const SNAPSHOT_KEY: u64 = u64::MAX - 2;
/// Checksum key of the identity record.
pub(crate) const IDENTITY_KEY: u64 = u64::MAX - 3;

const CRC32C_POLY_REFLECTED: u32 = 0x82F6_3B78;

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ CRC32C_POLY_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
};

/// Running CRC-32C state; `finish` gives the checksum of everything fed to `update`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Crc32c(u32);

impl Crc32c {
    pub(crate) fn new() -> Self {
        Crc32c(!0)
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        let mut crc = self.0;
        for &b in bytes {
            crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
        }
        self.0 = crc;
    }

    pub(crate) fn finish(self) -> u32 {
        !self.0
    }
}

/// CRC-32C of `bytes`.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = Crc32c::new();
    crc.update(bytes);
    crc.finish()
}

fn record_checksum(key: u64, versioned_payload: &[u8]) -> u32 {
    let mut crc = Crc32c::new();
    crc.update(&key.to_le_bytes());
    crc.update(versioned_payload);
    crc.finish()
}

/// Frames `payload` as a versioned, checksummed record stored under `key`.
pub(crate) fn seal(key: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(payload);
    let crc = record_checksum(key, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks the framing of a record stored under `key` and returns its payload, or a reason
/// naming what is wrong (too short, unknown version, checksum mismatch).
pub(crate) fn unseal(key: u64, record: &[u8]) -> Result<&[u8], String> {
    if record.len() < 5 {
        return Err(format!(
            "record is {} bytes, shorter than the 5-byte frame",
            record.len()
        ));
    }
    let version = record[0];
    if version != FORMAT_VERSION {
        return Err(format!(
            "unknown format version {version} (this build reads version {FORMAT_VERSION})"
        ));
    }
    let (body, crc_bytes) = record.split_at(record.len() - 4);
    let stored = u32::from_le_bytes(crc_bytes.try_into().expect("split at len - 4"));
    let computed = record_checksum(key, body);
    if stored != computed {
        return Err(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    Ok(&body[1..])
}

/// Reads fixed-width little-endian fields, failing with the byte offset on truncation.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn bytes(&mut self, n: usize, field: &str) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "payload truncated reading {field}: need {n} bytes at offset {}, have {}",
                    self.pos,
                    self.buf.len() - self.pos
                )
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self, field: &str) -> Result<u8, String> {
        Ok(self.bytes(1, field)?[0])
    }

    fn u16(&mut self, field: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.bytes(2, field)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self, field: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.bytes(4, field)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self, field: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.bytes(8, field)?.try_into().expect("8 bytes"),
        ))
    }

    fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    fn finish(self) -> Result<(), String> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(format!(
                "{} trailing bytes after the last field",
                self.buf.len() - self.pos
            ))
        }
    }
}

const KIND_NORMAL: u8 = 0;
const KIND_CONF_CHANGE: u8 = 1;

/// Entry record: `term u64, kind u8, data..`; the index is the key.
pub(crate) fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut payload = Vec::with_capacity(entry.data.len() + 9);
    payload.extend_from_slice(&entry.term.get().to_le_bytes());
    payload.push(match entry.kind {
        EntryKind::Normal => KIND_NORMAL,
        EntryKind::ConfChange => KIND_CONF_CHANGE,
    });
    payload.extend_from_slice(&entry.data);
    seal(entry.index.get(), &payload)
}

/// Decodes the entry record stored under `index`.
pub(crate) fn decode_entry(index: u64, record: &[u8]) -> Result<Entry, String> {
    let mut r = Reader::new(unseal(index, record)?);
    let term = Term(r.u64("term")?);
    let kind = match r.u8("kind")? {
        KIND_NORMAL => EntryKind::Normal,
        KIND_CONF_CHANGE => EntryKind::ConfChange,
        other => return Err(format!("unknown entry kind {other}")),
    };
    let data = r.rest().to_vec();
    Ok(Entry {
        term,
        index: LogIndex(index),
        kind,
        data,
    })
}

/// Hard-state record: `term u64, vote u64 (0 = none), commit u64`.
pub(crate) fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut payload = Vec::with_capacity(24);
    payload.extend_from_slice(&hs.term.get().to_le_bytes());
    payload.extend_from_slice(&hs.vote.map_or(0, NodeId::get).to_le_bytes());
    payload.extend_from_slice(&hs.commit.get().to_le_bytes());
    seal(HARD_STATE_KEY, &payload)
}

pub(crate) fn decode_hard_state(record: &[u8]) -> Result<HardState, String> {
    let mut r = Reader::new(unseal(HARD_STATE_KEY, record)?);
    let term = Term(r.u64("term")?);
    let vote = match r.u64("vote")? {
        0 => None,
        id => Some(NodeId(id)),
    };
    let commit = LogIndex(r.u64("commit")?);
    r.finish()?;
    Ok(HardState { term, vote, commit })
}

/// Where a snapshot's data lives and how to check it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SnapshotRecord {
    pub meta: SnapshotMeta,
    /// File name inside `<data_dir>/snapshots/` (empty when there is no snapshot).
    pub file: String,
    pub data_len: u64,
    pub data_crc: u32,
}

/// Snapshot record: `index u64, term u64, voters (u32 count, u64 ids), learners (same),
/// file name (u16 length, UTF-8), data length u64, data crc32c u32`.
pub(crate) fn encode_snapshot(rec: &SnapshotRecord) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&rec.meta.index.get().to_le_bytes());
    payload.extend_from_slice(&rec.meta.term.get().to_le_bytes());
    for set in [&rec.meta.membership.voters, &rec.meta.membership.learners] {
        let count = u32::try_from(set.len()).expect("fewer than 2^32 members");
        payload.extend_from_slice(&count.to_le_bytes());
        for id in set {
            payload.extend_from_slice(&id.get().to_le_bytes());
        }
    }
    let name_len = u16::try_from(rec.file.len()).expect("snapshot file name under 64 KiB");
    payload.extend_from_slice(&name_len.to_le_bytes());
    payload.extend_from_slice(rec.file.as_bytes());
    payload.extend_from_slice(&rec.data_len.to_le_bytes());
    payload.extend_from_slice(&rec.data_crc.to_le_bytes());
    seal(SNAPSHOT_KEY, &payload)
}

pub(crate) fn decode_snapshot(record: &[u8]) -> Result<SnapshotRecord, String> {
    let mut r = Reader::new(unseal(SNAPSHOT_KEY, record)?);
    let index = LogIndex(r.u64("index")?);
    let term = Term(r.u64("term")?);
    let mut membership = Membership::default();
    for (set, field) in [
        (&mut membership.voters, "voter"),
        (&mut membership.learners, "learner"),
    ] {
        let count = r.u32(field)?;
        for _ in 0..count {
            set.insert(NodeId(r.u64(field)?));
        }
    }
    let name_len = usize::from(r.u16("file name length")?);
    let file = std::str::from_utf8(r.bytes(name_len, "file name")?)
        .map_err(|e| format!("snapshot file name is not UTF-8: {e}"))?
        .to_owned();
    let data_len = r.u64("data length")?;
    let data_crc = r.u32("data checksum")?;
    r.finish()?;
    Ok(SnapshotRecord {
        meta: SnapshotMeta {
            index,
            term,
            membership,
        },
        file,
        data_len,
        data_crc,
    })
}

/// Which node of which cluster a data dir belongs to, and the voters it was bootstrapped
/// with (empty until recorded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub cluster_name: String,
    pub node_id: NodeId,
    pub bootstrap_voters: Vec<NodeId>,
}

/// Identity record: `node id u64, cluster name (u16 length, UTF-8)`, then, once recorded,
/// the bootstrap voters as `count u16, id u64 …` (a record without them is the layout
/// written before they were kept here, and still reads).
pub(crate) fn encode_identity(id: &Identity) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&id.node_id.get().to_le_bytes());
    let len = u16::try_from(id.cluster_name.len()).expect("cluster name under 64 KiB");
    payload.extend_from_slice(&len.to_le_bytes());
    payload.extend_from_slice(id.cluster_name.as_bytes());
    if !id.bootstrap_voters.is_empty() {
        let count = u16::try_from(id.bootstrap_voters.len()).expect("under 65536 voters");
        payload.extend_from_slice(&count.to_le_bytes());
        for v in &id.bootstrap_voters {
            payload.extend_from_slice(&v.get().to_le_bytes());
        }
    }
    seal(IDENTITY_KEY, &payload)
}

pub(crate) fn decode_identity(record: &[u8]) -> Result<Identity, String> {
    let mut r = Reader::new(unseal(IDENTITY_KEY, record)?);
    let node_id = NodeId(r.u64("node id")?);
    let len = usize::from(r.u16("cluster name length")?);
    let cluster_name = std::str::from_utf8(r.bytes(len, "cluster name")?)
        .map_err(|e| format!("cluster name is not UTF-8: {e}"))?
        .to_owned();
    let mut bootstrap_voters = Vec::new();
    if r.pos < r.buf.len() {
        let count = r.u16("bootstrap voter count")?;
        for _ in 0..count {
            bootstrap_voters.push(NodeId(r.u64("bootstrap voter")?));
        }
    }
    r.finish()?;
    Ok(Identity {
        cluster_name,
        node_id,
        bootstrap_voters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_published_check_value() {
        // The standard check value of CRC-32C over the ASCII digits "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn entry_round_trips_and_rejects_wrong_key() {
        let e = Entry {
            term: Term(7),
            index: LogIndex(42),
            kind: EntryKind::ConfChange,
            data: vec![1, 2, 3],
        };
        let rec = encode_entry(&e);
        assert_eq!(decode_entry(42, &rec).unwrap(), e);
        let err = decode_entry(43, &rec).unwrap_err();
        assert!(err.contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let e = Entry {
            term: Term(3),
            index: LogIndex(9),
            kind: EntryKind::Normal,
            data: b"hello".to_vec(),
        };
        let rec = encode_entry(&e);
        for byte in 0..rec.len() {
            for bit in 0..8 {
                let mut bad = rec.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode_entry(9, &bad).is_err(),
                    "flip of byte {byte} bit {bit} undetected"
                );
            }
        }
    }

    #[test]
    fn unknown_version_is_named() {
        let mut rec = encode_hard_state(&HardState::default());
        rec[0] = 9;
        let err = decode_hard_state(&rec).unwrap_err();
        assert!(err.contains("unknown format version 9"), "{err}");
    }

    #[test]
    fn snapshot_and_identity_round_trip() {
        let rec = SnapshotRecord {
            meta: SnapshotMeta {
                index: LogIndex(10),
                term: Term(2),
                membership: Membership {
                    voters: [NodeId(1), NodeId(2)].into(),
                    learners: [NodeId(5)].into(),
                },
            },
            file: "snap-10-2-1.bin".into(),
            data_len: 99,
            data_crc: 0xDEAD_BEEF,
        };
        assert_eq!(decode_snapshot(&encode_snapshot(&rec)).unwrap(), rec);
        let mut id = Identity {
            cluster_name: "prod".into(),
            node_id: NodeId(3),
            bootstrap_voters: Vec::new(),
        };
        assert_eq!(decode_identity(&encode_identity(&id)).unwrap(), id);
        id.bootstrap_voters = vec![NodeId(1), NodeId(2), NodeId(3)];
        assert_eq!(decode_identity(&encode_identity(&id)).unwrap(), id);
        let hs = HardState {
            term: Term(4),
            vote: Some(NodeId(2)),
            commit: LogIndex(8),
        };
        assert_eq!(decode_hard_state(&encode_hard_state(&hs)).unwrap(), hs);
    }
}
