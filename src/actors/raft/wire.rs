//! Byte encodings owned by the replication shell (Raft messages on the wire use the core's
//! own codec, [`crate::raft::Message::encode_to_vec`]):
//!
//! - the envelope around every normal entry the raft actor proposes, which lets the log carry
//!   the members' gRPC addresses next to the state machine's commands: one tag byte, then
//!   the command or a prost `MemberAddress`;
//! - the envelope around snapshot data, which carries the same address book so it survives
//!   log compaction: a prost message with a format version, so an older controller refuses a
//!   version it does not know instead of misreading it.

use std::collections::BTreeMap;

use prost::Message as _;

use crate::raft::NodeId;

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
    /// An entry envelope whose first byte is not a known tag.
    #[error("unknown entry envelope tag {0}")]
    UnknownEntryTag(u8),
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
