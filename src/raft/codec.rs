//! Wire encoding of [`Message`] and [`ConfChange`] as protobuf, with hand-written
//! `#[derive(prost::Message)]` structs (no build-time code generation in the core).
//!
//! The encoding is stable: field tags are never reused, and decoding checks every field that
//! must be set, so a truncated or foreign message gives a [`DecodeError`] naming what was
//! wrong instead of a default value.

use std::collections::BTreeSet;

use prost::Message as _;

use super::types::{
    ConfChange, Entry, EntryKind, LogIndex, Membership, Message, MessageBody, NodeId, SnapshotMeta,
    Term,
};

/// Why bytes could not be decoded into a [`Message`] or [`ConfChange`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a valid protobuf encoding of the expected message.
    #[error("malformed protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A field that must be set was missing or zero.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// An enum-like field had a value this version does not know.
    #[error("unknown value {value} in field `{field}`")]
    UnknownValue {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u32,
    },
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbConfChange {
    /// 1 = AddLearner, 2 = PromoteLearner, 3 = RemoveNode.
    #[prost(uint32, tag = "1")]
    kind: u32,
    #[prost(uint64, tag = "2")]
    node: u64,
}

impl ConfChange {
    /// Encodes the change as the data of a `EntryKind::ConfChange` entry.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, node) = match *self {
            ConfChange::AddLearner(id) => (1, id),
            ConfChange::PromoteLearner(id) => (2, id),
            ConfChange::RemoveNode(id) => (3, id),
        };
        PbConfChange { kind, node: node.0 }.encode_to_vec()
    }

    /// Decodes what [`ConfChange::encode`] produced.
    ///
    /// Errors: malformed bytes, a zero node id, or an unknown change kind.
    pub fn decode(bytes: &[u8]) -> Result<ConfChange, DecodeError> {
        let pb = PbConfChange::decode(bytes)?;
        if pb.node == 0 {
            return Err(DecodeError::MissingField("conf_change.node"));
        }
        let id = NodeId(pb.node);
        match pb.kind {
            1 => Ok(ConfChange::AddLearner(id)),
            2 => Ok(ConfChange::PromoteLearner(id)),
            3 => Ok(ConfChange::RemoveNode(id)),
            value => Err(DecodeError::UnknownValue {
                field: "conf_change.kind",
                value,
            }),
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbEntry {
    #[prost(uint64, tag = "1")]
    term: u64,
    #[prost(uint64, tag = "2")]
    index: u64,
    /// 0 = Normal, 1 = ConfChange.
    #[prost(uint32, tag = "3")]
    kind: u32,
    #[prost(bytes = "vec", tag = "4")]
    data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbSnapshotMeta {
    #[prost(uint64, tag = "1")]
    index: u64,
    #[prost(uint64, tag = "2")]
    term: u64,
    #[prost(uint64, repeated, tag = "3")]
    voters: Vec<u64>,
    #[prost(uint64, repeated, tag = "4")]
    learners: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbVoteRequest {
    #[prost(uint64, tag = "1")]
    last_log_index: u64,
    #[prost(uint64, tag = "2")]
    last_log_term: u64,
    #[prost(bool, tag = "3")]
    transfer: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbVoteResponse {
    #[prost(bool, tag = "1")]
    reject: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbAppendEntries {
    #[prost(uint64, tag = "1")]
    prev_log_index: u64,
    #[prost(uint64, tag = "2")]
    prev_log_term: u64,
    #[prost(message, repeated, tag = "3")]
    entries: Vec<PbEntry>,
    #[prost(uint64, tag = "4")]
    leader_commit: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbAppendEntriesResponse {
    #[prost(bool, tag = "1")]
    reject: bool,
    #[prost(uint64, tag = "2")]
    index: u64,
    #[prost(uint64, tag = "3")]
    reject_hint_index: u64,
    #[prost(uint64, tag = "4")]
    reject_hint_term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbHeartbeat {
    #[prost(uint64, tag = "1")]
    commit: u64,
    #[prost(bytes = "vec", tag = "2")]
    context: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbContext {
    #[prost(bytes = "vec", tag = "1")]
    context: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbInstallSnapshot {
    #[prost(message, optional, tag = "1")]
    meta: Option<PbSnapshotMeta>,
    #[prost(uint64, tag = "2")]
    offset: u64,
    #[prost(bytes = "vec", tag = "3")]
    data: Vec<u8>,
    #[prost(bool, tag = "4")]
    done: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbInstallSnapshotResponse {
    #[prost(uint64, tag = "1")]
    index: u64,
    #[prost(uint64, tag = "2")]
    next_offset: u64,
    #[prost(bool, tag = "3")]
    reject: bool,
    #[prost(bool, tag = "4")]
    done: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbEmpty {}

#[derive(Clone, PartialEq, prost::Message)]
struct PbReadIndexResponse {
    #[prost(bytes = "vec", tag = "1")]
    context: Vec<u8>,
    #[prost(uint64, tag = "2")]
    index: u64,
    #[prost(bool, tag = "3")]
    reject: bool,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum PbBody {
    #[prost(message, tag = "10")]
    PreVote(PbVoteRequest),
    #[prost(message, tag = "11")]
    PreVoteResponse(PbVoteResponse),
    #[prost(message, tag = "12")]
    RequestVote(PbVoteRequest),
    #[prost(message, tag = "13")]
    RequestVoteResponse(PbVoteResponse),
    #[prost(message, tag = "14")]
    AppendEntries(PbAppendEntries),
    #[prost(message, tag = "15")]
    AppendEntriesResponse(PbAppendEntriesResponse),
    #[prost(message, tag = "16")]
    Heartbeat(PbHeartbeat),
    #[prost(message, tag = "17")]
    HeartbeatResponse(PbContext),
    #[prost(message, tag = "18")]
    InstallSnapshot(PbInstallSnapshot),
    #[prost(message, tag = "19")]
    InstallSnapshotResponse(PbInstallSnapshotResponse),
    #[prost(message, tag = "20")]
    TimeoutNow(PbEmpty),
    #[prost(message, tag = "21")]
    ReadIndex(PbContext),
    #[prost(message, tag = "22")]
    ReadIndexResponse(PbReadIndexResponse),
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbMessage {
    #[prost(uint64, tag = "1")]
    from: u64,
    #[prost(uint64, tag = "2")]
    to: u64,
    #[prost(uint64, tag = "3")]
    term: u64,
    #[prost(
        oneof = "PbBody",
        tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22"
    )]
    body: Option<PbBody>,
}

fn entry_to_pb(e: Entry) -> PbEntry {
    let kind = match e.kind {
        EntryKind::Normal => 0,
        EntryKind::ConfChange => 1,
    };
    PbEntry {
        term: e.term.0,
        index: e.index.0,
        kind,
        data: e.data,
    }
}

fn entry_from_pb(e: PbEntry) -> Result<Entry, DecodeError> {
    let kind = match e.kind {
        0 => EntryKind::Normal,
        1 => EntryKind::ConfChange,
        value => {
            return Err(DecodeError::UnknownValue {
                field: "entry.kind",
                value,
            });
        }
    };
    if e.index == 0 {
        return Err(DecodeError::MissingField("entry.index"));
    }
    Ok(Entry {
        term: Term(e.term),
        index: LogIndex(e.index),
        kind,
        data: e.data,
    })
}

fn meta_to_pb(m: SnapshotMeta) -> PbSnapshotMeta {
    PbSnapshotMeta {
        index: m.index.0,
        term: m.term.0,
        voters: m.membership.voters.iter().map(|v| v.0).collect(),
        learners: m.membership.learners.iter().map(|v| v.0).collect(),
    }
}

fn meta_from_pb(m: PbSnapshotMeta) -> SnapshotMeta {
    SnapshotMeta {
        index: LogIndex(m.index),
        term: Term(m.term),
        membership: Membership {
            voters: m.voters.into_iter().map(NodeId).collect::<BTreeSet<_>>(),
            learners: m.learners.into_iter().map(NodeId).collect::<BTreeSet<_>>(),
        },
    }
}

impl SnapshotMeta {
    /// Encodes the metadata as protobuf (for storage implementations that keep it as bytes).
    pub fn encode_to_vec(&self) -> Vec<u8> {
        meta_to_pb(self.clone()).encode_to_vec()
    }

    /// Decodes what [`SnapshotMeta::encode_to_vec`] produced.
    ///
    /// Errors: malformed bytes.
    pub fn decode(bytes: &[u8]) -> Result<SnapshotMeta, DecodeError> {
        Ok(meta_from_pb(PbSnapshotMeta::decode(bytes)?))
    }
}

impl Entry {
    /// Encodes the entry as protobuf (for storage implementations and tests).
    pub fn encode_to_vec(&self) -> Vec<u8> {
        entry_to_pb(self.clone()).encode_to_vec()
    }

    /// Decodes what [`Entry::encode_to_vec`] produced.
    ///
    /// Errors: malformed bytes, index 0, unknown kind.
    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        entry_from_pb(PbEntry::decode(bytes)?)
    }
}

fn body_to_pb(body: MessageBody) -> PbBody {
    use MessageBody as B;
    match body {
        B::PreVote {
            last_log_index,
            last_log_term,
        } => PbBody::PreVote(PbVoteRequest {
            last_log_index: last_log_index.0,
            last_log_term: last_log_term.0,
            transfer: false,
        }),
        B::PreVoteResponse { reject } => PbBody::PreVoteResponse(PbVoteResponse { reject }),
        B::RequestVote {
            last_log_index,
            last_log_term,
            transfer,
        } => PbBody::RequestVote(PbVoteRequest {
            last_log_index: last_log_index.0,
            last_log_term: last_log_term.0,
            transfer,
        }),
        B::RequestVoteResponse { reject } => PbBody::RequestVoteResponse(PbVoteResponse { reject }),
        B::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => PbBody::AppendEntries(PbAppendEntries {
            prev_log_index: prev_log_index.0,
            prev_log_term: prev_log_term.0,
            entries: entries.into_iter().map(entry_to_pb).collect(),
            leader_commit: leader_commit.0,
        }),
        B::AppendEntriesResponse {
            reject,
            index,
            reject_hint_index,
            reject_hint_term,
        } => PbBody::AppendEntriesResponse(PbAppendEntriesResponse {
            reject,
            index: index.0,
            reject_hint_index: reject_hint_index.0,
            reject_hint_term: reject_hint_term.0,
        }),
        B::Heartbeat { commit, context } => PbBody::Heartbeat(PbHeartbeat {
            commit: commit.0,
            context,
        }),
        B::HeartbeatResponse { context } => PbBody::HeartbeatResponse(PbContext { context }),
        B::InstallSnapshot {
            meta,
            offset,
            data,
            done,
        } => PbBody::InstallSnapshot(PbInstallSnapshot {
            meta: Some(meta_to_pb(meta)),
            offset,
            data,
            done,
        }),
        B::InstallSnapshotResponse {
            index,
            next_offset,
            reject,
            done,
        } => PbBody::InstallSnapshotResponse(PbInstallSnapshotResponse {
            index: index.0,
            next_offset,
            reject,
            done,
        }),
        B::TimeoutNow => PbBody::TimeoutNow(PbEmpty {}),
        B::ReadIndex { context } => PbBody::ReadIndex(PbContext { context }),
        B::ReadIndexResponse {
            context,
            index,
            reject,
        } => PbBody::ReadIndexResponse(PbReadIndexResponse {
            context,
            index: index.0,
            reject,
        }),
    }
}

fn body_from_pb(body: PbBody) -> Result<MessageBody, DecodeError> {
    use MessageBody as B;
    Ok(match body {
        PbBody::PreVote(v) => B::PreVote {
            last_log_index: LogIndex(v.last_log_index),
            last_log_term: Term(v.last_log_term),
        },
        PbBody::PreVoteResponse(v) => B::PreVoteResponse { reject: v.reject },
        PbBody::RequestVote(v) => B::RequestVote {
            last_log_index: LogIndex(v.last_log_index),
            last_log_term: Term(v.last_log_term),
            transfer: v.transfer,
        },
        PbBody::RequestVoteResponse(v) => B::RequestVoteResponse { reject: v.reject },
        PbBody::AppendEntries(a) => B::AppendEntries {
            prev_log_index: LogIndex(a.prev_log_index),
            prev_log_term: Term(a.prev_log_term),
            entries: a
                .entries
                .into_iter()
                .map(entry_from_pb)
                .collect::<Result<_, _>>()?,
            leader_commit: LogIndex(a.leader_commit),
        },
        PbBody::AppendEntriesResponse(a) => B::AppendEntriesResponse {
            reject: a.reject,
            index: LogIndex(a.index),
            reject_hint_index: LogIndex(a.reject_hint_index),
            reject_hint_term: Term(a.reject_hint_term),
        },
        PbBody::Heartbeat(h) => B::Heartbeat {
            commit: LogIndex(h.commit),
            context: h.context,
        },
        PbBody::HeartbeatResponse(c) => B::HeartbeatResponse { context: c.context },
        PbBody::InstallSnapshot(s) => B::InstallSnapshot {
            meta: meta_from_pb(
                s.meta
                    .ok_or(DecodeError::MissingField("install_snapshot.meta"))?,
            ),
            offset: s.offset,
            data: s.data,
            done: s.done,
        },
        PbBody::InstallSnapshotResponse(s) => B::InstallSnapshotResponse {
            index: LogIndex(s.index),
            next_offset: s.next_offset,
            reject: s.reject,
            done: s.done,
        },
        PbBody::TimeoutNow(_) => B::TimeoutNow,
        PbBody::ReadIndex(c) => B::ReadIndex { context: c.context },
        PbBody::ReadIndexResponse(r) => B::ReadIndexResponse {
            context: r.context,
            index: LogIndex(r.index),
            reject: r.reject,
        },
    })
}

impl Message {
    /// Encodes the message as protobuf bytes for a transport.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        PbMessage {
            from: self.from.0,
            to: self.to.0,
            term: self.term.0,
            body: Some(body_to_pb(self.body.clone())),
        }
        .encode_to_vec()
    }

    /// Decodes what [`Message::encode_to_vec`] produced.
    ///
    /// Errors: malformed protobuf, a zero `from`/`to`, a missing body, or an entry with an
    /// unknown kind.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let pb = PbMessage::decode(bytes)?;
        if pb.from == 0 {
            return Err(DecodeError::MissingField("message.from"));
        }
        if pb.to == 0 {
            return Err(DecodeError::MissingField("message.to"));
        }
        let body = body_from_pb(pb.body.ok_or(DecodeError::MissingField("message.body"))?)?;
        Ok(Message {
            from: NodeId(pb.from),
            to: NodeId(pb.to),
            term: Term(pb.term),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_body() -> Vec<MessageBody> {
        let entry = |i: u64, kind| Entry {
            term: Term(3),
            index: LogIndex(i),
            kind,
            data: vec![i as u8; 3],
        };
        let meta = SnapshotMeta {
            index: LogIndex(9),
            term: Term(2),
            membership: Membership {
                voters: [NodeId(1), NodeId(2)].into(),
                learners: [NodeId(7)].into(),
            },
        };
        vec![
            MessageBody::PreVote {
                last_log_index: LogIndex(4),
                last_log_term: Term(2),
            },
            MessageBody::PreVoteResponse { reject: true },
            MessageBody::RequestVote {
                last_log_index: LogIndex(4),
                last_log_term: Term(2),
                transfer: true,
            },
            MessageBody::RequestVoteResponse { reject: false },
            MessageBody::AppendEntries {
                prev_log_index: LogIndex(4),
                prev_log_term: Term(2),
                entries: vec![entry(5, EntryKind::Normal), entry(6, EntryKind::ConfChange)],
                leader_commit: LogIndex(5),
            },
            MessageBody::AppendEntriesResponse {
                reject: true,
                index: LogIndex(8),
                reject_hint_index: LogIndex(3),
                reject_hint_term: Term(1),
            },
            MessageBody::Heartbeat {
                commit: LogIndex(3),
                context: vec![1, 2],
            },
            MessageBody::HeartbeatResponse {
                context: vec![1, 2],
            },
            MessageBody::InstallSnapshot {
                meta,
                offset: 10,
                data: vec![9; 10],
                done: true,
            },
            MessageBody::InstallSnapshotResponse {
                index: LogIndex(9),
                next_offset: 20,
                reject: false,
                done: true,
            },
            MessageBody::TimeoutNow,
            MessageBody::ReadIndex {
                context: b"ctx".to_vec(),
            },
            MessageBody::ReadIndexResponse {
                context: b"ctx".to_vec(),
                index: LogIndex(12),
                reject: false,
            },
        ]
    }

    /// Every message kind survives encode → decode unchanged (the gRPC transport ships these
    /// bytes between peers).
    #[test]
    fn every_message_round_trips() {
        for body in every_body() {
            let m = Message {
                from: NodeId(1),
                to: NodeId(2),
                term: Term(7),
                body,
            };
            let bytes = m.encode_to_vec();
            assert_eq!(Message::decode(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn conf_change_round_trips_and_rejects_garbage() {
        for cc in [
            ConfChange::AddLearner(NodeId(4)),
            ConfChange::PromoteLearner(NodeId(4)),
            ConfChange::RemoveNode(NodeId(2)),
        ] {
            assert_eq!(ConfChange::decode(&cc.encode()).unwrap(), cc);
        }
        assert_eq!(
            ConfChange::decode(&[]),
            Err(DecodeError::MissingField("conf_change.node"))
        );
        let bad = PbConfChange { kind: 9, node: 1 }.encode_to_vec();
        assert_eq!(
            ConfChange::decode(&bad),
            Err(DecodeError::UnknownValue {
                field: "conf_change.kind",
                value: 9
            })
        );
    }

    #[test]
    fn decode_names_what_is_missing() {
        let no_body = PbMessage {
            from: 1,
            to: 2,
            term: 1,
            body: None,
        }
        .encode_to_vec();
        assert_eq!(
            Message::decode(&no_body),
            Err(DecodeError::MissingField("message.body"))
        );
        let no_from = PbMessage {
            from: 0,
            to: 2,
            term: 1,
            body: Some(PbBody::TimeoutNow(PbEmpty {})),
        };
        assert_eq!(
            Message::decode(&no_from.encode_to_vec()),
            Err(DecodeError::MissingField("message.from"))
        );
        assert!(matches!(
            Message::decode(&[0xff, 0xff, 0xff]),
            Err(DecodeError::Protobuf(_))
        ));
    }

    #[test]
    fn entry_and_meta_round_trip() {
        let e = Entry {
            term: Term(2),
            index: LogIndex(5),
            kind: EntryKind::ConfChange,
            data: vec![1],
        };
        assert_eq!(Entry::decode(&e.encode_to_vec()).unwrap(), e);
        let m = SnapshotMeta {
            index: LogIndex(3),
            term: Term(1),
            membership: Membership::with_voters([NodeId(1)]),
        };
        assert_eq!(SnapshotMeta::decode(&m.encode_to_vec()).unwrap(), m);
    }
}
