//! Byte encodings owned by the replication shell:
//!
//! - a Raft [`Message`] on the peer wire (one element of `RaftBatch.messages`);
//! - the envelope around every normal entry the raft actor proposes, which lets the log carry
//!   the members' gRPC addresses next to the state machine's commands;
//! - the envelope around snapshot data, which carries the same address book so it survives
//!   log compaction.
//!
//! All three are prost messages with a leading format version, so a newer controller can add
//! fields and an older one refuses a version it does not know instead of misreading it.

use std::collections::BTreeMap;

use prost::Message as _;

use crate::raft::{
    Entry, EntryKind, LogIndex, Membership, Message, MessageBody, NodeId, SnapshotMeta, Term,
};

/// Format version written into every encoded value of this module.
pub const WIRE_FORMAT_VERSION: u32 = 1;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The bytes are not a valid prost encoding of `what`.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// Which value was being decoded.
        what: &'static str,
        /// The prost error.
        source: prost::DecodeError,
    },
    /// The value was written by a format this controller does not know.
    #[error(
        "{what} has format version {found}, this controller reads only version {WIRE_FORMAT_VERSION}"
    )]
    UnknownVersion {
        /// Which value was being decoded.
        what: &'static str,
        /// The version found.
        found: u32,
    },
    /// A required field is absent.
    #[error("{what} is missing field `{field}`")]
    MissingField {
        /// Which value was being decoded.
        what: &'static str,
        /// The absent field.
        field: &'static str,
    },
    /// An entry kind code outside the known set.
    #[error("unknown entry kind {0}")]
    UnknownEntryKind(i32),
    /// An entry envelope whose first byte is not a known tag.
    #[error("unknown entry envelope tag {0}")]
    UnknownEntryTag(u8),
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireMessage {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(uint64, tag = "2")]
    from: u64,
    #[prost(uint64, tag = "3")]
    to: u64,
    #[prost(uint64, tag = "4")]
    term: u64,
    #[prost(
        oneof = "WireBody",
        tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22"
    )]
    body: Option<WireBody>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum WireBody {
    #[prost(message, tag = "10")]
    PreVote(WireVote),
    #[prost(message, tag = "11")]
    PreVoteResponse(WireReject),
    #[prost(message, tag = "12")]
    RequestVote(WireVote),
    #[prost(message, tag = "13")]
    RequestVoteResponse(WireReject),
    #[prost(message, tag = "14")]
    AppendEntries(WireAppend),
    #[prost(message, tag = "15")]
    AppendEntriesResponse(WireAppendResponse),
    #[prost(message, tag = "16")]
    Heartbeat(WireHeartbeat),
    #[prost(message, tag = "17")]
    HeartbeatResponse(WireContext),
    #[prost(message, tag = "18")]
    InstallSnapshot(WireInstallSnapshot),
    #[prost(message, tag = "19")]
    InstallSnapshotResponse(WireInstallSnapshotResponse),
    #[prost(message, tag = "20")]
    TimeoutNow(WireEmpty),
    #[prost(message, tag = "21")]
    ReadIndex(WireContext),
    #[prost(message, tag = "22")]
    ReadIndexResponse(WireReadIndexResponse),
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireEmpty {}

#[derive(Clone, PartialEq, prost::Message)]
struct WireVote {
    #[prost(uint64, tag = "1")]
    last_log_index: u64,
    #[prost(uint64, tag = "2")]
    last_log_term: u64,
    #[prost(bool, tag = "3")]
    transfer: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireReject {
    #[prost(bool, tag = "1")]
    reject: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireEntry {
    #[prost(uint64, tag = "1")]
    term: u64,
    #[prost(uint64, tag = "2")]
    index: u64,
    /// 0 = normal, 1 = conf change.
    #[prost(int32, tag = "3")]
    kind: i32,
    #[prost(bytes = "vec", tag = "4")]
    data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireAppend {
    #[prost(uint64, tag = "1")]
    prev_log_index: u64,
    #[prost(uint64, tag = "2")]
    prev_log_term: u64,
    #[prost(message, repeated, tag = "3")]
    entries: Vec<WireEntry>,
    #[prost(uint64, tag = "4")]
    leader_commit: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireAppendResponse {
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
struct WireHeartbeat {
    #[prost(uint64, tag = "1")]
    commit: u64,
    #[prost(bytes = "vec", tag = "2")]
    context: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireContext {
    #[prost(bytes = "vec", tag = "1")]
    context: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireSnapshotMeta {
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
struct WireInstallSnapshot {
    #[prost(message, optional, tag = "1")]
    meta: Option<WireSnapshotMeta>,
    #[prost(uint64, tag = "2")]
    offset: u64,
    #[prost(bytes = "vec", tag = "3")]
    data: Vec<u8>,
    #[prost(bool, tag = "4")]
    done: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireInstallSnapshotResponse {
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
struct WireReadIndexResponse {
    #[prost(bytes = "vec", tag = "1")]
    context: Vec<u8>,
    #[prost(uint64, tag = "2")]
    index: u64,
    #[prost(bool, tag = "3")]
    reject: bool,
}

fn entry_to_wire(e: Entry) -> WireEntry {
    let Entry {
        term,
        index,
        kind,
        data,
    } = e;
    WireEntry {
        term: term.0,
        index: index.0,
        kind: match kind {
            EntryKind::Normal => 0,
            EntryKind::ConfChange => 1,
        },
        data,
    }
}

fn entry_from_wire(e: WireEntry) -> Result<Entry, WireError> {
    let kind = match e.kind {
        0 => EntryKind::Normal,
        1 => EntryKind::ConfChange,
        other => return Err(WireError::UnknownEntryKind(other)),
    };
    Ok(Entry {
        term: Term(e.term),
        index: LogIndex(e.index),
        kind,
        data: e.data,
    })
}

fn meta_to_wire(m: SnapshotMeta) -> WireSnapshotMeta {
    let SnapshotMeta {
        index,
        term,
        membership,
    } = m;
    let Membership { voters, learners } = membership;
    WireSnapshotMeta {
        index: index.0,
        term: term.0,
        voters: voters.into_iter().map(|n| n.0).collect(),
        learners: learners.into_iter().map(|n| n.0).collect(),
    }
}

fn meta_from_wire(m: WireSnapshotMeta) -> SnapshotMeta {
    SnapshotMeta {
        index: LogIndex(m.index),
        term: Term(m.term),
        membership: Membership {
            voters: m.voters.into_iter().map(NodeId).collect(),
            learners: m.learners.into_iter().map(NodeId).collect(),
        },
    }
}

/// Encodes one Raft message for `RaftBatch.messages`.
pub fn encode_message(msg: Message) -> Vec<u8> {
    let Message {
        from,
        to,
        term,
        body,
    } = msg;
    let body = match body {
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => WireBody::PreVote(WireVote {
            last_log_index: last_log_index.0,
            last_log_term: last_log_term.0,
            transfer: false,
        }),
        MessageBody::PreVoteResponse { reject } => WireBody::PreVoteResponse(WireReject { reject }),
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            transfer,
        } => WireBody::RequestVote(WireVote {
            last_log_index: last_log_index.0,
            last_log_term: last_log_term.0,
            transfer,
        }),
        MessageBody::RequestVoteResponse { reject } => {
            WireBody::RequestVoteResponse(WireReject { reject })
        }
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => WireBody::AppendEntries(WireAppend {
            prev_log_index: prev_log_index.0,
            prev_log_term: prev_log_term.0,
            entries: entries.into_iter().map(entry_to_wire).collect(),
            leader_commit: leader_commit.0,
        }),
        MessageBody::AppendEntriesResponse {
            reject,
            index,
            reject_hint_index,
            reject_hint_term,
        } => WireBody::AppendEntriesResponse(WireAppendResponse {
            reject,
            index: index.0,
            reject_hint_index: reject_hint_index.0,
            reject_hint_term: reject_hint_term.0,
        }),
        MessageBody::Heartbeat { commit, context } => WireBody::Heartbeat(WireHeartbeat {
            commit: commit.0,
            context,
        }),
        MessageBody::HeartbeatResponse { context } => {
            WireBody::HeartbeatResponse(WireContext { context })
        }
        MessageBody::InstallSnapshot {
            meta,
            offset,
            data,
            done,
        } => WireBody::InstallSnapshot(WireInstallSnapshot {
            meta: Some(meta_to_wire(meta)),
            offset,
            data,
            done,
        }),
        MessageBody::InstallSnapshotResponse {
            index,
            next_offset,
            reject,
            done,
        } => WireBody::InstallSnapshotResponse(WireInstallSnapshotResponse {
            index: index.0,
            next_offset,
            reject,
            done,
        }),
        MessageBody::TimeoutNow => WireBody::TimeoutNow(WireEmpty {}),
        MessageBody::ReadIndex { context } => WireBody::ReadIndex(WireContext { context }),
        MessageBody::ReadIndexResponse {
            context,
            index,
            reject,
        } => WireBody::ReadIndexResponse(WireReadIndexResponse {
            context,
            index: index.0,
            reject,
        }),
    };
    WireMessage {
        version: WIRE_FORMAT_VERSION,
        from: from.0,
        to: to.0,
        term: term.0,
        body: Some(body),
    }
    .encode_to_vec()
}

/// Decodes one element of `RaftBatch.messages`.
///
/// Errors: not a prost `WireMessage`, an unknown format version, no body, an unknown entry
/// kind.
pub fn decode_message(bytes: &[u8]) -> Result<Message, WireError> {
    const WHAT: &str = "raft message";
    let wire =
        WireMessage::decode(bytes).map_err(|source| WireError::Decode { what: WHAT, source })?;
    if wire.version != WIRE_FORMAT_VERSION {
        return Err(WireError::UnknownVersion {
            what: WHAT,
            found: wire.version,
        });
    }
    let body = match wire.body.ok_or(WireError::MissingField {
        what: WHAT,
        field: "body",
    })? {
        WireBody::PreVote(v) => MessageBody::PreVote {
            last_log_index: LogIndex(v.last_log_index),
            last_log_term: Term(v.last_log_term),
        },
        WireBody::PreVoteResponse(r) => MessageBody::PreVoteResponse { reject: r.reject },
        WireBody::RequestVote(v) => MessageBody::RequestVote {
            last_log_index: LogIndex(v.last_log_index),
            last_log_term: Term(v.last_log_term),
            transfer: v.transfer,
        },
        WireBody::RequestVoteResponse(r) => MessageBody::RequestVoteResponse { reject: r.reject },
        WireBody::AppendEntries(a) => MessageBody::AppendEntries {
            prev_log_index: LogIndex(a.prev_log_index),
            prev_log_term: Term(a.prev_log_term),
            entries: a
                .entries
                .into_iter()
                .map(entry_from_wire)
                .collect::<Result<_, _>>()?,
            leader_commit: LogIndex(a.leader_commit),
        },
        WireBody::AppendEntriesResponse(a) => MessageBody::AppendEntriesResponse {
            reject: a.reject,
            index: LogIndex(a.index),
            reject_hint_index: LogIndex(a.reject_hint_index),
            reject_hint_term: Term(a.reject_hint_term),
        },
        WireBody::Heartbeat(h) => MessageBody::Heartbeat {
            commit: LogIndex(h.commit),
            context: h.context,
        },
        WireBody::HeartbeatResponse(c) => MessageBody::HeartbeatResponse { context: c.context },
        WireBody::InstallSnapshot(s) => MessageBody::InstallSnapshot {
            meta: meta_from_wire(s.meta.ok_or(WireError::MissingField {
                what: WHAT,
                field: "meta",
            })?),
            offset: s.offset,
            data: s.data,
            done: s.done,
        },
        WireBody::InstallSnapshotResponse(s) => MessageBody::InstallSnapshotResponse {
            index: LogIndex(s.index),
            next_offset: s.next_offset,
            reject: s.reject,
            done: s.done,
        },
        WireBody::TimeoutNow(_) => MessageBody::TimeoutNow,
        WireBody::ReadIndex(c) => MessageBody::ReadIndex { context: c.context },
        WireBody::ReadIndexResponse(r) => MessageBody::ReadIndexResponse {
            context: r.context,
            index: LogIndex(r.index),
            reject: r.reject,
        },
    };
    Ok(Message {
        from: NodeId(wire.from),
        to: NodeId(wire.to),
        term: Term(wire.term),
        body,
    })
}

/// First byte of a normal entry proposed through [`crate::actors::Propose`]: the rest is the
/// state machine's command.
const ENTRY_TAG_COMMAND: u8 = 1;
/// First byte of a normal entry that records a member's gRPC address (proposed with a
/// membership change); the rest is a prost `MemberAddress`.
const ENTRY_TAG_MEMBER_ADDRESS: u8 = 2;

#[derive(Clone, PartialEq, prost::Message)]
struct WireMemberAddress {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    address: String,
}

/// What a normal entry's payload means to the raft actor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload {
    /// The empty entry a new leader appends (thesis §6.4); nothing to apply.
    Noop,
    /// A state-machine command.
    Command(Vec<u8>),
    /// Member `id` is reachable at `address` (gRPC, `host:port`).
    MemberAddress {
        /// The member.
        id: NodeId,
        /// Its gRPC address.
        address: String,
    },
}

/// Wraps a state-machine command for proposing.
pub fn encode_command_entry(command: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(command.len() + 1);
    out.push(ENTRY_TAG_COMMAND);
    out.extend_from_slice(command);
    out
}

/// Encodes an address-book record for proposing.
pub fn encode_member_address_entry(id: NodeId, address: &str) -> Vec<u8> {
    let mut out = vec![ENTRY_TAG_MEMBER_ADDRESS];
    WireMemberAddress {
        id: id.0,
        address: address.to_owned(),
    }
    .encode(&mut out)
    .expect("encoding into a Vec cannot run out of space");
    out
}

/// Reads a normal entry's payload.
///
/// Errors: an unknown tag (an entry from a newer controller) or an undecodable address record.
pub fn decode_entry_payload(data: Vec<u8>) -> Result<EntryPayload, WireError> {
    let Some(&tag) = data.first() else {
        return Ok(EntryPayload::Noop);
    };
    match tag {
        ENTRY_TAG_COMMAND => {
            let mut data = data;
            data.remove(0);
            Ok(EntryPayload::Command(data))
        }
        ENTRY_TAG_MEMBER_ADDRESS => {
            let rec =
                WireMemberAddress::decode(&data[1..]).map_err(|source| WireError::Decode {
                    what: "member address entry",
                    source,
                })?;
            Ok(EntryPayload::MemberAddress {
                id: NodeId(rec.id),
                address: rec.address,
            })
        }
        other => Err(WireError::UnknownEntryTag(other)),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireSnapshotEnvelope {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(message, repeated, tag = "2")]
    members: Vec<WireMemberAddress>,
    #[prost(bytes = "vec", tag = "3")]
    state: Vec<u8>,
}

/// Wraps the state machine's snapshot bytes together with the member address book.
pub fn encode_snapshot_data(addresses: &BTreeMap<NodeId, String>, state: Vec<u8>) -> Vec<u8> {
    WireSnapshotEnvelope {
        version: WIRE_FORMAT_VERSION,
        members: addresses
            .iter()
            .map(|(id, a)| WireMemberAddress {
                id: id.0,
                address: a.clone(),
            })
            .collect(),
        state,
    }
    .encode_to_vec()
}

/// Splits snapshot data into the member address book and the state machine's bytes.
///
/// Errors: not an envelope, or an unknown format version.
pub fn decode_snapshot_data(data: &[u8]) -> Result<(BTreeMap<NodeId, String>, Vec<u8>), WireError> {
    const WHAT: &str = "snapshot envelope";
    let env = WireSnapshotEnvelope::decode(data)
        .map_err(|source| WireError::Decode { what: WHAT, source })?;
    if env.version != WIRE_FORMAT_VERSION {
        return Err(WireError::UnknownVersion {
            what: WHAT,
            found: env.version,
        });
    }
    let addresses = env
        .members
        .into_iter()
        .map(|m| (NodeId(m.id), m.address))
        .collect();
    Ok((addresses, env.state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(body: MessageBody) {
        let msg = Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(7),
            body,
        };
        let back = decode_message(&encode_message(msg.clone())).expect("decodes");
        assert_eq!(back, msg);
    }

    #[test]
    fn every_message_kind_roundtrips() {
        let entry = |i: u64, kind| Entry {
            term: Term(3),
            index: LogIndex(i),
            kind,
            data: vec![i as u8],
        };
        let meta = SnapshotMeta {
            index: LogIndex(9),
            term: Term(2),
            membership: Membership {
                voters: [NodeId(1), NodeId(2)].into(),
                learners: [NodeId(4)].into(),
            },
        };
        for body in [
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
                prev_log_index: LogIndex(3),
                prev_log_term: Term(1),
                entries: vec![entry(4, EntryKind::Normal), entry(5, EntryKind::ConfChange)],
                leader_commit: LogIndex(2),
            },
            MessageBody::AppendEntriesResponse {
                reject: true,
                index: LogIndex(3),
                reject_hint_index: LogIndex(1),
                reject_hint_term: Term(1),
            },
            MessageBody::Heartbeat {
                commit: LogIndex(5),
                context: b"r1".to_vec(),
            },
            MessageBody::HeartbeatResponse {
                context: b"r1".to_vec(),
            },
            MessageBody::InstallSnapshot {
                meta,
                offset: 10,
                data: vec![1, 2, 3],
                done: true,
            },
            MessageBody::InstallSnapshotResponse {
                index: LogIndex(9),
                next_offset: 13,
                reject: false,
                done: true,
            },
            MessageBody::TimeoutNow,
            MessageBody::ReadIndex {
                context: b"x".to_vec(),
            },
            MessageBody::ReadIndexResponse {
                context: b"x".to_vec(),
                index: LogIndex(8),
                reject: true,
            },
        ] {
            roundtrip(body);
        }
    }

    #[test]
    fn garbage_and_future_versions_are_refused() {
        assert!(matches!(
            decode_message(&[0xff, 0xff, 0xff]),
            Err(WireError::Decode { .. })
        ));
        let future = WireMessage {
            version: 99,
            from: 1,
            to: 2,
            term: 1,
            body: None,
        };
        assert!(matches!(
            decode_message(&future.encode_to_vec()),
            Err(WireError::UnknownVersion { found: 99, .. })
        ));
    }

    #[test]
    fn entry_envelopes_roundtrip() {
        assert_eq!(decode_entry_payload(vec![]).unwrap(), EntryPayload::Noop);
        assert_eq!(
            decode_entry_payload(encode_command_entry(b"cmd")).unwrap(),
            EntryPayload::Command(b"cmd".to_vec())
        );
        assert_eq!(
            decode_entry_payload(encode_member_address_entry(NodeId(4), "10.0.0.4:50051")).unwrap(),
            EntryPayload::MemberAddress {
                id: NodeId(4),
                address: "10.0.0.4:50051".into()
            }
        );
        assert!(matches!(
            decode_entry_payload(vec![9, 1]),
            Err(WireError::UnknownEntryTag(9))
        ));
    }

    #[test]
    fn snapshot_envelope_roundtrips() {
        let book: BTreeMap<_, _> =
            [(NodeId(1), "a:1".to_string()), (NodeId(2), "b:2".into())].into();
        let (back, state) =
            decode_snapshot_data(&encode_snapshot_data(&book, b"sm".to_vec())).unwrap();
        assert_eq!(back, book);
        assert_eq!(state, b"sm");
    }
}
