//! [`ProposeError`]: why the core refused a proposal, ReadIndex, transfer or conf change.

use super::types::{ConfChangeError, NodeId};

/// Why a proposal (or ReadIndex, transfer, conf change) was refused. Nothing was appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is the one it follows, if known.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// Best guess of the current leader.
        leader: Option<NodeId>,
    },
    /// A leadership transfer is in progress; retry after it ends.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// A membership change is already pending (one at a time, thesis §4.1).
    #[error("a membership change is already pending")]
    ConfChangePending,
    /// The membership change is invalid.
    #[error(transparent)]
    ConfChange(#[from] ConfChangeError),
    /// The learner is not caught up enough to promote.
    #[error("learner {0} is not caught up")]
    LearnerBehind(NodeId),
    /// Too many uncommitted bytes; back off.
    #[error("too many uncommitted proposals")]
    Backpressure,
}
