//! [`Config`]: the tunables of one member.

use super::types::NodeId;

/// Tunables of one member. Times are in ticks; the shell decides how long a tick is.
#[derive(Clone, Debug)]
pub struct Config {
    /// This member's id (never 0).
    pub id: NodeId,
    /// Voters of a brand-new cluster, used only when storage holds no snapshot.
    pub initial_voters: Vec<NodeId>,
    /// Election timeout is drawn uniformly from `[min, max)` ticks each time it is reset.
    pub election_timeout_ticks_min: u64,
    /// Upper bound (exclusive) of the election timeout.
    pub election_timeout_ticks_max: u64,
    /// Leader sends a heartbeat every this many ticks.
    pub heartbeat_interval_ticks: u64,
    /// Largest total entry bytes in one AppendEntries.
    pub append_bytes_max: u64,
    /// Most AppendEntries in flight to one follower before waiting for acknowledgements.
    pub inflight_msgs_max: usize,
    /// Most entry bytes in flight to one follower.
    pub inflight_bytes_max: u64,
    /// Size of one InstallSnapshot chunk.
    pub snapshot_chunk_bytes: u64,
    /// A learner may be promoted once it is at most this many entries behind the leader.
    pub learner_catch_up_entries_max: u64,
    /// Most uncommitted proposal bytes the leader accepts before refusing new ones.
    pub uncommitted_bytes_max: u64,
    /// PreVote (thesis §9.6). On by default.
    pub pre_vote: bool,
    /// CheckQuorum (thesis §6.2): a leader that has not heard from a quorum within an
    /// election timeout steps down. On by default.
    pub check_quorum: bool,
    /// Seed for the election-timeout randomness (the core's only randomness).
    pub seed: u64,
}

impl Config {
    /// Defaults for `id` in a cluster whose initial voters are `voters`.
    pub fn new(id: NodeId, voters: impl IntoIterator<Item = NodeId>) -> Config {
        Config {
            id,
            initial_voters: voters.into_iter().collect(),
            election_timeout_ticks_min: 10,
            election_timeout_ticks_max: 20,
            heartbeat_interval_ticks: 2,
            append_bytes_max: 1 << 20,
            inflight_msgs_max: 64,
            inflight_bytes_max: 8 << 20,
            snapshot_chunk_bytes: 1 << 20,
            learner_catch_up_entries_max: 100,
            uncommitted_bytes_max: 64 << 20,
            pre_vote: true,
            check_quorum: true,
            seed: id.0,
        }
    }
}
