//! The worker agent (`mlcp agent`): registers through its first heartbeat, heartbeats with
//! real CPU/memory usage, long-polls for tasks, runs them with built-in executors and reports.

pub mod executor;

use std::collections::BTreeMap;
use std::time::Duration;

/// Everything `mlcp agent` needs; the CLI fills it from flags, `MLCP_*` env and the config file.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// This node's id (the seed's `node_id`), unique in the cluster.
    pub node_id: String,
    /// Every controller's gRPC address (`host:port` or `http://host:port`).
    pub servers: Vec<String>,
    /// Address other parties can reach this node at (informational, the seed's `address`).
    pub address: String,
    /// Cloud provider name, e.g. `aws`, `gcp`, `onprem`.
    pub cloud_provider: String,
    /// Region name, e.g. `us-east-1`.
    pub region: String,
    /// Concurrent task slots.
    pub slots: u32,
    /// Free-form labels matched by task constraints.
    pub labels: BTreeMap<String, String>,
    /// Long-poll deadline asked of the server (at most 30 s).
    pub poll_timeout: Duration,
}
