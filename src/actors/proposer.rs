//! Proposing manifest commands through the raft actor and reading back their outcome.
//!
//! Every proposer (gateway, scheduler, heartbeat monitor) builds commands the same way: the
//! wall clock of the proposing controller (`now_ms`, unix ms) and its Raft term go into the
//! command, so `apply` itself never reads a clock (docs/architecture.md#manifest). A command is
//! acknowledged only once it is committed and applied on this controller (docs/lifecycle.md#exactly-once-outcomes).

#![warn(missing_docs)]

use std::time::{SystemTime, UNIX_EPOCH};

use actix::{MailboxError, Recipient};
use prost::Message as _;

use crate::actors::{Propose, ProposeFailure};
use crate::manifest::ManifestError;
use crate::manifest::command::{self, CommandOutcome, Kind};
use crate::raft::Term;

/// Why a proposed command did not produce an outcome.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProposeError {
    /// Replication did not commit it (not the leader, leadership lost, shutting down, ...).
    #[error(transparent)]
    Raft(#[from] ProposeFailure),
    /// The raft actor's mailbox is closed or full.
    #[error("raft actor unavailable: {0}")]
    Mailbox(String),
    /// The command committed but the manifest refused it; nothing was written.
    #[error(transparent)]
    Rejected(#[from] ManifestError),
}

impl From<MailboxError> for ProposeError {
    fn from(e: MailboxError) -> Self {
        ProposeError::Mailbox(e.to_string())
    }
}

/// Builds, proposes and decodes manifest commands. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    raft: Recipient<Propose>,
}

impl Proposer {
    /// A proposer sending to the raft actor behind `raft`.
    pub fn new(raft: Recipient<Propose>) -> Self {
        Proposer { raft }
    }

    /// Propose `kind` in `term` (the proposer's current term) with this controller's wall
    /// clock, and wait until it is applied here.
    pub async fn propose(&self, term: Term, kind: Kind) -> Result<CommandOutcome, ProposeError> {
        let cmd = command::command(wall_clock_ms(), term.get(), kind);
        let response = self
            .raft
            .send(Propose {
                command: cmd.encode_to_vec(),
            })
            .await??;
        let outcome = response
            .and_then(|r| r.downcast::<Result<CommandOutcome, ManifestError>>().ok())
            .ok_or_else(|| ProposeError::Mailbox("the state machine gave no outcome".into()))?;
        Ok((*outcome)?)
    }
}

/// This controller's wall clock in unix ms (shown in timestamps; never used for liveness).
pub fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
