//! The actix shell around the pure cores. One actor per concern, one file each.
//!
//! This file holds the typed messages that cross between actors owned by different files
//! (the contract between the replication shell — raft actor, log writer, peer transport —
//! and the control shell — manifest, scheduler, heartbeat monitor).

use actix::Message;

use crate::raft::{Entry, LogIndex, NodeId, Snapshot, Term};

/// Raft actor → state-machine actor: apply these committed entries, in order. The list may
/// contain no-op entries (empty `data`) and `EntryKind::ConfChange` entries, which the state
/// machine records as applied without acting on them.
#[derive(Message, Debug)]
#[rtype(result = "Vec<ApplyResult>")]
pub struct ApplyCommitted {
    /// Committed entries in log order.
    pub entries: Vec<Entry>,
}

/// The state machine's answer to one applied command, handed to its proposer as the value
/// it is: it never leaves the process, so it is never encoded. The manifest actor answers a
/// `Result<CommandOutcome, ManifestError>` ([`proposer::Proposer`] takes it back).
pub type Response = Box<dyn std::any::Any + Send>;

/// The state machine's answer for one applied entry.
#[derive(Debug)]
pub struct ApplyResult {
    /// Index of the applied entry.
    pub index: LogIndex,
    /// The answer for whoever proposed the entry; `None` for no-ops and membership changes.
    pub response: Option<Response>,
}

/// Raft actor → state-machine actor: serialize the state as of the last applied index.
#[derive(Message, Debug)]
#[rtype(result = "Result<(LogIndex, Vec<u8>), String>")]
pub struct TakeSnapshot;

/// Raft actor → state-machine actor: replace the state with this snapshot (received from the
/// leader or loaded at start).
#[derive(Message, Debug)]
#[rtype(result = "Result<(), String>")]
pub struct RestoreSnapshot {
    /// The snapshot to restore.
    pub snapshot: Snapshot,
}

/// Raft actor → subscribers (scheduler, heartbeat monitor, gateway): role or leader changed.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct LeadershipChanged {
    /// True if this controller is now the leader.
    pub is_leader: bool,
    /// The leader this controller knows of.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: Term,
}

/// Anyone → scheduler: there may be work to place. Idempotent.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct WakeScheduler;

/// The leader's monotonic clock: milliseconds since the controller started. One value is
/// shared by the scheduler, the heartbeat monitor and the manifest actor, so every timer of
/// the leader state is read on the same clock (docs/failures.md S8). Never a wall clock.
#[derive(Debug, Clone, Copy)]
pub struct MonoClock {
    origin: std::time::Instant,
}

impl MonoClock {
    /// A clock that reads 0 now.
    pub fn start() -> MonoClock {
        MonoClock {
            origin: std::time::Instant::now(),
        }
    }

    /// Milliseconds since [`MonoClock::start`].
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Why a proposal or read barrier did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeFailure {
    /// This controller is not the leader. `leader_addr` is the leader's gRPC address if known.
    #[error("not the leader (leader: {leader_addr:?})")]
    NotLeader {
        /// Raft id of the leader, if known.
        leader: Option<NodeId>,
        /// gRPC address of the leader, if known.
        leader_addr: Option<String>,
    },
    /// Leadership was lost before the entry committed; it may or may not commit later.
    /// Callers retry with the same idempotency key / session sequence number.
    #[error("leadership lost before the outcome was known")]
    Unknown,
    /// The proposal was refused for now (back-pressure, conf change pending, ...): retrying
    /// later may succeed.
    #[error("proposal refused: {0}")]
    Refused(String),
    /// The request can never succeed in the cluster's current state (e.g. promoting a node
    /// that is not a learner, adding an existing member): retrying will not help.
    #[error("{0}")]
    Rejected(String),
    /// The controller is shutting down.
    #[error("controller shutting down")]
    Shutdown,
}

/// Gateway/control shell → raft actor: replicate `command` and answer with the state
/// machine's response once it is applied on this controller.
#[derive(Message, Debug)]
#[rtype(result = "Result<Option<Response>, ProposeFailure>")]
pub struct Propose {
    /// Encoded state-machine command.
    pub command: Vec<u8>,
}

/// Gateway → raft actor: a linearizable read barrier (ReadIndex, thesis §6.4). Resolves once
/// this controller has applied everything committed when the barrier was requested.
#[derive(Message, Debug)]
#[rtype(result = "Result<LogIndex, ProposeFailure>")]
pub struct ReadBarrier;

// Replication shell (raft actor, log writer, peer transport, their byte encodings).
pub mod heartbeat_monitor;
pub mod log_writer;
pub mod manifest;
pub mod proposer;
pub mod raft;
pub mod scheduler;
