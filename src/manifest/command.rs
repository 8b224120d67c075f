//! Building, encoding and decoding manifest commands and their results.
//!
//! Commands are the prost messages of `mlcp.v1.internal` (`proto/mlcp/v1/internal/
//! manifest.proto`), re-exported here. A proposer fills in `now_ms` (its wall clock), `term`
//! (its Raft term), every new id, and optionally a client session; `apply` uses nothing else.

use prost::Message;

pub use crate::proto::internal::{
    AckStarted, AssignTasks, Assignment, AttemptRef, CancelTask, ClientSession, Command,
    CommandResult, ExpireTasks, NodeLost, RegisterNode, ReportResult, RequeueReason, RequeueTasks,
    SetNodeStatus, SkippedAssignment, SubmitTask, command::Kind,
};
use crate::proto::{Node, Task};

use super::error::ManifestError;

/// The successful outcome of one command.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommandOutcome {
    /// Tasks created or changed, after the change (for AssignTasks: the assigned ones; for a
    /// deduplicated submission: the existing task).
    pub tasks: Vec<Task>,
    /// Node created or changed, after the change.
    pub node: Option<Node>,
    /// True if the command repeated an earlier one and changed nothing (idempotency key,
    /// identical report or registration, or a session replay).
    pub duplicate: bool,
    /// Items of a batch (AssignTasks, RequeueTasks, ExpireTasks) that were not applied, with
    /// why. `node_id` is empty for batches that are not about a node.
    pub skipped: Vec<Skipped>,
}

/// One item of a batch command that was not applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    /// The task of the item.
    pub task_id: String,
    /// The node of the item (empty when not applicable).
    pub node_id: String,
    /// Why it was skipped.
    pub error: ManifestError,
}

impl CommandOutcome {
    /// The first task of the outcome (the one a single-task command is about).
    pub fn task(&self) -> Option<&Task> {
        self.tasks.first()
    }
}

/// Encodes a command result for the proposer.
pub fn encode_result(result: &Result<CommandOutcome, ManifestError>) -> Vec<u8> {
    to_proto_result(result).encode_to_vec()
}

/// Decodes what `Manifest::apply` returned. A response that does not decode becomes
/// `ManifestError::Malformed`.
pub fn decode_result(bytes: &[u8]) -> Result<CommandOutcome, ManifestError> {
    match CommandResult::decode(bytes) {
        Ok(r) => from_proto_result(&r),
        Err(e) => Err(ManifestError::Malformed {
            what: "command result".into(),
            reason: e.to_string(),
        }),
    }
}

pub(crate) fn to_proto_result(result: &Result<CommandOutcome, ManifestError>) -> CommandResult {
    match result {
        Err(e) => CommandResult {
            error: Some(e.to_proto()),
            ..Default::default()
        },
        Ok(o) => CommandResult {
            error: None,
            tasks: o.tasks.clone(),
            node: o.node.clone(),
            duplicate: o.duplicate,
            skipped: o
                .skipped
                .iter()
                .map(|s| SkippedAssignment {
                    task_id: s.task_id.clone(),
                    node_id: s.node_id.clone(),
                    error: Some(s.error.to_proto()),
                })
                .collect(),
        },
    }
}

pub(crate) fn from_proto_result(r: &CommandResult) -> Result<CommandOutcome, ManifestError> {
    if let Some(e) = &r.error {
        return Err(ManifestError::from_proto(e));
    }
    Ok(CommandOutcome {
        tasks: r.tasks.clone(),
        node: r.node.clone(),
        duplicate: r.duplicate,
        skipped: r
            .skipped
            .iter()
            .map(|s| Skipped {
                task_id: s.task_id.clone(),
                node_id: s.node_id.clone(),
                error: s.error.as_ref().map(ManifestError::from_proto).unwrap_or(
                    ManifestError::Malformed {
                        what: "skipped item".into(),
                        reason: "missing error".into(),
                    },
                ),
            })
            .collect(),
    })
}

/// Decodes a command carried in a Raft entry.
pub fn decode_command(bytes: &[u8]) -> Result<Command, ManifestError> {
    Command::decode(bytes).map_err(|e| ManifestError::Malformed {
        what: "command".into(),
        reason: e.to_string(),
    })
}

/// A command with no session, at `now_ms` (unix ms) in `term`.
pub fn command(now_ms: i64, term: u64, kind: Kind) -> Command {
    Command {
        session: None,
        now_ms,
        term,
        kind: Some(kind),
    }
}

/// A command under client session `(client_id, sequence)` (docs/failures.md C10: a retried command
/// applies once).
pub fn command_with_session(
    client_id: impl Into<String>,
    sequence: u64,
    now_ms: i64,
    term: u64,
    kind: Kind,
) -> Command {
    Command {
        session: Some(ClientSession {
            client_id: client_id.into(),
            sequence,
        }),
        now_ms,
        term,
        kind: Some(kind),
    }
}
