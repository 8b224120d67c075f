//! What every gateway service holds: the actors it calls and the leader view, plus the one
//! place that maps actor errors to gRPC statuses.

#![warn(missing_docs)]

use actix::{Addr, MailboxError, Recipient};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::actors::heartbeat_monitor::HeartbeatMonitorActor;
use crate::actors::manifest::ManifestActor;
use crate::actors::proposer::{ProposeError, Proposer};
use crate::actors::raft::RaftActor;
use crate::actors::{ProposeFailure, ReadBarrier};
use crate::gateway::forward::{Router, unavailable_with_hint};
use crate::manifest::{ErrorKind, ManifestError};
use crate::raft::LogIndex;

/// Shared by the gateway services. Cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    /// Where calls are served and the leader view.
    pub router: Router,
    /// This controller's manifest.
    pub manifest: Addr<ManifestActor>,
    /// Proposes manifest commands.
    pub proposer: Proposer,
    /// Linearizable read barrier (ReadIndex).
    pub read_barrier: Recipient<ReadBarrier>,
    /// The leader's liveness tracker.
    pub monitor: Addr<HeartbeatMonitorActor>,
    /// Status, transfer, membership and snapshots of the replication shell.
    pub raft: Addr<RaftActor>,
    /// Applied index of this controller.
    pub applied: watch::Receiver<LogIndex>,
    /// Cancelled when the controller shuts down (ends long polls and watches).
    pub shutdown: CancellationToken,
    /// Name of the cluster.
    pub cluster_name: String,
}

impl Ctx {
    /// The term of the current leader view (commands carry their proposer's term).
    pub fn term(&self) -> crate::raft::Term {
        self.router.view().term
    }

    /// Wait until this controller has applied everything committed when the call arrived
    /// (ReadIndex, Raft thesis §6.4). Reads that decide what an agent runs go through this.
    pub async fn read_barrier(&self) -> Result<LogIndex, Status> {
        match self.read_barrier.send(ReadBarrier).await {
            Ok(Ok(i)) => Ok(i),
            Ok(Err(f)) => Err(self.raft_status(&f)),
            Err(e) => Err(self.mailbox_status(e)),
        }
    }

    /// A replication failure as a gRPC status (UNAVAILABLE with a leader hint).
    pub fn raft_status(&self, f: &ProposeFailure) -> Status {
        match f {
            ProposeFailure::NotLeader { leader, leader_addr } => {
                let (hint_id, hint_addr) = self.router.leader_hint();
                let id = leader.map(|l| l.get()).unwrap_or(hint_id);
                let addr = leader_addr.clone().unwrap_or(hint_addr);
                unavailable_with_hint("this controller is not the leader", id, &addr)
            }
            ProposeFailure::Unknown => self.router.unavailable(
                "leadership changed before the outcome was known; retry the call (it is idempotent)",
            ),
            ProposeFailure::Refused(why) => {
                self.router.unavailable(&format!("proposal refused: {why}; retry shortly"))
            }
            ProposeFailure::Rejected(why) => Status::failed_precondition(why.clone()),
            ProposeFailure::Shutdown => self.router.unavailable("controller is shutting down"),
        }
    }

    /// An actor mailbox failure as a gRPC status.
    pub fn mailbox_status(&self, e: MailboxError) -> Status {
        match e {
            MailboxError::Closed => self.router.unavailable("controller is shutting down"),
            MailboxError::Timeout => Status::deadline_exceeded("controller is overloaded"),
        }
    }

    /// A proposal failure as a gRPC status.
    pub fn propose_status(&self, e: ProposeError) -> Status {
        match e {
            ProposeError::Raft(f) => self.raft_status(&f),
            ProposeError::Mailbox(m) => self.router.unavailable(&format!("raft actor: {m}")),
            ProposeError::Rejected(m) => manifest_status(&m),
        }
    }
}

/// A manifest refusal as a gRPC status (codes from `ManifestError::kind`; the message names
/// the field or entity).
pub fn manifest_status(e: &ManifestError) -> Status {
    let msg = e.to_string();
    match e.kind() {
        ErrorKind::InvalidArgument => Status::invalid_argument(msg),
        ErrorKind::NotFound => Status::not_found(msg),
        ErrorKind::FailedPrecondition => Status::failed_precondition(msg),
        ErrorKind::AlreadyExists => Status::already_exists(msg),
        ErrorKind::Internal => Status::internal(msg),
    }
}
