//! Typed errors of the manifest, and their lossless round trip through the encoded
//! `CommandError` the proposer receives from `apply`.

use crate::proto::internal::{CommandError, ErrorCode};

/// The gRPC status class an error maps to (the gateway turns it into a `tonic::Code`; the
/// manifest does not depend on tonic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// `INVALID_ARGUMENT`: the request itself is wrong.
    InvalidArgument,
    /// `NOT_FOUND`: the task or node does not exist.
    NotFound,
    /// `FAILED_PRECONDITION`: the request is well-formed but the state forbids it (fencing).
    FailedPrecondition,
    /// `ALREADY_EXISTS`: a different task already has this id.
    AlreadyExists,
    /// `INTERNAL`: an undecodable command or snapshot (a bug or corruption).
    Internal,
}

/// Why a manifest command or query was refused. Nothing was written when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// A field of the request is invalid (docs/architecture.md#bad-input); `field` names it.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// Proto field name, e.g. `task_type`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// No task has this id.
    #[error("task {task_id} not found")]
    TaskNotFound {
        /// The id asked for.
        task_id: String,
    },
    /// No node has this id.
    #[error("node {node_id:?} not found")]
    NodeNotFound {
        /// The id asked for.
        node_id: String,
    },
    /// The call is about an attempt that is no longer the task's live attempt (docs/lifecycle.md#attempts-and-fencing,
    /// docs/failures.md S1): superseded by a newer attempt, or ended by the controller (node lost,
    /// timeout, cancel). The agent must abort it.
    #[error(
        "task {task_id} attempt {attempt} is stale (current attempt {current_attempt}, status {status})"
    )]
    StaleAttempt {
        /// The task.
        task_id: String,
        /// Attempt named by the caller.
        attempt: u32,
        /// The task's current attempt.
        current_attempt: u32,
        /// The task's current status name.
        status: String,
    },
    /// The attempt belongs to another node (fencing).
    #[error(
        "task {task_id} attempt {attempt} is assigned to node {assigned_node_id:?}, not {node_id:?}"
    )]
    WrongNode {
        /// The task.
        task_id: String,
        /// Attempt named by the caller.
        attempt: u32,
        /// Node that made the call.
        node_id: String,
        /// Node the attempt belongs to.
        assigned_node_id: String,
    },
    /// A report for an attempt that already has a different reported outcome (docs/lifecycle.md#exactly-once-outcomes).
    #[error("task {task_id} attempt {attempt} already reported a different outcome")]
    ConflictingOutcome {
        /// The task.
        task_id: String,
        /// The attempt.
        attempt: u32,
    },
    /// The task's status does not allow the action (e.g. cancelling a COMPLETED task,
    /// assigning a RUNNING one).
    #[error("task {task_id} is {status}; cannot {action}")]
    InvalidTransition {
        /// The task.
        task_id: String,
        /// Current status name.
        status: String,
        /// What was attempted, e.g. `cancel`.
        action: String,
    },
    /// A different task already has this id.
    #[error("task {task_id} already exists with different content")]
    AlreadyExists {
        /// The id.
        task_id: String,
    },
    /// A node status change proposed in an older term than the node's last status change
    /// (a deposed leader's decision, docs/failures.md S3).
    #[error("node {node_id:?} status change from term {term} is older than term {current_term}")]
    StaleTerm {
        /// The node.
        node_id: String,
        /// Term of the command.
        term: u64,
        /// Term of the node's last status change.
        current_term: u64,
    },
    /// A session sequence older than the retained window (its reply was forgotten).
    #[error("client {client_id:?} sequence {sequence} is older than the session window")]
    SessionExpired {
        /// The client.
        client_id: String,
        /// The sequence asked for.
        sequence: u64,
    },
    /// The node lacks free capacity for the task's resource request.
    #[error("node {node_id:?} lacks free {resource} for task {task_id}")]
    NoCapacity {
        /// The task.
        task_id: String,
        /// The node.
        node_id: String,
        /// `slots`, `cpu`, `memory` or `gpus`.
        resource: String,
    },
    /// The node may not receive placements (not HEALTHY, draining, or constraints unmet).
    #[error("node {node_id:?} cannot take task {task_id}: {reason}")]
    NodeNotSchedulable {
        /// The task.
        task_id: String,
        /// The node.
        node_id: String,
        /// Why.
        reason: String,
    },
    /// An undecodable command, result or snapshot.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What could not be decoded.
        what: String,
        /// Decoder message.
        reason: String,
    },
}

impl ManifestError {
    /// The gRPC status class of this error.
    pub fn kind(&self) -> ErrorKind {
        use ManifestError::*;
        match self {
            InvalidArgument { .. } => ErrorKind::InvalidArgument,
            TaskNotFound { .. } | NodeNotFound { .. } => ErrorKind::NotFound,
            StaleAttempt { .. }
            | WrongNode { .. }
            | ConflictingOutcome { .. }
            | InvalidTransition { .. }
            | StaleTerm { .. }
            | SessionExpired { .. }
            | NoCapacity { .. }
            | NodeNotSchedulable { .. } => ErrorKind::FailedPrecondition,
            AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Malformed { .. } => ErrorKind::Internal,
        }
    }

    /// True if the agent that made the call must abort the attempt (fencing).
    pub fn requires_abort(&self) -> bool {
        matches!(
            self,
            ManifestError::StaleAttempt { .. } | ManifestError::WrongNode { .. }
        )
    }

    /// Encodes the error for the proposer (lossless: [`ManifestError::from_proto`] inverts it).
    pub fn to_proto(&self) -> CommandError {
        use ManifestError::*;
        let mut e = CommandError {
            message: self.to_string(),
            ..Default::default()
        };
        let code = match self {
            InvalidArgument { field, message } => {
                e.field = field.clone();
                e.detail = message.clone();
                ErrorCode::InvalidArgument
            }
            TaskNotFound { task_id } => {
                e.task_id = task_id.clone();
                ErrorCode::NotFound
            }
            NodeNotFound { node_id } => {
                e.node_id = node_id.clone();
                e.field = "node_id".into();
                ErrorCode::NotFound
            }
            StaleAttempt {
                task_id,
                attempt,
                current_attempt,
                status,
            } => {
                e.task_id = task_id.clone();
                e.attempt = *attempt;
                e.current_attempt = *current_attempt;
                e.detail = status.clone();
                ErrorCode::StaleAttempt
            }
            WrongNode {
                task_id,
                attempt,
                node_id,
                assigned_node_id,
            } => {
                e.task_id = task_id.clone();
                e.attempt = *attempt;
                e.node_id = node_id.clone();
                e.detail = assigned_node_id.clone();
                ErrorCode::WrongNode
            }
            ConflictingOutcome { task_id, attempt } => {
                e.task_id = task_id.clone();
                e.attempt = *attempt;
                ErrorCode::ConflictingOutcome
            }
            InvalidTransition {
                task_id,
                status,
                action,
            } => {
                e.task_id = task_id.clone();
                e.detail = status.clone();
                e.field = action.clone();
                ErrorCode::InvalidTransition
            }
            AlreadyExists { task_id } => {
                e.task_id = task_id.clone();
                ErrorCode::AlreadyExists
            }
            StaleTerm {
                node_id,
                term,
                current_term,
            } => {
                e.node_id = node_id.clone();
                e.number = *term;
                e.detail = current_term.to_string();
                ErrorCode::StaleTerm
            }
            SessionExpired {
                client_id,
                sequence,
            } => {
                e.detail = client_id.clone();
                e.number = *sequence;
                ErrorCode::StaleSession
            }
            NoCapacity {
                task_id,
                node_id,
                resource,
            } => {
                e.task_id = task_id.clone();
                e.node_id = node_id.clone();
                e.detail = resource.clone();
                ErrorCode::NoCapacity
            }
            NodeNotSchedulable {
                task_id,
                node_id,
                reason,
            } => {
                e.task_id = task_id.clone();
                e.node_id = node_id.clone();
                e.detail = reason.clone();
                ErrorCode::NodeNotSchedulable
            }
            Malformed { what, reason } => {
                e.field = what.clone();
                e.detail = reason.clone();
                ErrorCode::Malformed
            }
        };
        e.code = code as i32;
        e
    }

    /// Decodes an error produced by [`ManifestError::to_proto`].
    pub fn from_proto(e: &CommandError) -> ManifestError {
        use ManifestError::*;
        let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified);
        match code {
            ErrorCode::InvalidArgument => InvalidArgument {
                field: e.field.clone(),
                message: e.detail.clone(),
            },
            ErrorCode::NotFound if e.field == "node_id" => NodeNotFound {
                node_id: e.node_id.clone(),
            },
            ErrorCode::NotFound => TaskNotFound {
                task_id: e.task_id.clone(),
            },
            ErrorCode::StaleAttempt => StaleAttempt {
                task_id: e.task_id.clone(),
                attempt: e.attempt,
                current_attempt: e.current_attempt,
                status: e.detail.clone(),
            },
            ErrorCode::WrongNode => WrongNode {
                task_id: e.task_id.clone(),
                attempt: e.attempt,
                node_id: e.node_id.clone(),
                assigned_node_id: e.detail.clone(),
            },
            ErrorCode::ConflictingOutcome => ConflictingOutcome {
                task_id: e.task_id.clone(),
                attempt: e.attempt,
            },
            ErrorCode::InvalidTransition => InvalidTransition {
                task_id: e.task_id.clone(),
                status: e.detail.clone(),
                action: e.field.clone(),
            },
            ErrorCode::AlreadyExists => AlreadyExists {
                task_id: e.task_id.clone(),
            },
            ErrorCode::StaleTerm => StaleTerm {
                node_id: e.node_id.clone(),
                term: e.number,
                current_term: e.detail.parse().unwrap_or(0),
            },
            ErrorCode::StaleSession => SessionExpired {
                client_id: e.detail.clone(),
                sequence: e.number,
            },
            ErrorCode::NoCapacity => NoCapacity {
                task_id: e.task_id.clone(),
                node_id: e.node_id.clone(),
                resource: e.detail.clone(),
            },
            ErrorCode::NodeNotSchedulable => NodeNotSchedulable {
                task_id: e.task_id.clone(),
                node_id: e.node_id.clone(),
                reason: e.detail.clone(),
            },
            ErrorCode::Malformed | ErrorCode::Unspecified => Malformed {
                what: e.field.clone(),
                reason: e.detail.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips_through_proto() {
        let all = vec![
            ManifestError::InvalidArgument {
                field: "task_type".into(),
                message: "empty".into(),
            },
            ManifestError::TaskNotFound {
                task_id: "t".into(),
            },
            ManifestError::NodeNotFound {
                node_id: "n".into(),
            },
            ManifestError::StaleAttempt {
                task_id: "t".into(),
                attempt: 1,
                current_attempt: 2,
                status: "TASK_STATUS_RUNNING".into(),
            },
            ManifestError::WrongNode {
                task_id: "t".into(),
                attempt: 1,
                node_id: "a".into(),
                assigned_node_id: "b".into(),
            },
            ManifestError::ConflictingOutcome {
                task_id: "t".into(),
                attempt: 3,
            },
            ManifestError::InvalidTransition {
                task_id: "t".into(),
                status: "TASK_STATUS_COMPLETED".into(),
                action: "cancel".into(),
            },
            ManifestError::AlreadyExists {
                task_id: "t".into(),
            },
            ManifestError::StaleTerm {
                node_id: "n".into(),
                term: 3,
                current_term: 4,
            },
            ManifestError::SessionExpired {
                client_id: "c".into(),
                sequence: 9,
            },
            ManifestError::NoCapacity {
                task_id: "t".into(),
                node_id: "n".into(),
                resource: "slots".into(),
            },
            ManifestError::NodeNotSchedulable {
                task_id: "t".into(),
                node_id: "n".into(),
                reason: "draining".into(),
            },
            ManifestError::Malformed {
                what: "command".into(),
                reason: "bad varint".into(),
            },
        ];
        for err in all {
            assert_eq!(ManifestError::from_proto(&err.to_proto()), err);
        }
    }

    #[test]
    fn fencing_errors_are_failed_precondition_and_require_abort() {
        let stale = ManifestError::StaleAttempt {
            task_id: "t".into(),
            attempt: 1,
            current_attempt: 2,
            status: "x".into(),
        };
        assert_eq!(stale.kind(), ErrorKind::FailedPrecondition);
        assert!(stale.requires_abort());
        let missing = ManifestError::TaskNotFound {
            task_id: "t".into(),
        };
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert!(!missing.requires_abort());
    }
}
