//! The sans-IO Raft consensus core.
//!
//! (The raft-core helper replaces this paragraph with the driving-loop tutorial doctest and
//! the list of deviations from the paper.)

mod node;
mod storage;
mod types;

pub use node::{Config, PeerStatus, ProposeError, RawNode, Ready, Status};
pub use storage::{InitialState, Storage, StorageError};
pub use types::{
    ConfChange, ConfChangeError, Entry, EntryKind, HardState, LogIndex, Membership, Message,
    MessageBody, NodeId, ReadState, Role, Snapshot, SnapshotMeta, SoftState, Term,
};
