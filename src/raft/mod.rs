//! The sans-IO Raft consensus core.
//!
//! (tutorial to come)

mod codec;
mod core;
mod log;
mod mem_log;
mod node;
mod progress;
mod storage;
mod types;

#[cfg(test)]
mod tests;

pub use codec::DecodeError;
pub use mem_log::MemLog;
pub use node::{Config, PeerStatus, ProposeError, RawNode, Ready, Status};
pub use storage::{InitialState, Storage, StorageError};
pub use types::{
    ConfChange, ConfChangeError, Entry, EntryKind, HardState, LogIndex, Membership, Message,
    MessageBody, NodeId, ReadState, Role, Snapshot, SnapshotMeta, SoftState, Term,
};
